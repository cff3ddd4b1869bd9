"""Generalized attentional pooling (GAP): the classification head of the still-image method, on ResNet-101 maps.

It follows the generalized attentional pooling paper (Secs. III-IV) and, for the rank-1 case and the pose branch,
Girdhar & Ramanan, "Attentional pooling for action recognition" (NIPS 2017) and their reference code.
docs/models.md ("GAP head") states the equations as implemented, the second-order pooling equivalence with its
proof, and every interpretation.

For feature maps X (B, f, H, W), n = H*W locations x_i in R^f, K classes:

* top-down (class-specific):  t_k(x_i) = a_k^T drop(x_i) + alpha_k       one 1x1 conv f -> K
* bottom-up (class-agnostic): h(x_i) = c^T phi_T(x_i) + beta, phi_0(x) = x, phi_j(x) = ReLU(W_j phi_{j-1}(x) + beta_j)
* score_k = (1/n) sum_i t_k(x_i) h(x_i)

``head`` picks the variant:

* ``"mean"``: no bottom-up, score_k = (1/n) sum_i t_k(x_i) = a_k^T mean_i(x_i) + alpha_k, i.e. mean pooling then
  a linear layer (the paper's ResNet-101 baseline);
* ``"attn"``: rank-1 attentional pooling, h a single 1x1 conv f -> 1 (``depth`` T = 0);
* ``"gap"``: T >= 0 hidden 1x1 convs of widths r_1 = ``width``, r_{i+1} = floor(r_i / 2), each followed by a
  ReLU, then a final 1x1 conv r_T -> 1 with no activation. **The bottom-up stack therefore has T + 1 convs**, and
  T = 0 is exactly the rank-1 head (same modules, same parameter names).

``form`` picks how the gap head's bottom-up factor is built (the paper prints one form and implements another):

* ``"activations"`` (Sec. IV, the default): the 1x1 convs with ReLU above act on the activations phi_j(x_i);
* ``"weights"`` (Eqs. 4-5 as printed): ``W_k = a_k f(V c)^T`` with ``V = prod_t f(U_t)``, f = ReLU applied to the
  *weights*: the bottom-up map is ``h(x_i) = b^T x_i + beta`` with one fixed non-negative vector ``b = f(V c)``,
  i.e. a rank-1 head whose bottom-up weights are parametrized as a product (:class:`PrintedBottomUp`).

With ``pose=True`` a pose branch (two 3x3 conv + ReLU layers, then a 1x1 regression of 16 keypoint heatmaps) runs
on X. In the paper (Sec. III) pose is a regularizing loss only: the branch's output is supervised and feeds nothing
else (``pose_attention=False``, the default). ``pose_attention=True`` is the rank-1 reference code's variant: the
bottom-up stack reads the pose branch's features instead of X, so the keypoint supervision shapes the attention.

What this module holds: :class:`GAPHead` (built from a :class:`~actiontk.models.configs.GAPConfig` and the
maps' channels and classes), :class:`GAPOutput`, :func:`pose_loss`, the
second-order pooling form of the rank-1 head, :func:`second_order_pool` and :func:`second_order_scores`, and the
network ``train-gap`` trains around the head, :class:`GAPNet` ([backbone ->] standardization -> head), with
:func:`fit_standardization`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from actiontk.models.configs import FORMS, HEADS, PAPER_POSE_WEIGHT, GAPConfig  # noqa: F401 (re-exported)

# HEADS, FORMS, PAPER_POSE_WEIGHT (the paper's pose-loss weight, relative to the cross-entropy, Sec. III; its
# meaning comes from pose_loss's reduction) and GAPConfig live in the torch-free actiontk.models.configs.

# The last bottom-up conv's bias starts at 1 (its weights start small and random, PyTorch's default): the
# attention map starts close to 1 everywhere, so an untrained attn/gap head is close to the mean-pool baseline
# and the top-down weights get the baseline's gradient from the first step instead of sitting near the saddle at
# t = h = 0 of the product t * h.
BOTTOMUP_BIAS_INIT = 1.0


@dataclass
class GAPOutput:
    """What :meth:`GAPHead.forward` returns (a dataclass, which DistributedDataParallel traverses)."""

    logits: Tensor  # (B, K) class scores, before softmax
    topdown: Tensor  # (B, K, H, W) t_k(x_i): per-location class scores (for "mean", the class activation maps)
    bottomup: Tensor | None  # (B, H, W) h(x_i), the class-agnostic attention map; None for "mean"
    heatmaps: Tensor | None  # (B, joints, H, W) regressed keypoint heatmaps; None without pose


class GAPHead(nn.Module):
    """Mean-pool, rank-1 attentional or generalized attentional pooling head on maps ``(B, f, H, W)``.

    Modules: ``drop`` (dropout on X), ``topdown`` (1x1 conv f -> K), ``bottomup`` (``nn.Sequential`` of
    T x [1x1 conv, ReLU] then a 1x1 conv to 1 channel; None for "mean"), and with ``pose``: ``pose_features``
    (3x3 conv f -> p, ReLU, 3x3 conv p -> p, ReLU; padding 1) and ``pose_heatmaps`` (1x1 conv p -> joints, linear).
    """

    def __init__(self, config: GAPConfig, in_channels: int, num_classes: int, joints: int = 16) -> None:
        """``config`` the architecture (any :class:`GAPConfig`, e.g. train-gap's whole config); ``in_channels`` f,
        the channels of the feature maps (ResNet-101 layer4: 2048); ``num_classes`` K (MPII: 393); ``joints`` the
        heatmap channels of the pose branch (MPII's joint ids 0-15)."""
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("joints", joints)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GAPHead {name} must be an integer >= 1, got {value!r}")
        self.config, self.in_channels, self.num_classes, self.joints = config, in_channels, num_classes, joints
        # The bottom-up stack reads the pose features with pose attention, else X.
        self.bottomup_in_channels = config.pose_width if config.pose and config.pose_attention else in_channels
        f, p = in_channels, config.pose_width
        self.drop = nn.Dropout(config.dropout)
        self.topdown = nn.Conv2d(f, num_classes, kernel_size=1)
        self.bottomup: nn.Sequential | PrintedBottomUp | None = None
        if config.form == "weights":
            self.bottomup = PrintedBottomUp(self.bottomup_in_channels, config.bottomup_widths)
        elif config.head != "mean":
            layers: list[nn.Module] = []
            channels = self.bottomup_in_channels
            for width in config.bottomup_widths:
                layers += [nn.Conv2d(channels, width, kernel_size=1), nn.ReLU()]
                channels = width
            last = nn.Conv2d(channels, 1, kernel_size=1)
            nn.init.constant_(last.bias, BOTTOMUP_BIAS_INIT)
            self.bottomup = nn.Sequential(*layers, last)
        self.pose_features: nn.Sequential | None = None
        self.pose_heatmaps: nn.Conv2d | None = None
        if config.pose:
            self.pose_features = nn.Sequential(
                nn.Conv2d(f, p, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(p, p, kernel_size=3, padding=1),
                nn.ReLU(),
            )
            self.pose_heatmaps = nn.Conv2d(p, joints, kernel_size=1)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected feature maps (B, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )

    def _pose(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(pose features (B, p, H, W), heatmaps (B, joints, H, W)), or (None, None) without pose."""
        if self.pose_features is None or self.pose_heatmaps is None:
            return None, None
        feats = self.pose_features(x)
        return feats, self.pose_heatmaps(feats)

    def _bottomup_input(self, x: Tensor, pose_feats: Tensor | None) -> Tensor:
        # The bottom-up path sees X undropped, like the reference (its dropout sits on the top-down input only).
        return pose_feats if (pose_feats is not None and self.config.pose_attention) else x

    def forward(self, x: Tensor) -> GAPOutput:
        """Maps ``(B, f, H, W)`` -> :class:`GAPOutput`."""
        self._check(x)
        pose_feats, heatmaps = self._pose(x)
        topdown = self.topdown(self.drop(x))  # (B, K, H, W)
        if self.bottomup is None:
            return GAPOutput(topdown.mean(dim=(2, 3)), topdown, None, heatmaps)
        bottomup = self.bottomup(self._bottomup_input(x, pose_feats)).squeeze(1)  # (B, H, W)
        b, k, h, w = topdown.shape
        # score_k = (1/n) sum_i t_k(x_i) h(x_i): a batched matrix-vector product over the n = H*W locations.
        logits = torch.bmm(topdown.reshape(b, k, h * w), bottomup.reshape(b, h * w, 1)).squeeze(2) / (h * w)
        return GAPOutput(logits, topdown, bottomup, heatmaps)

    # -- the second-order pooling form (rank-1 heads) -------------------------------------------------------------

    def rank1_factors(self) -> tuple[Tensor, Tensor]:
        """The rank-1 head's factors with biases appended: ``(a~ (K, f+1), b~ (g+1,))``.

        ``a~_k = [a_k; alpha_k]`` (top-down weights and bias), ``b~ = [b; beta]`` (bottom-up), g the bottom-up
        input's channels (f, or the pose width with pose attention). The head's logits are then, in eval mode,
        ``score_k = Tr(M W_k^T)`` with ``M = X~^T Z~ / n`` and ``W_k = a~_k b~^T`` (see :func:`second_order_scores`).
        """
        if isinstance(self.bottomup, PrintedBottomUp):
            a = torch.cat([self.topdown.weight.flatten(1), self.topdown.bias[:, None]], dim=1)  # (K, f+1)
            return a, torch.cat([self.bottomup.vector(), self.bottomup.bias])
        if self.bottomup is None or len(self.bottomup) != 1:
            raise ValueError(
                f"the second-order form exists for rank-1 heads only (head 'attn', or 'gap' with depth 0); this head "
                f"is {self.config.head!r} with depth {self.config.bottomup_depth}"
            )
        conv = self.bottomup[0]
        a = torch.cat([self.topdown.weight.flatten(1), self.topdown.bias[:, None]], dim=1)  # (K, f+1)
        b = torch.cat([conv.weight.flatten(), conv.bias])  # (g+1,)
        return a, b

    def second_order_logits(self, x: Tensor) -> Tensor:
        """The rank-1 head's logits computed as second-order pooling, ``(B, f, H, W) -> (B, K)``.

        Equal to ``forward(x).logits`` when dropout is inactive (eval mode, or ``dropout=0``). Forms the
        ``(B, f+1, g+1)`` pooled matrix, so it is a reference and an explanation, not the fast path.
        """
        self._check(x)
        a, b = self.rank1_factors()
        pose_feats, _ = self._pose(x)
        return second_order_scores(second_order_pool(x, self._bottomup_input(x, pose_feats)), a, b)


class PrintedBottomUp(nn.Module):
    """The bottom-up factor of Eqs. 4-5 as printed: ``b = f(V c)``, ``V = f(U_1) f(U_2) ... f(U_T)``, f = ReLU.

    ``U_1`` is ``(g, r_1)``, ``U_t`` is ``(r_{t-1}, r_t)``, ``c`` is ``(r_T,)``; ``b`` is one non-negative vector of
    size g, the same for every image, so the map ``h(x_i) = b^T x_i + beta`` is a rank-1 bottom-up (a 1x1 conv
    g -> 1 whose weights are ``b``). The ReLUs act on weights, not on activations: that is what the equations say,
    and why Sec. IV's implementation (``form="activations"``) is a different, non-linear head.
    """

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        dims = [in_channels, *widths]
        # U_t start uniform in [0, 2 / r_t]: rows sum to about 1, so the product keeps a scale of 1 whatever T.
        self.factors = nn.ParameterList(
            nn.Parameter(torch.rand(dims[t], dims[t + 1]) * (2.0 / dims[t + 1])) for t in range(len(widths))
        )
        self.c = nn.Parameter(0.01 * torch.randn(widths[-1]))
        # beta starts at 1, as the rank-1 head's last bias (see BOTTOMUP_BIAS_INIT)
        self.bias = nn.Parameter(torch.full((1,), BOTTOMUP_BIAS_INIT))

    def vector(self) -> Tensor:
        """``b = f(V c)``, shape ``(g,)``."""
        v = self.c
        for u in reversed(self.factors):  # f(U_1) (f(U_2) (... (f(U_T) c)))
            v = torch.relu(u) @ v
        return torch.relu(v)

    def forward(self, z: Tensor) -> Tensor:
        """Maps ``(B, g, H, W)`` -> bottom-up map ``(B, 1, H, W)``."""
        return torch.einsum("bghw,g->bhw", z, self.vector())[:, None] + self.bias


def second_order_pool(x: Tensor, z: Tensor | None = None) -> Tensor:
    """``M = X~^T Z~ / n`` for maps ``x (B, f, H, W)`` and ``z (B, g, H, W)`` (default ``x``): ``(B, f+1, g+1)``.

    X~ is the (n, f+1) matrix of the n = H*W locations with a column of ones appended (it carries the biases),
    likewise Z~. With z = x this is the (uncentred) second-order pooling of the map, X~^T X~ / n.
    """
    z = x if z is None else z
    if x.dim() != 4 or z.dim() != 4 or x.shape[0] != z.shape[0] or x.shape[2:] != z.shape[2:]:
        raise ValueError(f"maps {tuple(x.shape)} and {tuple(z.shape)} must be (B, C, H, W) on the same batch and grid")
    b, _, h, w = x.shape
    ones = x.new_ones(b, 1, h * w)
    xt = torch.cat([x.flatten(2), ones], dim=1)  # (B, f+1, n)
    zt = torch.cat([z.flatten(2), ones.to(z.dtype)], dim=1)  # (B, g+1, n)
    return xt @ zt.transpose(1, 2) / (h * w)  # (B, f+1, g+1)


def second_order_scores(pooled: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``score_k = Tr(M W_k^T)`` with the rank-1 ``W_k = a_k b^T``, for ``M (B, F, G)``, ``a (K, F)``, ``b (G,)``.

    Computed as ``a_k^T M b`` (the same number: Tr(M b a_k^T) = a_k^T M b), without forming the K matrices W_k.
    """
    if pooled.dim() != 3 or a.dim() != 2 or b.dim() != 1 or pooled.shape[1:] != (a.shape[1], b.shape[0]):
        raise ValueError(
            f"expected M (B, F, G), a (K, F), b (G,); got {tuple(pooled.shape)}, {tuple(a.shape)}, {tuple(b.shape)}"
        )
    return (pooled @ b) @ a.T  # (B, F) @ (F, K) -> (B, K)


def pose_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Masked l2 loss of keypoint heatmaps: ``(1/B) sum_b sum_j sum_{y,x} m_{b,j,y,x} (pred - target)^2``.

    ``pred`` and ``target`` are ``(B, J, H, W)``; ``mask`` is ``(B, J)`` (per joint channel, broadcast over the
    map) or ``(B, J, H, W)`` (per cell); non-zero / True means supervised. Summed over joints and cells (the squared
    Frobenius norm of each image's heatmap error), averaged over the batch so that the weight does not depend on
    the batch size. Masked entries contribute exactly zero to the value and to the gradient, whatever they hold
    (even NaN or inf targets): they are selected away with ``torch.where``, not multiplied by zero.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, J, H, W)")
    if mask.shape == pred.shape[:2]:
        mask = mask[:, :, None, None]
    elif mask.shape != pred.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, J) = {tuple(pred.shape[:2])} or (B, J, H, W)")
    diff = torch.where(mask != 0, pred - target.to(pred.dtype), pred.new_zeros(()))
    return diff.square().sum() / pred.shape[0]


# -- the network train-gap trains: [backbone ->] standardization -> head -----------------------------------------

STATS_IMAGES = 2000  # images whose maps give the input standardization (evenly spaced over the training set)


class GAPNet(nn.Module):
    """[backbone (trainable, BatchNorm frozen) ->] per-channel standardization -> :class:`GAPHead`.

    ``body`` is None on cached maps (the input is the maps themselves); with ``--finetune`` it is a backbone that
    returns a dict of named maps, of which ``layer`` is read. The standardization is a fixed affine map with
    statistics measured on the training maps before training (:func:`fit_standardization`), stored as buffers
    (``mean``, ``std``) so that checkpoints carry them. It is our addition: the head's score is a product of two
    linear maps of X, so its scale is the square of the maps'; standardized inputs make one learning rate and
    initialization work whatever the backbone's feature scale (ImageNet ResNet-101 layer4 means are ~0.5, randomly
    initialized ones ~10). State-dict keys: ``mean``, ``std``, ``body.*`` (fine-tuning only), ``head.*``.
    """

    def __init__(self, head: GAPHead, body: nn.Module | None = None, layer: str | None = None) -> None:
        super().__init__()
        self.body, self.head, self.layer = body, head, layer
        channels = head.in_channels
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    def train(self, mode: bool = True) -> GAPNet:
        super().train(mode)
        if self.body is not None:
            for m in self.body.modules():  # batch statistics of a few images would wreck pretrained BN
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def features(self, x: Tensor) -> Tensor:
        """The maps the head reads, before standardization: ``(B, f, H, W)``."""
        return self.body(x)[self.layer] if self.body is not None else x

    def forward(self, x: Tensor) -> GAPOutput:
        return self.head((self.features(x) - self.mean) / self.std)


def fit_standardization(net: GAPNet, dataset, *, device, batch_size: int) -> None:
    """Set ``net``'s per-channel mean and std from (a spread-out sample of) ``dataset``'s inputs."""
    import numpy as np
    from torch.utils.data import DataLoader, Subset

    n = len(dataset)
    pick = np.unique(np.linspace(0, n - 1, num=min(n, STATS_IMAGES)).round().astype(int)).tolist()
    total, sq, count = 0.0, 0.0, 0
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for batch in DataLoader(Subset(dataset, pick), batch_size=batch_size, shuffle=False):
            f = net.features(batch["x"].to(device).float()).double()  # (B, C, h, w)
            total = total + f.sum(dim=(0, 2, 3))
            sq = sq + f.square().sum(dim=(0, 2, 3))
            count += f.shape[0] * f.shape[2] * f.shape[3]
    mean = total / count
    std = (sq / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))  # dead channels: 1
    net.mean.copy_(mean.float().view(1, -1, 1, 1))
    net.std.copy_(std.float().view(1, -1, 1, 1))
    net.train(was_training)
