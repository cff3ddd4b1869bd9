"""The architecture options of the three trained networks, each declared once, with its docstring and its check.

* :class:`Conv3DConfig` — the deeply supervised 3D convnet of one feature level ("Action Recognition with Joint
  Attention on Multi-Level Deep Features", Sec. 3.2; :mod:`actiontk.models.conv3d`);
* :class:`JointLSTMConfig` — the joint attention LSTM (same paper, Sec. 3.3; :mod:`actiontk.models.joint_lstm`);
* :class:`GAPConfig` — the (generalized) attentional pooling head with its pose branch (the generalized
  attentional pooling paper, Secs. III-IV; :mod:`actiontk.models.gap`).

A config holds what the user chooses (widths, depths, variants), never what the data decides: the input
channels, the number of classes and the map grid are arguments of the model's constructor. The training stages'
configs (``Train3DConfig``, ``TrainLSTMConfig``, ``TrainGAPConfig``) extend these classes with their own options, so
a preset table stays flat and every model option has one declaration, one help text (the string after the field,
read by :mod:`actiontk.options`) and one range check (:meth:`__post_init__`, raising :class:`ConfigError`).

This module imports no torch: ``actiontk --help`` and the preset checks read it without paying for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from actiontk.errors import UserError

T = TypeVar("T")

HEADS = ("mean", "attn", "gap")
FORMS = ("activations", "weights")
FUSIONS = ("early", "late")

# The paper's pose-loss weight, relative to the cross-entropy (generalized attentional pooling paper, Sec. III).
# The training stage multiplies actiontk.models.gap.pose_loss by it; the loss's reduction gives it its meaning.
PAPER_POSE_WEIGHT = 1e-6


class ConfigError(UserError, ValueError):
    """A model option out of its range: a one-line :class:`UserError` on the command line, and a ``ValueError``
    for code that builds a model directly."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{_flag(name)} must be an integer >= 1, got {value!r}")


def _check_rate(value: float, name: str = "dropout") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{_flag(name)} must be in [0, 1), got {value!r}")


def from_mapping(cls: type[T], values: Mapping[str, Any]) -> T:
    """``cls`` from the fields of ``values`` it declares (e.g. a model config from a run's saved stage config);
    the others are ignored, a missing one takes its default."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class Conv3DConfig:
    """Architecture of one feature level's 3D convnet (the same for every level)."""

    channels: int = 256
    """Channels of both Conv3d layers (paper: 256)."""
    hidden: int = 512
    """Width of the deep-supervision head's hidden FC layer."""
    dropout: float = 0.5
    """Dropout in the deep-supervision head."""
    temporal_kernel: int = 3
    """Temporal extent of the conv kernels: 3 (the paper's 3D convnet) or 1 (the 2D-convnet ablation, Table 3)."""

    def __post_init__(self) -> None:
        _check_positive(self, "channels", "hidden")
        _check_rate(self.dropout)
        if self.temporal_kernel not in (1, 3) or isinstance(self.temporal_kernel, bool):
            raise ConfigError(f"--temporal-kernel must be 3 (3D convnet) or 1 (2D convnet), got {self.temporal_kernel}")


@dataclass
class JointLSTMConfig:
    """Architecture of the joint attention LSTM."""

    fusion: str = "early"
    """early or late fusion of the levels in the candidate memory."""
    hidden: int = 1024
    """Units per LSTM layer (paper: 1024)."""
    layers: int = 3
    """Stacked layers; the first is the joint attention cell, the others standard LSTM layers (paper: 3)."""
    dropout: float = 0.5
    """Dropout between layers and before the classifier."""
    pyramid: bool = True
    """Spatial pyramid pooling (full map + 4 quadrants) of each input with the attention."""

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"--fusion must be early or late, got {self.fusion!r}")
        _check_positive(self, "hidden", "layers")
        _check_rate(self.dropout)

    @property
    def regions(self) -> int:
        """Pooling regions per input: 5 with the pyramid, 1 without."""
        return 5 if self.pyramid else 1


@dataclass
class GAPConfig:
    """Architecture of the GAP head (and its pose branch)."""

    head: str = "gap"
    """mean (mean-pool + linear baseline), attn (rank-1 attentional pooling) or gap (T bottom-up layers)."""
    depth: int | None = None
    """T, hidden bottom-up 1x1 conv layers of the gap head (default 3; attn is T = 0)."""
    width: int = 4096
    """r1, width of the first bottom-up layer; each next one is half as wide (paper: 4096)."""
    dropout: float = 0.8
    """Drop rate on the maps before the top-down conv (the rank-1 reference: 0.8)."""
    form: str = "activations"
    """How the gap head's bottom-up factor is built: activations (Sec. IV: 1x1 convs + ReLU on the maps, the
    default) or weights (Eqs. 4-5 as printed: a rank-1 head with b = ReLU(V c), V a product of ReLU'd matrices)."""
    pose: bool = False
    """Add the pose branch: keypoint heatmap regression (l2), a regularizing loss term (paper, Sec. III)."""
    pose_attention: bool = False
    """With --pose, feed the pose branch's features into the bottom-up attention (the rank-1 reference code's
    variant; not the paper's). Off: pose is a loss term only."""
    pose_width: int = 768
    """Channels of the pose branch's two 3x3 convs."""

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"--head must be mean, attn or gap, got {self.head!r}")
        _check_positive(self, "width", "pose_width")
        _check_rate(self.dropout)
        if self.form not in FORMS:
            raise ConfigError(f"--form must be activations or weights, got {self.form!r}")
        if not self.pose:
            self.pose_attention = False  # no pose branch, nothing to feed: one run key for both spellings
        depth = self.depth
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
            raise ConfigError(f"--depth must be an integer >= 0, got {depth!r}")
        if self.head == "mean" and depth is not None:
            raise ConfigError(f"--depth must be None for head 'mean' (it has no bottom-up map), got {depth}",
                              "leave --depth out")
        if self.head == "attn" and depth not in (None, 0):
            raise ConfigError(f"--depth must be 0 for head 'attn' (rank-1), got {depth}",
                              "use --head gap for hidden bottom-up layers")
        if self.head == "attn":
            self.depth = None  # T = 0 either way: one run key for both spellings
        t = self.bottomup_depth
        if self.form == "weights" and (self.head != "gap" or not t):
            raise ConfigError(f"--form 'weights' (Eqs. 4-5 as printed) needs head 'gap' with depth >= 1, got head "
                              f"{self.head!r} depth {t}", "attn is already rank-1; drop --form or use --head gap")
        if t and self.width >> (t - 1) < 1:
            raise ConfigError(f"--width {self.width} is too small for depth {t}: halving it {t - 1} times leaves "
                              f"{self.width >> (t - 1)} channels", f"use --width >= {2 ** (t - 1)}")

    @property
    def bottomup_depth(self) -> int | None:
        """T as built: ``depth``, or its default for the head (3 for gap, 0 for attn); None for mean."""
        if self.head == "mean":
            return None
        if self.depth is not None:
            return self.depth
        return 3 if self.head == "gap" else 0

    @property
    def bottomup_widths(self) -> list[int]:
        """Output channels of the hidden bottom-up convs, r_1..r_T (empty for T = 0 and for "mean")."""
        t = self.bottomup_depth
        return [self.width // 2**i for i in range(t)] if t else []
