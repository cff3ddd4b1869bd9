"""The deeply supervised 3D convnet that turns one level of per-frame feature maps into spatio-temporal cubes.

It follows the first stage of "Action Recognition with Joint Attention on Multi-Level Deep Features" (Sec. 3.2):
per feature level (VGG16 ``pool4``, ``conv5_3``) two 3x3x3 convolutions with ReLU, and a deep-supervision head
(2 FC layers + softmax) that predicts the action at *every time step* of the 3D-conv output, trained with

    loss = - sum_t y log yhat_t  +  lambda * sum_t sum_i (E_{t,i} - att_{t,i})^2  +  zeta * sum theta^2

(lambda = 1000, zeta = 1e-5), where E is the normalized channel-sum energy of the maps and att the joint LSTM's
attention for the same clip and step. The cubes passed on to the LSTM are the outputs of the second convolution,
``(T, 256, H, W)`` per video. ``zeta * sum theta^2`` is the optimizer's weight decay (see actiontk.train.engine).

What this module holds:

* :class:`LevelConv3D` (one level), :class:`MultiLevel3D` (one per level, by name), both built from a
  :class:`~actiontk.models.configs.Conv3DConfig` (the architecture) and the data's channels and classes;
  every level starts with a fixed per-channel input standardization ``(x - mean) / std`` (our addition, see
  :meth:`LevelConv3D.set_input_stats` and docs/models.md): identity until the stage sets it from the training
  videos, stored as buffers so that checkpoints carry it; ``temporal_kernel = 1`` turns the 3x3x3 convs into
  3x3 convs applied frame by frame (the paper's "2D convnet" ablation, Table 3);
* :func:`sequence_cross_entropy` — ``- sum_t y log yhat_t`` per clip (or its mean over t), batch-averaged;
* :func:`channel_energy` and :func:`attention_regularization` — the normalized channel-sum energy ``E`` of the
  maps and the ``lambda * sum_t sum_i (E_ti - att_ti)^2`` term that pulls it toward the LSTM's attention;
* :func:`deep_supervision_loss` — the printed loss (without the weight decay), summed over levels.

Tensors follow the cache's frame-major layout ``(B, T, C, H, W)``; ``nn.Conv3d`` wants ``(B, C, T, H, W)``, so
the modules transpose on the way in and out.
"""

from __future__ import annotations

from collections.abc import Mapping
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actiontk.models.configs import Conv3DConfig

# Each 3x3x3 conv sees one frame either side; two of them see two. A chunk computed with this many extra
# frames on each side is therefore exact in its interior (see LevelConv3D.cubes_chunked).
TEMPORAL_HALO = 2


class LevelConv3D(nn.Module):
    """Two 3x3x3 conv + ReLU layers on one feature level, with a deep-supervision classification head."""

    def __init__(self, config: Conv3DConfig, in_channels: int, num_classes: int) -> None:
        """``config`` the architecture (any :class:`Conv3DConfig`, e.g. train-3d's whole config), ``in_channels``
        the channels of the level's feature maps (VGG16: 512 for pool4 and conv5_3), ``num_classes`` K, the
        classes of the deep-supervision head."""
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LevelConv3D {name} must be an integer >= 1, got {value!r}")
        self.config, self.in_channels, self.num_classes = config, in_channels, num_classes
        # Fixed input standardization (not trained): identity until set_input_stats. Buffers, so they are saved
        # in and restored from checkpoints with the weights, and move with the module between devices.
        self.register_buffer("input_mean", torch.zeros(in_channels))
        self.register_buffer("input_std", torch.ones(in_channels))
        kt = config.temporal_kernel
        self.conv1 = nn.Conv3d(in_channels, config.channels, kernel_size=(kt, 3, 3), padding=(kt // 2, 1, 1))
        self.conv2 = nn.Conv3d(config.channels, config.channels, kernel_size=(kt, 3, 3), padding=(kt // 2, 1, 1))
        self.fc1 = nn.Linear(config.channels, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.hidden, num_classes)

    @torch.no_grad()
    def set_input_stats(self, mean: Tensor, std: Tensor, eps: float = 1e-6) -> None:
        """Standardize every input channel with these (C_in,) statistics from now on.

        The stage computes them on the training videos before training (per channel, over frames and
        locations). Feature maps of a CNN have channels whose scales differ by orders of magnitude (and, with
        random weights, are all tiny); standardizing puts them on one scale, so the default initialization and
        learning rate suit every backbone. It is a fixed affine map of the input, so it changes nothing the
        network could not represent, and for a backbone whose features are already well scaled it is harmless.
        """
        mean = torch.as_tensor(mean, dtype=self.input_mean.dtype).reshape(-1)
        std = torch.as_tensor(std, dtype=self.input_std.dtype).reshape(-1)
        if mean.shape != self.input_mean.shape or std.shape != self.input_std.shape:
            raise ValueError(f"expected ({self.in_channels},) statistics, got mean {tuple(mean.shape)} "
                             f"and std {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std < 0).any():
            raise ValueError("input statistics must be finite with std >= 0")
        self.input_mean.copy_(mean)
        self.input_std.copy_(std.clamp_min(eps))  # a dead channel (std 0) stays 0 instead of becoming NaN

    def _convs(self, x: Tensor) -> Tensor:
        # x: (B, C_in, T, H, W) -> (B, C, T, H, W)
        x = (x - self.input_mean[:, None, None, None]) / self.input_std[:, None, None, None]
        return F.relu(self.conv2(F.relu(self.conv1(x))))

    def cubes(self, x: Tensor) -> Tensor:
        """The 3D-conv output only (no head): ``(B, T, C_in, H, W) -> (B, T, C, H, W)``."""
        if x.dim() != 5:
            raise ValueError(f"expected (B, T, C, H, W) input, got shape {tuple(x.shape)}")
        y = self._convs(x.transpose(1, 2))  # (B, C, T, H, W)
        return y.transpose(1, 2)  # (B, T, C, H, W)

    def cubes_chunked(self, x: Tensor, chunk: int = 64) -> Tensor:
        """:meth:`cubes` computed ``chunk`` frames at a time, for sequences too long for one pass.

        Every chunk is computed on its frames plus :data:`TEMPORAL_HALO` (= 2) neighbouring frames each side, and
        only its own frames are kept. An output frame depends on input frames t-2..t+2 and, through the second
        conv's zero padding, on whether t+-1 lies inside the video; both are the same inside a halo-extended
        chunk as in the whole sequence, so the result equals :meth:`cubes` (up to float rounding, which can differ
        because convolution algorithms are picked per input size).
        """
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if x.dim() != 5:
            raise ValueError(f"expected (B, T, C, H, W) input, got shape {tuple(x.shape)}")
        steps = x.shape[1]
        if steps <= chunk:
            return self.cubes(x)
        xt = x.transpose(1, 2)  # (B, C_in, T, H, W)
        pieces = []
        for start in range(0, steps, chunk):
            stop = min(start + chunk, steps)
            lo, hi = max(0, start - TEMPORAL_HALO), min(steps, stop + TEMPORAL_HALO)
            y = self._convs(xt[:, :, lo:hi])  # (B, C, hi - lo, H, W)
            pieces.append(y[:, :, start - lo : stop - lo])
        return torch.cat(pieces, dim=2).transpose(1, 2)  # (B, T, C, H, W)

    def forward_head(self, cube: Tensor) -> Tensor:
        """Deep-supervision logits at every time step from a cube ``(B, T, C, H, W) -> (B, T, K)``.

        The paper's loss sums a cross-entropy over the steps t, so the head predicts per step: the step's maps
        are averaged over space (the paper does not say how the FC layers read a map; ours) and go through the
        two FC layers.
        """
        pooled = cube.mean(dim=(3, 4))  # (B, T, C): average over space only
        return self.fc2(self.drop(F.relu(self.fc1(pooled))))  # (B, T, K)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, C_in, H, W) -> (cube (B, T, C, H, W), logits (B, T, K))``."""
        cube = self.cubes(x)
        return cube, self.forward_head(cube)


class LevelDict(nn.ModuleDict):
    """A ModuleDict keyed by feature level names, which may hold dots (graph nodes such as ``features.3``): torch's
    module names cannot, so a dot is kept as ``/`` in the module (and state dict) name; every access by level name
    works as with a plain dict. Names without a dot (``pool4``) are unchanged."""

    def __getitem__(self, key: str) -> nn.Module:
        return super().__getitem__(key.replace(".", "/"))

    def __setitem__(self, key: str, module: nn.Module) -> None:
        super().__setitem__(key.replace(".", "/"), module)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.replace(".", "/"))

    def __iter__(self):
        return (key.replace("/", ".") for key in super().__iter__())

    def keys(self):
        return list(self)

    def items(self):
        return [(key.replace("/", "."), module) for key, module in super().items()]

    def update(self, modules) -> None:
        for key, module in dict(modules).items():
            self[key] = module


class MultiLevel3D(nn.Module):
    """One :class:`LevelConv3D` per feature level, keyed by the level's name (e.g. ``"pool4"``, ``"conv5_3"``)."""

    def __init__(self, config: Conv3DConfig, in_channels: Mapping[str, int], num_classes: int) -> None:
        """The same architecture ``config`` for every level; ``in_channels`` maps each level's name to the
        channels of its feature maps, in the order the levels are kept."""
        super().__init__()
        if not in_channels:
            raise ValueError("MultiLevel3D needs at least one level")
        self.config, self.num_classes = config, num_classes
        self.levels = LevelDict({name: LevelConv3D(config, int(c), num_classes) for name, c in in_channels.items()})

    def _check_levels(self, names: Mapping[str, object]) -> None:
        if set(names) != set(self.levels):
            raise KeyError(f"got levels {sorted(names)}, this model has {sorted(self.levels)}")

    def forward(self, xs: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``{level: (B, T, C_in, H, W)} -> ({level: cube (B, T, C, H, W)}, {level: logits (B, T, K)})``."""
        self._check_levels(xs)
        cubes, logits = {}, {}
        for name, level in self.levels.items():
            cubes[name], logits[name] = level(xs[name])
        return cubes, logits

    def loss(self, logits: Mapping[str, Tensor], target: Tensor, *, cubes: Mapping[str, Tensor] | None = None,
             att: Tensor | None = None, lam: float = 1000.0,
             over_time: str = "sum") -> tuple[Tensor, dict[str, Tensor]]:
        """:func:`deep_supervision_loss` of this model's levels (the loss ``train-3d`` trains with)."""
        self._check_levels(logits)
        return deep_supervision_loss(logits, target, cubes=cubes, att=att, lam=lam, over_time=over_time)


OVER_TIME = ("sum", "mean")


def _reduce_time(per_step: Tensor, over_time: str) -> Tensor:
    """``(B, T)`` per-step terms -> ``(B,)`` per clip: their sum over t (as printed) or their mean."""
    if over_time not in OVER_TIME:
        raise ValueError(f"over_time must be one of {OVER_TIME}, got {over_time!r}")
    return per_step.sum(dim=1) if over_time == "sum" else per_step.mean(dim=1)


def sequence_cross_entropy(logits: Tensor, target: Tensor, over_time: str = "sum") -> Tensor:
    """``- sum_t y log yhat_t`` of per-step logits ``(B, T, K)`` and clip labels ``(B,)``, averaged over the batch.

    ``over_time="mean"`` divides by T. Whatever the choice, a regularizer added to it must be reduced the same way
    (see :func:`attention_regularization`) for lambda to keep its printed meaning.
    """
    if logits.dim() != 3:
        raise ValueError(f"expected (B, T, K) logits, got shape {tuple(logits.shape)}")
    B, T, K = logits.shape
    per_step = F.cross_entropy(logits.reshape(B * T, K), target.repeat_interleave(T), reduction="none")
    return _reduce_time(per_step.view(B, T), over_time).mean()


def deep_supervision_loss(logits: Mapping[str, Tensor], target: Tensor, *, cubes: Mapping[str, Tensor] | None = None,
                          att: Tensor | None = None, lam: float = 1000.0,
                          over_time: str = "sum") -> tuple[Tensor, dict[str, Tensor]]:
    """The 3D convnet's printed loss (Sec. 3.2) without the weight-decay term, summed over the levels.

    Per level: ``- sum_t y log yhat_t + lam * sum_t sum_i (E_{t,i} - att_{t,i})^2`` with logits ``(B, T, K)``, E the
    channel energy of the level's cube ``(B, T, C, H, W)`` and ``att`` the LSTM's attention ``(B, T, H*W)``; the
    regularizer only when ``cubes`` and ``att`` are given and ``lam > 0``. Each level has its own convnet, so
    summing the levels' losses trains each exactly as on its own. Returns ``(loss, {"ce": .., "att_reg": ..})``.
    """
    if not logits:
        raise ValueError("no logits given")
    ce = sum(sequence_cross_entropy(lg, target, over_time) for lg in logits.values())
    parts: dict[str, Tensor] = {"ce": ce}
    loss = ce
    if cubes is not None and att is not None and lam > 0:
        reg = sum(attention_regularization(channel_energy(c), att, lam, over_time) for c in cubes.values())
        parts["att_reg"] = reg
        loss = loss + reg
    return loss, parts  # type: ignore[return-value]


def channel_energy(x: Tensor) -> Tensor:
    """Normalized channel-sum energy ``E_{t,i} = sum_k x_{t,i,k} / sum_j sum_k x_{t,j,k}`` of maps ``(B, T, C, H, W)``.

    Returns ``(B, T, H*W)``, locations row-major as in the attention. ``x`` must be non-negative (post-ReLU
    maps), so that E is a distribution over the H*W locations of every frame.
    """
    if x.dim() != 5:
        raise ValueError(f"expected (B, T, C, H, W) input, got shape {tuple(x.shape)}")
    energy = x.sum(dim=2).flatten(2)  # (B, T, H*W)
    total = energy.sum(dim=-1, keepdim=True)  # (B, T, 1)
    # A frame whose maps are all zero (dead ReLUs, padding frames) has no preferred location: give it the
    # uniform distribution. The division uses a safe denominator rather than masking a 0/0 afterwards, because
    # torch.where would still propagate NaN gradients from the unused branch.
    empty = total <= 0
    safe = torch.where(empty, torch.ones_like(total), total)
    uniform = torch.full_like(energy, 1.0 / energy.shape[-1])
    return torch.where(empty, uniform, energy / safe)


def attention_regularization(energy: Tensor, att: Tensor, lam: float = 1000.0, over_time: str = "sum") -> Tensor:
    """``lam * sum_t sum_i (E_{t,i} - att_{t,i})^2`` per clip, averaged over the batch.

    ``energy`` and ``att`` are ``(B, T, H*W)`` (or ``(B, H*W)`` for a single step). The squared differences are
    summed over locations, and summed over time as printed (``over_time="mean"``: averaged over time, as the
    cross-entropy it is added to must then be); over a batch the per-clip terms are averaged, like the
    cross-entropy of :func:`sequence_cross_entropy`, so ``lam`` does not depend on the batch size.
    """
    if energy.shape != att.shape:
        raise ValueError(f"energy {tuple(energy.shape)} and attention {tuple(att.shape)} differ in shape")
    per_step = (energy - att).pow(2)
    per_step = per_step.sum(dim=-1) if per_step.dim() == 3 else per_step.sum(dim=-1, keepdim=True)  # (B, T)
    return lam * _reduce_time(per_step, over_time).mean()
