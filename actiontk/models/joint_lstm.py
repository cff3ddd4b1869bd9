"""The joint attention LSTM that fuses several levels of 3D-conv cubes with soft spatial attention.

It follows the second stage of the joint-attention method for action recognition on multi-level deep features
("Action Recognition with Joint Attention on Multi-Level Deep Features", Sec. 3.3; docs/models.md gives the
equations as implemented and every interpretation). Its first
layer is a new recurrent cell: from the previous hidden state it predicts one attention map over the H*W
locations, shared by all K inputs (feature levels); it pools every input with that map through a spatial
pyramid (the whole map and its four quadrants), and it fuses the K pooled vectors through per-input tanh
sub-gates whose weighted sums form the LSTM's input, forget and output gates. The candidate memory sees the
inputs either directly (early fusion) or through a per-input sigmoid gate of the input's size (late fusion).
Layers 2..L are standard LSTM layers, and a linear classifier reads every step's top hidden state.

What this module holds:

* :class:`JointAttentionCell` (one step, and its unrolling over a sequence),
  :class:`JointAttentionLSTM` (the stack and the classifier), :func:`clip_vote` (the paper's clip rule) and
  :func:`clip_scores` (the mean softmax, ours); both modules take their architecture from a
  :class:`~actiontk.models.configs.JointLSTMConfig` and the inputs' channels and grid as arguments;
* :func:`pyramid_regions`, :func:`spatial_pyramid_pool` — the five pooling regions and the pooling itself.

Speed. The cell is written fused: one matmul of h_{t-1} gives every h-dependent pre-activation (all sub-gates of
all inputs, the candidate, the late-fusion input gates and the attention logits), one matmul per input gives
its x-dependent ones, and one batched matmul gives the three final gates. On top of that, the gradient of every
recurrent weight is computed once per sequence, as a single matmul over all steps, instead of T rank-B updates
accumulated step by step (see :class:`_GradTape`); on a CPU those updates are memory-bound, and batching them
made a full-size training step 1.2x faster (docs/performance.md). ``batched_weight_grad=False`` (an argument of the
modules) falls back to plain autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actiontk.models.configs import FUSIONS, JointLSTMConfig  # noqa: F401 (FUSIONS: re-exported)

SUBGATE_ACTIVATIONS = ("tanh", "identity")

# Quadrant order inside a pyramid-pooled vector, after the whole-map vector.
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


# --------------------------------------------------------------------------------------------------------------
# Spatial pyramid


def pyramid_regions(height: int, width: int, *, pyramid: bool = True, device: torch.device | None = None) -> Tensor:
    """Membership of the H*W locations (row-major) in each pooling region: ``(5, H*W)`` bool, or ``(1, H*W)``.

    Region 0 is the whole map, then the quadrants in :data:`QUADRANTS` order. The top rows are ``[0, ceil(H/2))``
    and the bottom rows ``[ceil(H/2), H)``; likewise left/right columns, so with an odd size the middle row or
    column belongs to the top/left quadrants. A map one pixel high or wide has empty bottom or right quadrants;
    an empty quadrant is replaced by the whole map, so its pooled vector is the whole-map vector.
    """
    full = torch.ones(height, width, dtype=torch.bool, device=device)
    if not pyramid:
        return full.reshape(1, height * width)
    top, left = math.ceil(height / 2), math.ceil(width / 2)
    regions = [full]
    for rows in (slice(0, top), slice(top, height)):
        for cols in (slice(0, left), slice(left, width)):
            mask = torch.zeros_like(full)
            mask[rows, cols] = True
            regions.append(mask if mask.any() else full)
    return torch.stack(regions).reshape(len(regions), height * width)  # (R, H*W)


def spatial_pyramid_pool(x: Tensor, att: Tensor) -> Tensor:
    """Attention pooling of ``x (B, C, H, W)`` over the whole map and its four quadrants: ``-> (B, 5*C)``.

    ``att (B, H*W)`` is a distribution over locations (row-major). The whole-map vector is ``sum_i att_i x_i``;
    each quadrant's is the same sum over the quadrant with the attention renormalized to sum to 1 inside it (see
    :func:`pyramid_regions` for the quadrants of odd and one-pixel sizes). A quadrant holding no attention mass at
    all (possible only when the attention underflowed to exact zeros) pools with uniform weights inside it. The
    output is the five C-vectors concatenated: whole map, then top-left, top-right, bottom-left, bottom-right.
    """
    b, c, h, w = x.shape
    if att.shape != (b, h * w):
        raise ValueError(f"attention {tuple(att.shape)} does not match maps {tuple(x.shape)}: expected ({b}, {h * w})")
    inside = pyramid_regions(h, w, device=x.device).to(att.dtype)  # (5, H*W)
    weights = att.unsqueeze(1) * inside  # (B, 5, H*W)
    mass = weights.sum(dim=-1, keepdim=True)  # (B, 5, 1)
    uniform = inside / inside.sum(dim=-1, keepdim=True)  # (5, H*W)
    weights = torch.where(mass > 0, weights / torch.where(mass > 0, mass, torch.ones_like(mass)), uniform)
    pooled = weights @ x.reshape(b, c, h * w).transpose(1, 2)  # (B, 5, C)
    return pooled.reshape(b, 5 * c)


# --------------------------------------------------------------------------------------------------------------
# Batched weight gradients over the steps of a recurrence


class _GradTape:
    """Inputs and output gradients of one weight at every step of one unrolled sequence.

    A weight used at T steps gets, under plain autograd, T rank-B gradient updates (each as large as the weight)
    summed one by one. Here each step only records its input in the forward pass and its output gradient in the
    backward pass, and :class:`_TapeAnchor` computes the whole gradient as one matmul over all recorded steps.
    """

    def __init__(self) -> None:
        self.inputs: list[Tensor] = []
        self.grads: dict[int, Tensor] = {}


class _TapeAnchor(torch.autograd.Function):
    """Creates a scalar that every taped step depends on, so its backward runs after all of theirs.

    Autograd runs a node only when all gradients into it are in; since each taped step returns a (zero) gradient
    for the anchor, the anchor's backward comes after the last step's, when the tape is complete.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, tape: _GradTape) -> Tensor:  # type: ignore[override]
        ctx.tape = tape
        ctx.weight_dtype = weight.dtype
        return weight.new_zeros(())

    @staticmethod
    def backward(ctx, _unused: Tensor) -> tuple[Tensor | None, None]:  # type: ignore[override]
        tape: _GradTape = ctx.tape
        steps = sorted(tape.grads)
        if not steps:
            return None, None
        inputs = torch.cat([tape.inputs[s] for s in steps], dim=-2).to(ctx.weight_dtype)  # (..., S*B, in)
        grads = torch.cat([tape.grads[s] for s in steps], dim=-2).to(ctx.weight_dtype)  # (..., S*B, out)
        tape.grads = {}  # a second backward (retain_graph=True) records afresh
        return grads.transpose(-1, -2) @ inputs, None  # (..., out, in)


class _TapedMatmul(torch.autograd.Function):
    """``x @ weight^T`` whose weight gradient is left to the tape (the input gradient is computed as usual)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, anchor: Tensor, tape: _GradTape) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight)
        ctx.tape, ctx.step = tape, len(tape.inputs)
        ctx.x_dtype, ctx.anchor_dtype = x.dtype, anchor.dtype
        tape.inputs.append(x.detach())
        return x @ weight.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor, None]:  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        ctx.tape.grads[ctx.step] = grad
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad.to(weight.dtype) @ weight).to(ctx.x_dtype)
        return grad_x, None, grad.new_zeros((), dtype=ctx.anchor_dtype), None


MatMul = Callable[[Tensor, Tensor], Tensor]


def _matmul(x: Tensor, weight: Tensor) -> Tensor:
    """``x @ weight^T`` for a (..., out, in) weight: a Linear without bias, batched when the weight is 3D."""
    return x @ weight.transpose(-1, -2)


class _TapedWeights:
    """The taped ``x @ weight^T`` for a set of weights, valid for one forward pass over one sequence."""

    def __init__(self, weights: Sequence[Tensor]) -> None:
        self._entries: dict[int, tuple[Tensor, Tensor, _GradTape]] = {}
        for w in weights:
            tape = _GradTape()
            self._entries[id(w)] = (w.detach(), _TapeAnchor.apply(w, tape), tape)

    def __call__(self, x: Tensor, weight: Tensor) -> Tensor:
        detached, anchor, tape = self._entries[id(weight)]
        return _TapedMatmul.apply(x, detached, anchor, tape)


# --------------------------------------------------------------------------------------------------------------
# The joint cell


class JointAttentionCell(nn.Module):
    """One step of the joint attention LSTM layer (layer 1), with all per-input weights fused.

    Parameters and the paper's matrices (k = 1..K, H = hidden, D_k = size of x_tk, rows of a weight are outputs):

    * ``w_x[k-1]`` (3H + E_k, D_k): rows ``[W_xik; W_xfk; W_xok; X_k]`` where ``X_k`` is ``W_xck`` (E_k = H) in early
      fusion and the late-fusion input gate's ``W'_k`` (E_k = D_k) in late fusion;
    * ``w_h`` (3KH + H [+ sum_k D_k] + H*W, H): rows ``[W_hi1; W_hf1; W_ho1; ...; W_hiK; W_hfK; W_hoK; W_hc;
      (late: U'_1; ...; U'_K;) W_att]``;
    * ``b_sub`` (K, 3, H): ``b_sub[k-1] = [b_ik, b_fk, b_ok]``; ``b_c`` (H); late fusion ``b_in`` (sum_k D_k) =
      ``[b'_1; ...; b'_K]``;
    * ``w_gate`` (3, H, KH): ``w_gate[0] = [W_ii1 | ... | W_iiK]`` (column blocks), ``w_gate[1]`` the W_ffk,
      ``w_gate[2]`` the W_ook;
    * late fusion ``w_xc`` (H, sum_k D_k) = ``[W_xc1 | ... | W_xcK]``.

    :meth:`paper_weights` returns these blocks by their paper names.
    """

    def __init__(self, config: JointLSTMConfig, in_channels: Sequence[int], grid: tuple[int, int], *,
                 subgate_activation: str = "tanh", batched_weight_grad: bool = True) -> None:
        """``config`` the architecture (any :class:`JointLSTMConfig`, e.g. train-lstm's whole config);
        ``in_channels`` C_k of each input (feature level), in the order the inputs are passed; ``grid`` (H, W) of
        the maps, shared by all inputs (W_att has one output per location).

        Two switches that are not options of the method: ``subgate_activation="identity"`` removes the sub-gates'
        tanh and exists only for a test that reduces the cell to ``torch.nn.LSTMCell`` (K = 1, W_ii = W_ff = W_oo
        = I), do not train with it; ``batched_weight_grad=False`` computes the recurrent weights' gradients with
        plain autograd (e.g. for double backward, which the batched path does not support).
        """
        super().__init__()
        self.config = config
        self.in_channels = [int(c) for c in in_channels]
        self.grid = (int(grid[0]), int(grid[1]))
        if not self.in_channels or min(self.in_channels) < 1:
            raise ValueError(f"in_channels must be a non-empty list of positive ints, got {list(in_channels)}")
        if min(self.grid) < 1:
            raise ValueError(f"grid must be two positive ints, got {tuple(grid)}")
        if subgate_activation not in SUBGATE_ACTIVATIONS:
            raise ValueError(f"subgate_activation must be one of {SUBGATE_ACTIVATIONS}, got {subgate_activation!r}")
        self.subgate_activation, self.batched_weight_grad = subgate_activation, batched_weight_grad
        # Size D_k of each pooled input vector x_tk.
        self.input_sizes = [config.regions * c for c in self.in_channels]
        hid, k_in = config.hidden, len(self.in_channels)
        sizes = self.input_sizes
        self.late = config.fusion == "late"
        height, width = self.grid
        self.locations = height * width
        # Split of x_t = cat_k(pooled maps) back into the inputs, by channels (before pooling).
        self._channel_offsets = [0, *torch.tensor(self.in_channels).cumsum(0).tolist()]
        # Split of h_{t-1} @ w_h^T into its parts.
        self._h_split = [3 * k_in * hid, hid, sum(sizes) if self.late else 0, self.locations]

        self.w_x = nn.ParameterList(
            nn.Parameter(torch.empty(3 * hid + (d if self.late else hid), d)) for d in sizes
        )
        self.w_h = nn.Parameter(torch.empty(sum(self._h_split), hid))
        self.b_sub = nn.Parameter(torch.empty(k_in, 3, hid))
        self.b_c = nn.Parameter(torch.empty(hid))
        self.w_gate = nn.Parameter(torch.empty(3, hid, k_in * hid))
        if self.late:
            self.b_in = nn.Parameter(torch.empty(sum(sizes)))
            self.w_xc = nn.Parameter(torch.empty(hid, sum(sizes)))
        # 0 inside a region, -inf outside: softmax(logits + mask) is the attention renormalized inside the region.
        inside = pyramid_regions(height, width, pyramid=config.pyramid)
        logmask = torch.zeros(inside.shape).masked_fill(~inside, -math.inf)  # (R, H*W)
        self.register_buffer("region_logmask", logmask, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(+-1/sqrt(fan_in)) per paper matrix, as ``nn.LSTM`` initializes its weights."""
        hid, k_in = self.config.hidden, len(self.in_channels)
        for w, d in zip(self.w_x, self.input_sizes, strict=True):
            nn.init.uniform_(w, -(d**-0.5), d**-0.5)
        for p in (self.w_h, self.b_sub, self.b_c, *([self.b_in] if self.late else [])):
            nn.init.uniform_(p, -(hid**-0.5), hid**-0.5)
        bound = (k_in * hid) ** -0.5  # each final gate sums K sub-gate projections
        nn.init.uniform_(self.w_gate, -bound, bound)
        if self.late:
            bound = sum(self.input_sizes) ** -0.5
            nn.init.uniform_(self.w_xc, -bound, bound)

    def recurrent_weights(self) -> list[Tensor]:
        """The weights applied with a matmul at every step (those whose gradient is batched over steps)."""
        return [*self.w_x, self.w_h, self.w_gate, *([self.w_xc] if self.late else [])]

    def paper_weights(self) -> dict[str, Tensor]:
        """Views of the fused parameters under the paper's names (k is 1-based), e.g. ``W_xi1``, ``W_ff2``, ``W_att``.

        Sub-gates: ``W_x{g}{k}``, ``W_h{g}{k}``, ``b_{g}{k}`` for g in i, f, o; final gates ``W_ii{k}``, ``W_ff{k}``,
        ``W_oo{k}``; candidate ``W_xc{k}``, ``W_hc``, ``b_c``; attention ``W_att``; late fusion ``W'_{k}``,
        ``U'_{k}``, ``b'_{k}``. Every matrix maps an input (columns) to an output (rows), like ``nn.Linear.weight``.
        """
        hid, sizes = self.config.hidden, self.input_sizes
        sub_h, cand_h, in_h, att_h = self.w_h.split(self._h_split)
        out: dict[str, Tensor] = {"W_hc": cand_h, "b_c": self.b_c, "W_att": att_h}
        sub_h_k = sub_h.split(3 * hid)  # K x (3H, H)
        for k0, w_x in enumerate(self.w_x):
            k = k0 + 1
            for g, name in enumerate("ifo"):
                rows = slice(g * hid, (g + 1) * hid)
                out[f"W_x{name}{k}"] = w_x[rows]
                out[f"W_h{name}{k}"] = sub_h_k[k0][rows]
                out[f"b_{name}{k}"] = self.b_sub[k0, g]
                out[f"W_{name}{name}{k}"] = self.w_gate[g, :, k0 * hid : k * hid]
            if self.late:
                out[f"W'_{k}"] = w_x[3 * hid :]
                out[f"U'_{k}"] = in_h.split(sizes)[k0]
                out[f"b'_{k}"] = self.b_in.split(sizes)[k0]
                out[f"W_xc{k}"] = self.w_xc.split(sizes, dim=1)[k0]
            else:
                out[f"W_xc{k}"] = w_x[3 * hid :]
        return out

    def prepare(self, xs: Sequence[Tensor]) -> Tensor:
        """Checks the K inputs ``(B, T, C_k, H, W)`` and lays them out for the steps: ``-> (T, B, H*W, sum_k C_k)``.

        One copy per sequence, so that each step's pooling is a single batched matmul over all inputs (the channels
        of input k are columns ``C_1 + ... + C_{k-1}`` onwards).
        """
        if len(xs) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} inputs (one per level), got {len(xs)}")
        first = xs[0].shape
        for k, (x, c) in enumerate(zip(xs, self.in_channels, strict=True)):
            if x.dim() != 5 or x.shape[2] != c:
                raise ValueError(f"input {k}: expected (B, T, {c}, H, W), got {tuple(x.shape)}")
            if x.shape[:2] != first[:2]:
                raise ValueError(
                    f"input {k}: batch and length {tuple(x.shape[:2])} differ from input 0's {tuple(first[:2])}"
                )
            # All levels share one attention map, so they must share the grid it lives on.
            if tuple(x.shape[3:]) != self.grid:
                raise ValueError(f"input {k}: maps are {tuple(x.shape[3:])}, the model's grid is {self.grid}")
        # The cache stores float16; the copy made here anyway also brings the maps to the weights' dtype.
        x = torch.cat([x.to(self.w_h.dtype) for x in xs], dim=2)  # (B, T, sum C, H, W)
        return x.flatten(3).permute(1, 0, 3, 2).contiguous()  # (T, B, H*W, sum C)

    def init_state(self, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Zero (h_0, c_0), each ``(B, hidden)``; h_0 = 0 makes the first attention map uniform."""
        zeros = like.new_zeros(batch, self.config.hidden)
        return zeros, zeros

    def forward(
        self, x_t: Tensor, state: tuple[Tensor, Tensor], mm: MatMul = _matmul
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step: ``x_t (B, H*W, sum_k C_k)`` (one frame of :meth:`prepare`'s output), ``state = (h, c)``.

        Returns ``(h_t, c_t, att_t)`` with ``att_t (B, H*W)`` the attention computed from h_{t-1}. ``mm`` computes
        ``x @ w^T``; :meth:`forward_sequence` passes a taped one.
        """
        hid, k_in = self.config.hidden, len(self.in_channels)
        h, c = state
        batch = h.shape[0]

        hp = mm(h, self.w_h)  # (B, 3KH + H + [sum D] + HW): everything that reads h_{t-1}
        sub_h, cand_h, in_h, att_logits = hp.split(self._h_split, dim=1)

        # Attention, and each pooling region's renormalized copy of it, in one softmax.
        att = torch.softmax(att_logits.unsqueeze(1) + self.region_logmask, dim=-1)  # (B, R, HW)
        pooled = torch.bmm(att, x_t)  # (B, R, sum C): all inputs, all regions
        offs = self._channel_offsets
        xs = [pooled[:, :, offs[k] : offs[k + 1]].reshape(batch, -1) for k in range(k_in)]  # K x (B, R*C_k)

        xp = [mm(x_k, w) for x_k, w in zip(xs, self.w_x, strict=True)]  # K x (B, 3H + E_k)
        sub = torch.stack([p[:, : 3 * hid] for p in xp], dim=1)  # (B, K, 3H)
        sub = sub + sub_h.view(batch, k_in, 3 * hid) + self.b_sub.view(k_in, 3 * hid)
        if self.subgate_activation == "tanh":
            sub = torch.tanh(sub)
        # Gate-major, so that sum_k W_iik i_tk (and the f, o sums) is one batched matmul over the K*H sub-gates.
        sub = sub.view(batch, k_in, 3, hid).permute(2, 0, 1, 3).reshape(3, batch, k_in * hid)  # (3, B, K*H)
        gate_i, gate_f, gate_o = torch.sigmoid(mm(sub, self.w_gate)).unbind(0)  # 3 x (B, H)

        if self.late:
            in_gate = torch.sigmoid(torch.cat([p[:, 3 * hid :] for p in xp], dim=1) + in_h + self.b_in)  # (B, sum D)
            cand_x = mm(torch.cat(xs, dim=1) * in_gate, self.w_xc)  # (B, H)
        else:
            cand_x = xp[0][:, 3 * hid :]
            for p in xp[1:]:
                cand_x = cand_x + p[:, 3 * hid :]  # (B, H)
        cand = torch.tanh(cand_x + cand_h + self.b_c)
        c = gate_f * c + gate_i * cand
        h = gate_o * torch.tanh(c)
        return h, c, att[:, 0]

    def forward_sequence(self, xs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """The cell unrolled from zero state over K inputs ``(B, T, C_k, H, W)``.

        Returns ``(h (B, T, hidden), att (B, T, H*W))``.
        """
        x = self.prepare(xs)  # (T, B, HW, sum C)
        steps, batch = x.shape[:2]
        if steps == 0:
            raise ValueError("empty sequence (T = 0)")
        mm: MatMul = _matmul
        if self.batched_weight_grad and torch.is_grad_enabled() and self.w_h.requires_grad:
            mm = _TapedWeights(self.recurrent_weights())
        h, c = self.init_state(batch, self.w_h)
        hs, atts = [], []
        for t in range(steps):
            h, c, att = self(x[t], (h, c), mm)
            hs.append(h)
            atts.append(att)
        return torch.stack(hs, dim=1), torch.stack(atts, dim=1)  # (B, T, H), (B, T, HW)


# --------------------------------------------------------------------------------------------------------------
# The stack


class JointAttentionLSTM(nn.Module):
    """The joint cell as layer 1, standard LSTM layers 2..L, and a linear classifier on every step's top h."""

    def __init__(self, config: JointLSTMConfig, in_channels: Sequence[int], grid: tuple[int, int], num_classes: int,
                 **switches: Any) -> None:
        """``config`` the architecture, ``in_channels`` and ``grid`` the inputs' (see :class:`JointAttentionCell`,
        which also takes the ``switches``), ``num_classes`` the classes of the per-step softmax classifier."""
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.config, self.num_classes = config, num_classes
        self.cell = JointAttentionCell(config, in_channels, grid, **switches)
        self.in_channels, self.grid = self.cell.in_channels, self.cell.grid
        self.drop = nn.Dropout(config.dropout)
        self.upper = None
        if config.layers > 1:
            upper_layers = config.layers - 1
            # nn.LSTM drops out between its own layers only, not after the last one.
            self.upper = nn.LSTM(
                config.hidden,
                config.hidden,
                num_layers=upper_layers,
                batch_first=True,
                dropout=config.dropout if upper_layers > 1 else 0.0,
            )
        self.classifier = nn.Linear(config.hidden, num_classes)

    def forward_features(self, xs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """K inputs ``(B, T, C_k, H, W)`` -> (top hidden states ``(B, T, hidden)``, attention ``(B, T, H*W)``)."""
        h, att = self.cell.forward_sequence(xs)  # (B, T, H), (B, T, HW)
        if self.upper is not None:
            h, _ = self.upper(self.drop(h))  # (B, T, H)
        return h, att

    def forward_head(self, h: Tensor) -> Tensor:
        """Per-step logits ``(B, T, num_classes)`` from the top hidden states."""
        return self.classifier(self.drop(h))

    def forward(self, xs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """K inputs ``(B, T, C_k, H, W)`` (one per level, in the config's order).

        Returns ``(logits (B, T, num_classes), attention (B, T, H*W))``.
        """
        h, att = self.forward_features(xs)
        return self.forward_head(h), att


def clip_scores(logits: Tensor, last: int = 16) -> Tensor:
    """The mean softmax of the per-step logits ``(B, T, K)`` over the last ``last`` steps: ``(B, K)``.

    This is *our* score of a clip, used for AP, top-k and the mean-score rule. The paper's clip label is the
    hard vote of :func:`clip_vote`; the two can disagree. A clip shorter than ``last`` averages all its steps.
    """
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    return torch.softmax(logits[:, -last:], dim=-1).mean(dim=1)


def clip_vote(logits: Tensor, last: int = 16) -> tuple[Tensor, Tensor]:
    """The paper's clip label (joint-attention paper, Sec. 3.5): a hard vote of the last ``last`` (L2) steps.

    ``pred(t) = argmax_i prob_t(i)`` at every step; the clip's label is the class with the most votes among
    the last L2 steps. The paper does not say how a tie is broken: the tied class with the largest softmax
    summed over those steps wins (ours), then the smallest index. Returns ``(labels (B,), votes (B, K))``.
    """
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    probs = torch.softmax(logits[:, -last:].float(), dim=-1)  # (B, L2, K)
    K = probs.shape[-1]
    votes = F.one_hot(probs.argmax(-1), K).sum(dim=1)  # (B, K) vote counts
    # Ties: among the classes with the most votes, the largest summed softmax (< L2 + 1, so it never outranks a
    # vote); argmax returns the first maximum, i.e. the smallest index, if that ties too.
    rank = torch.where(votes == votes.max(-1, keepdim=True).values, probs.sum(dim=1), torch.full_like(probs[:, 0], -1))
    return rank.argmax(-1), votes
