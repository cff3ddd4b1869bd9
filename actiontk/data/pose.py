"""Keypoint-heatmap targets for the GAP head's pose branch (MPII), and the crop geometry they are drawn in.

The pose branch regresses 16 MPII joint heatmaps at the resolution of the backbone's feature map (15x15 for
ResNet-101 layer4 at 450 px). A target is drawn from a person's annotated joints by following them through the
same preprocessing as the pixels: original image -> resize (shorter side to S) -> crop -> optional horizontal
flip -> feature-map cells.

Coordinate conventions (docs/models.md, "Pose targets"):

* **Continuous pixel coordinates** everywhere: pixel column i of an image covers [i, i+1), its centre is i + 0.5;
  likewise rows. Resizing by a factor s maps a point x to s*x exactly (torchvision's bilinear resize with
  ``align_corners=False`` samples in this convention); mirroring an image of width W maps x to W - x. Annotations
  given as pixel indices convert with :func:`from_pixel_indices`.
* **Map cells**: the H x W map is laid over the h x w crop as a grid of cell centres with spacing ``stride``,
  centred on the crop: centre of column j = (w - stride*(W-1))/2 + stride*j (rows alike). With the default
  ``stride = w / W`` the cells tile the crop exactly, cell j covering [j*stride, (j+1)*stride) with centre
  (j + 0.5)*stride. Passing the backbone's stride (32 for ResNet-101 layer4) spaces the centres like the
  network's receptive fields (450 px, 15 cells: centres at 1, 33, ..., 449; the receptive-field centres of
  torchvision's ResNet are at 0.5 + 32j, half a pixel away). Centring keeps the grid mirror-symmetric, so a
  flipped crop's targets are exactly the mirrored targets.
* People are ``(16, 3)`` arrays ``[x, y, visible]`` in original-image coordinates, NaN for joints that are not
  annotated; ``visible`` is ignored (MPII annotates the position of occluded joints too, and the reference code
  ignores the flag as well).

What this module holds: MPII joint names and left/right pairs, :func:`flip_permutation`, :class:`CropTransform`
with :func:`center_crop_transform` (the extract stage's resize = crop = S geometry) and
:func:`random_crop_transform` (``--finetune``), :func:`cell_centers`, :func:`cell_coordinates`,
:func:`keypoints_to_heatmaps`, :func:`flip_keypoints`, :func:`flip_heatmaps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MPII_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)  # fmt: skip
# Joint ids that trade places when the image is mirrored (a mirrored right ankle looks like a left ankle).
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))


def flip_permutation(joints: int = len(MPII_JOINTS), pairs: Sequence[tuple[int, int]] = MPII_FLIP_PAIRS) -> np.ndarray:
    """Index array ``perm`` with ``flipped[..., j] = original[..., perm[j]]``: the pairs swapped, others kept."""
    perm = np.arange(joints)
    for a, b in pairs:
        if not (0 <= a < joints and 0 <= b < joints) or a == b:
            raise ValueError(f"flip pair {(a, b)} is not two distinct joint ids below {joints}")
        perm[a], perm[b] = b, a
    if len(set(perm.tolist())) != joints:
        raise ValueError(f"flip pairs {list(pairs)} share a joint id")
    return perm


def from_pixel_indices(points: np.ndarray, base: int = 1) -> np.ndarray:
    """Pixel-index coordinates (pixel centres at integers, first pixel ``base``) -> continuous coordinates.

    Shifts x and y (the first two values of the last axis) by ``0.5 - base``; other values (``visible``) and NaNs
    are kept. MPII's annotation tool was Matlab, and its coordinates are usually read as 1-based (``base=1``:
    x - 0.5); use ``base=0`` for 0-based indices. The difference is a fraction of a pixel, far below a map cell.
    """
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., :2] += 0.5 - base
    return out


# -- the crop geometry ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropTransform:
    """Resize to ``resized``, crop ``size`` at (``top``, ``left``), optionally mirror: the preprocessing geometry.

    As an affine map of continuous coordinates (x, y) of the original image to those of the crop:
    ``u = sx * x - left`` (then ``u -> w - u`` when ``flip``), ``v = sy * y - top``, with ``(sx, sy) = scale``.
    Sizes are ``(height, width)``, like torch's.
    """

    image_size: tuple[int, int]  # (H, W) of the original image
    resized: tuple[int, int]  # (H', W') after the resize
    top: int  # crop offset in the resized image
    left: int
    size: tuple[int, int]  # (h, w) of the crop, i.e. of the network input
    flip: bool = False  # mirror the crop horizontally (after cropping)

    def __post_init__(self) -> None:
        for name in ("image_size", "resized", "size"):
            value = getattr(self, name)
            if len(value) != 2 or min(value) < 1:
                raise ValueError(f"CropTransform.{name} must be two positive ints (height, width), got {value}")
        (rh, rw), (h, w) = self.resized, self.size
        if self.top < 0 or self.left < 0 or self.top + h > rh or self.left + w > rw:
            raise ValueError(
                f"crop {h}x{w} at (top {self.top}, left {self.left}) does not fit in the resized image {rh}x{rw}"
            )

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)``: resized over original size, per axis (they differ slightly: torchvision truncates)."""
        return self.resized[1] / self.image_size[1], self.resized[0] / self.image_size[0]

    @property
    def offset(self) -> tuple[float, float]:
        """``(tx, ty)`` of the unflipped map ``(u, v) = (sx x + tx, sy y + ty)``."""
        return float(-self.left), float(-self.top)

    def flipped(self) -> CropTransform:
        """The same crop, mirrored (or un-mirrored)."""
        return CropTransform(self.image_size, self.resized, self.top, self.left, self.size, not self.flip)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Original-image points ``(..., 2)`` (x, y) -> crop points ``(..., 2)``. Extra columns are not allowed."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape[-1] != 2:
            raise ValueError(f"expected points (..., 2) as (x, y), got shape {pts.shape}")
        (sx, sy), (tx, ty) = self.scale, self.offset
        u = sx * pts[..., 0] + tx
        v = sy * pts[..., 1] + ty
        if self.flip:
            u = self.size[1] - u
        return np.stack([u, v], axis=-1)

    def contains(self, uv: np.ndarray) -> np.ndarray:
        """Which crop points ``(..., 2)`` lie inside the crop, ``0 <= u < w`` and ``0 <= v < h`` (NaN: False)."""
        uv = np.asarray(uv, dtype=np.float64)
        h, w = self.size
        with np.errstate(invalid="ignore"):
            return (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)

    def apply_image(self, image: Any) -> Any:
        """Apply the transform to an image: a tensor ``(..., C, H, W)`` or a PIL image (same type returned).

        The same torchvision calls as the extract stage's transform (bilinear resize with antialiasing, then a
        crop), so a center-crop transform gives exactly its pixels before normalization; then a mirror if ``flip``.
        """
        import torchvision.transforms.functional as TF

        _, height, width = TF.get_dimensions(image)
        if (height, width) != tuple(self.image_size):
            raise ValueError(f"image is {height}x{width}, this transform was made for {self.image_size[0]}x"
                             f"{self.image_size[1]}")
        out = TF.resize(image, list(self.resized), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        out = TF.crop(out, self.top, self.left, self.size[0], self.size[1])
        return TF.hflip(out) if self.flip else out


def resized_size(image_size: tuple[int, int], size: int) -> tuple[int, int]:
    """``(H', W')`` after torchvision resizes the shorter side of an ``(H, W)`` image to ``size``.

    torchvision's rule, operation for operation (``_compute_resized_output_size``): the long side becomes
    ``int(size * long / short)``, truncated.
    """
    h, w = image_size
    if min(h, w) < 1 or size < 1:
        raise ValueError(f"image size {image_size} and resize {size} must be positive")
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return new_h, new_w


def center_crop_transform(image_size: tuple[int, int], size: int, crop: int | None = None) -> CropTransform:
    """The geometry of torchvision's ``ImageClassification(resize_size=size, crop_size=crop)`` on an ``(H, W)`` image.

    ``crop=None`` means ``crop = size``: the extract stage's preprocessing (the whole shorter side is kept, the
    longer one center-cropped). The offsets are torchvision's ``int(round((H' - h) / 2))`` (Python's round, half
    to even). A crop larger than the resized image (torchvision would pad) is refused.
    """
    crop = size if crop is None else crop
    rh, rw = resized_size(image_size, size)
    if crop > min(rh, rw):
        raise ValueError(f"crop {crop} is larger than the resized image {rh}x{rw}")
    top, left = int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0))
    return CropTransform(tuple(image_size), (rh, rw), top, left, (crop, crop))


def random_crop_transform(
    image_size: tuple[int, int], size: int, crop: int, rng: np.random.Generator, flip_prob: float = 0.5
) -> CropTransform:
    """A training crop (``--finetune``): resize the shorter side to ``size``, a uniformly random ``crop`` x ``crop``
    window, mirrored with probability ``flip_prob``. The reference: ``size=480``, ``crop=450``."""
    rh, rw = resized_size(image_size, size)
    if crop > min(rh, rw):
        raise ValueError(f"crop {crop} is larger than the resized image {rh}x{rw}")
    top = int(rng.integers(0, rh - crop + 1))
    left = int(rng.integers(0, rw - crop + 1))
    return CropTransform(tuple(image_size), (rh, rw), top, left, (crop, crop), bool(rng.random() < flip_prob))


# -- crop -> map cells ------------------------------------------------------------------------------------------


def _stride(length: int, cells: int, stride: float | None) -> float:
    if cells < 1 or length < 1:
        raise ValueError(f"crop length {length} and cell count {cells} must be positive")
    if stride is not None and stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    return length / cells if stride is None else float(stride)


def cell_centers(length: int, cells: int, stride: float | None = None) -> np.ndarray:
    """Crop coordinates of the ``cells`` cell centres along a crop side of ``length`` pixels (see the module doc)."""
    s = _stride(length, cells, stride)
    return (length - s * (cells - 1)) / 2 + s * np.arange(cells)


def cell_coordinates(
    uv: np.ndarray, crop_size: tuple[int, int], map_size: tuple[int, int], stride: float | None = None
) -> np.ndarray:
    """Crop points ``(..., 2)`` (u, v) -> map coordinates ``(..., 2)`` (column, row): integers are cell centres.

    The cell holding a point is the nearest centre, ``round`` of these (clipped to the map).
    """
    uv = np.asarray(uv, dtype=np.float64)
    out = np.empty_like(uv)
    for axis, (length, cells) in enumerate(((crop_size[1], map_size[1]), (crop_size[0], map_size[0]))):
        s = _stride(length, cells, stride)
        out[..., axis] = (uv[..., axis] - (length - s * (cells - 1)) / 2) / s
    return out


def keypoints_to_heatmaps(
    people: Sequence[np.ndarray] | np.ndarray,
    transform: CropTransform,
    map_size: tuple[int, int],
    sigma: float = 1.0,
    *,
    stride: float | None = None,
    joints: int = len(MPII_JOINTS),
    flip_pairs: Sequence[tuple[int, int]] = MPII_FLIP_PAIRS,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian joint heatmaps on the feature map's cells: ``((J, H, W) float32, (J,) bool mask)``.

    ``people``: a sequence of ``(J, 3)`` (or ``(J, 2)``) arrays ``[x, y, visible]`` in continuous coordinates of
    the original image, NaN where a joint is not annotated (or a ``(P, J, C)`` array; J = ``joints``); no people
    gives all-zero heatmaps and an all-False mask. Every joint is mapped by
    ``transform``; with a flipping transform the joint ids are also swapped by ``flip_pairs`` (as in
    :func:`flip_keypoints`), so channel j always holds what looks like joint j in the network's input.

    Channel j is ``max over people of exp(-d^2 / (2 sigma^2))``, d the distance in cells from a cell centre to the
    person's joint j (``sigma`` in cells, so the peak is 1 at a joint that sits on a centre). A joint is drawn only
    when it is annotated and inside the crop (``0 <= u < w``, ``0 <= v < h``); otherwise it is left out entirely,
    its Gaussian tail too, even where another person's same joint is drawn. People are independent: a person with
    some joints absent or outside contributes the others. ``mask[j]`` is True when at least one person's joint j
    was drawn; a masked channel is all zeros and :func:`~actiontk.models.gap.pose_loss` ignores it. (Where one
    person's joint j is drawn and another's is unannotated, that second person gets no peak in a supervised channel:
    the annotation cannot say more.)
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    height, width = map_size
    if height < 1 or width < 1:
        raise ValueError(f"map size must be two positive ints, got {map_size}")
    arr = np.asarray(people, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((joints, height, width), np.float32), np.zeros(joints, bool)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != joints or arr.shape[-1] < 2:
        raise ValueError(f"expected people as ({joints}, 3) arrays [x, y, visible], got shape {arr.shape}")
    xy = arr[..., :2]  # (P, J, 2)
    present = np.isfinite(xy).all(axis=-1)  # (P, J)
    uv = transform.apply(np.where(present[..., None], xy, 0.0))
    drawn = present & transform.contains(uv)  # (P, J)
    if transform.flip:
        perm = flip_permutation(joints, flip_pairs)
        uv, drawn = uv[:, perm], drawn[:, perm]
    q = cell_coordinates(uv, transform.size, map_size, stride)  # (P, J, 2) as (column, row)
    gx = np.exp(-((np.arange(width) - q[..., 0:1]) ** 2) / (2 * sigma**2))  # (P, J, W)
    gy = np.exp(-((np.arange(height) - q[..., 1:2]) ** 2) / (2 * sigma**2))  # (P, J, H)
    gauss = gy[..., :, None] * gx[..., None, :]  # (P, J, H, W): separable, exp(-(dx^2 + dy^2) / 2 sigma^2)
    gauss = np.where(drawn[..., None, None], gauss, 0.0)
    return gauss.max(axis=0).astype(np.float32), drawn.any(axis=0)


def flip_keypoints(
    people: Sequence[np.ndarray] | np.ndarray, width: float, pairs: Sequence[tuple[int, int]] = MPII_FLIP_PAIRS
) -> list[np.ndarray]:
    """People of an image of ``width`` pixels -> the same people in the mirrored image.

    x becomes ``width - x`` (continuous coordinates) and the joint rows are permuted by ``pairs``, so that row j
    is again the joint that looks like joint j. Other columns (``visible``) move with their joint; NaN stays NaN.
    """
    out = []
    for person in people:
        p = np.array(person, dtype=np.float64, copy=True)
        p[:, 0] = width - p[:, 0]
        out.append(p[flip_permutation(p.shape[0], pairs)])
    return out


def flip_heatmaps(
    heatmaps: np.ndarray, mask: np.ndarray | None = None, pairs: Sequence[tuple[int, int]] = MPII_FLIP_PAIRS
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Mirror heatmaps ``(..., J, H, W)`` horizontally and swap the left/right channels; with ``mask (..., J)``,
    return ``(heatmaps, mask)`` with the mask's channels swapped too."""
    perm = flip_permutation(heatmaps.shape[-3], pairs)
    flipped = np.ascontiguousarray(heatmaps[..., perm, :, ::-1])
    return flipped if mask is None else (flipped, mask[..., perm])
