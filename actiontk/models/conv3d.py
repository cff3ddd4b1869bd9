"""The deeply supervised 3D convnet that turns one level of per-frame feature maps into spatio-temporal cubes.

It follows the first stage of the joint-attention method for action recognition on multi-level deep features
(DESIGN.md, "Models"): per feature level (VGG16 ``pool4``, ``conv5_3``) two 3x3x3 convolutions with ReLU, and a
deep-supervision head (spatio-temporal average -> FC -> ReLU -> FC) trained with cross-entropy, so that every
level's cube is discriminative on its own before the joint LSTM fuses the levels. The cubes passed on to the
LSTM are the outputs of the second convolution, ``(T, 256, H, W)`` per video.

What this module holds:

* :class:`Conv3DConfig`, :class:`LevelConv3D` (one level), :class:`MultiLevel3D` (one per level, by name);
  every level starts with a fixed per-channel input standardization ``(x - mean) / std`` (our addition, see
  :meth:`LevelConv3D.set_input_stats` and docs/models.md): identity until the stage sets it from the training
  videos, stored as buffers so that checkpoints carry it;
* :func:`deep_supervision_loss` — the sum over levels of the per-level cross-entropies;
* :func:`channel_energy` and :func:`attention_regularization` — the normalized channel-sum energy ``E`` of the
  maps and the paper's ``lambda * sum_t sum_i (E_ti - att_ti)^2`` term that pulls the LSTM's attention to it.

Tensors follow the cache's frame-major layout ``(B, T, C, H, W)``; ``nn.Conv3d`` wants ``(B, C, T, H, W)``, so
the modules transpose on the way in and out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Each 3x3x3 conv sees one frame either side; two of them see two. A chunk computed with this many extra
# frames on each side is therefore exact in its interior (see LevelConv3D.cubes_chunked).
TEMPORAL_HALO = 2


@dataclass
class Conv3DConfig:
    """Hyperparameters of one level's 3D convnet."""

    in_channels: int  # channels of the level's feature maps (VGG16: 512 for pool4 and conv5_3)
    num_classes: int  # K, classes of the deep-supervision head
    channels: int = 256  # output channels of both 3x3x3 convs, i.e. of the cubes handed to the LSTM
    hidden: int = 512  # width of the head's hidden FC layer
    dropout: float = 0.5  # drop rate after the head's hidden FC (0 disables); the cubes are never dropped

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "channels", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"Conv3DConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Conv3DConfig.dropout must be in [0, 1), got {self.dropout}")


class LevelConv3D(nn.Module):
    """Two 3x3x3 conv + ReLU layers on one feature level, with a deep-supervision classification head."""

    def __init__(self, config: Conv3DConfig) -> None:
        super().__init__()
        self.config = config
        # Fixed input standardization (not trained): identity until set_input_stats. Buffers, so they are saved
        # in and restored from checkpoints with the weights, and move with the module between devices.
        self.register_buffer("input_mean", torch.zeros(config.in_channels))
        self.register_buffer("input_std", torch.ones(config.in_channels))
        self.conv1 = nn.Conv3d(config.in_channels, config.channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(config.channels, config.channels, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(config.channels, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.hidden, config.num_classes)

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
            raise ValueError(f"expected ({self.config.in_channels},) statistics, got mean {tuple(mean.shape)} "
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
        """Deep-supervision logits from a cube ``(B, T, C, H, W) -> (B, K)``."""
        pooled = cube.mean(dim=(1, 3, 4))  # (B, C): average over time and space
        return self.fc2(self.drop(F.relu(self.fc1(pooled))))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, C_in, H, W) -> (cube (B, T, C, H, W), logits (B, K))``."""
        cube = self.cubes(x)
        return cube, self.forward_head(cube)


class MultiLevel3D(nn.Module):
    """One :class:`LevelConv3D` per feature level, keyed by the level's name (e.g. ``"pool4"``, ``"conv5_3"``)."""

    def __init__(self, configs: Mapping[str, Conv3DConfig]) -> None:
        super().__init__()
        if not configs:
            raise ValueError("MultiLevel3D needs at least one level")
        self.levels = nn.ModuleDict({name: LevelConv3D(cfg) for name, cfg in configs.items()})

    @classmethod
    def build(
        cls,
        in_channels: Mapping[str, int],
        *,
        num_classes: int,
        channels: int = 256,
        hidden: int = 512,
        dropout: float = 0.5,
    ) -> MultiLevel3D:
        """Same hyperparameters for every level; only the input channels differ."""
        return cls(
            {
                name: Conv3DConfig(c, num_classes, channels=channels, hidden=hidden, dropout=dropout)
                for name, c in in_channels.items()
            }
        )

    def _check_levels(self, names: Mapping[str, object]) -> None:
        if set(names) != set(self.levels):
            raise KeyError(f"got levels {sorted(names)}, this model has {sorted(self.levels)}")

    def forward(self, xs: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``{level: (B, T, C_in, H, W)} -> ({level: cube (B, T, C, H, W)}, {level: logits (B, K)})``."""
        self._check_levels(xs)
        cubes, logits = {}, {}
        for name, level in self.levels.items():
            cubes[name], logits[name] = level(xs[name])
        return cubes, logits

    def loss(self, logits: Mapping[str, Tensor], target: Tensor) -> Tensor:
        """:func:`deep_supervision_loss` of this model's levels."""
        self._check_levels(logits)
        return deep_supervision_loss(logits, target)


def deep_supervision_loss(logits: Mapping[str, Tensor], target: Tensor) -> Tensor:
    """Sum over levels of the cross-entropy (mean over the batch) of each level's logits ``(B, K)``.

    A sum rather than a mean, so adding a level does not weaken the supervision of the others.
    """
    if not logits:
        raise ValueError("no logits given")
    return sum(F.cross_entropy(lg, target) for lg in logits.values())  # type: ignore[return-value]


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


def attention_regularization(energy: Tensor, att: Tensor, lam: float = 1000.0) -> Tensor:
    """``lam * sum_t sum_i (E_{t,i} - att_{t,i})^2``, averaged over the batch.

    ``energy`` and ``att`` are ``(B, T, H*W)`` (or ``(B, H*W)`` for a single step). The squared differences are
    summed over time and locations as in the paper, which states the term for one video; over a batch the
    per-video terms are averaged (not summed) so that the weight ``lam`` does not depend on the batch size, like
    the mean-reduced cross-entropy it is added to.
    """
    if energy.shape != att.shape:
        raise ValueError(f"energy {tuple(energy.shape)} and attention {tuple(att.shape)} differ in shape")
    per_video = (energy - att).pow(2).flatten(1).sum(dim=1)  # (B,)
    return lam * per_video.mean()
