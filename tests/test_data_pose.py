"""Tests for actiontk.data.pose: the crop geometry against torchvision's pixels and the extract stage's transform,
map cells, Gaussian heatmaps for several people, masking of absent and cropped-out joints, and flips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from actiontk.data.pose import (
    MPII_FLIP_PAIRS,
    MPII_JOINTS,
    CropTransform,
    cell_centers,
    cell_coordinates,
    center_crop_transform,
    flip_heatmaps,
    flip_keypoints,
    flip_permutation,
    from_pixel_indices,
    keypoints_to_heatmaps,
    random_crop_transform,
    resized_size,
)
from actiontk.models.backbones import make_preprocess

NAN = float("nan")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def person(points: dict[int, tuple[float, float]]) -> np.ndarray:
    """A (16, 3) person with the given joints (visible) and NaN elsewhere."""
    p = np.full((16, 3), NAN)
    for j, (x, y) in points.items():
        p[j] = (x, y, 1.0)
    return p


# --------------------------------------------------------------------------------------------------------------
# MPII joints and flips


def test_mpii_flip_permutation() -> None:
    perm = flip_permutation()
    assert perm.tolist() == [5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10]
    assert (perm[perm] == np.arange(16)).all(), "a flip twice is no flip"
    for a, b in MPII_FLIP_PAIRS:  # every pair is a right joint and the same left joint
        ra, rb = MPII_JOINTS[a], MPII_JOINTS[b]
        assert {ra[:2], rb[:2]} == {"r_", "l_"} and ra[2:] == rb[2:], (ra, rb)
    for j in (6, 7, 8, 9):
        assert perm[j] == j, f"{MPII_JOINTS[j]} is on the midline"
    with pytest.raises(ValueError, match="share a joint"):
        flip_permutation(16, [(0, 5), (5, 3)])
    with pytest.raises(ValueError, match="distinct joint ids"):
        flip_permutation(4, [(0, 4)])


def test_from_pixel_indices() -> None:
    p = person({0: (10.0, 20.0), 3: (1.0, 1.0)})
    out = from_pixel_indices(p, base=1)
    assert out[0].tolist() == [9.5, 19.5, 1.0] and out[3].tolist() == [0.5, 0.5, 1.0]
    assert np.isnan(out[1]).all()
    assert from_pixel_indices(p, base=0)[0].tolist() == [10.5, 20.5, 1.0]
    assert p[0, 0] == 10.0, "the input is not modified"


# --------------------------------------------------------------------------------------------------------------
# Crop geometry


IMAGE_SIZES = [(300, 517), (517, 300), (480, 480), (333, 334), (451, 1003), (720, 1280)]


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
def test_resized_size_follows_torchvision(image_size: tuple[int, int]) -> None:
    img = torch.zeros(1, *image_size, dtype=torch.uint8)
    for size in (224, 450):
        assert resized_size(image_size, size) == tuple(TF.resize(img, [size], antialias=True).shape[-2:])


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
@pytest.mark.parametrize("size", [224, 241])
def test_center_crop_pixels_equal_the_extract_stage_transform(image_size: tuple[int, int], size: int) -> None:
    """The transform's crop, converted and normalized, is bit-identical to backbones.make_preprocess's output."""
    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, *image_size), dtype=torch.uint8, generator=gen)
    t = center_crop_transform(image_size, size)
    assert t.size == (size, size) and not t.flip
    ours = TF.normalize(TF.convert_image_dtype(t.apply_image(img), torch.float),
                        mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    reference = make_preprocess("resnet101", size, imagenet=False)(img)
    assert ours.shape == reference.shape == (3, size, size)
    assert torch.equal(ours, reference)


def test_center_crop_offsets_by_hand() -> None:
    # 300x517 -> shorter side 224: 224 x int(224 * 517 / 300) = 224 x 386; left = round(162 / 2) = 81.
    t = center_crop_transform((300, 517), 224)
    assert (t.resized, t.top, t.left) == ((224, 386), 0, 81)
    assert t.scale == (386 / 517, 224 / 300) and t.offset == (-81.0, 0.0)
    # Half-pixel offsets round half to even, like torchvision: (451 - 450) / 2 = 0.5 -> 0; (453 - 450) / 2 -> 2.
    assert center_crop_transform((450, 451), 450).left == 0
    assert center_crop_transform((450, 453), 450).left == 2
    # The paper's 450 crop of a 480 shorter side.
    t = center_crop_transform((480, 640), 480, crop=450)
    assert (t.resized, t.top, t.left, t.size) == ((480, 640), 15, 95, (450, 450))
    with pytest.raises(ValueError, match="larger than the resized image"):
        center_crop_transform((480, 640), 224, crop=225)
    with pytest.raises(ValueError, match="does not fit"):
        CropTransform((100, 100), (100, 100), 0, 1, (100, 100))


def blob_image(image_size: tuple[int, int], centre: tuple[float, float], sigma: float = 6.0) -> torch.Tensor:
    """A float image (1, H, W) holding a Gaussian blob centred at a continuous point (x, y)."""
    ys = torch.arange(image_size[0], dtype=torch.float64) + 0.5  # pixel centres
    xs = torch.arange(image_size[1], dtype=torch.float64) + 0.5
    g = torch.exp(-((ys[:, None] - centre[1]) ** 2 + (xs[None, :] - centre[0]) ** 2) / (2 * sigma**2))
    return g[None].float()


def centroid(img: torch.Tensor) -> tuple[float, float]:
    w = img[0].double()
    ys = torch.arange(w.shape[0], dtype=torch.float64) + 0.5
    xs = torch.arange(w.shape[1], dtype=torch.float64) + 0.5
    return (w.sum(0) @ xs / w.sum()).item(), (w.sum(1) @ ys / w.sum()).item()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_points_follow_the_pixels(flip: bool, seed: int) -> None:
    """A blob's centroid in the transformed image is where the transform maps the blob's centre (continuous
    coordinates: pixel i spans [i, i+1)), for center crops and random crops, mirrored or not."""
    rng = np.random.default_rng(seed)
    image_size = (int(rng.integers(300, 700)), int(rng.integers(300, 700)))
    centre = (float(rng.uniform(0.35, 0.65) * image_size[1]), float(rng.uniform(0.35, 0.65) * image_size[0]))
    img = blob_image(image_size, centre)
    transforms = [center_crop_transform(image_size, 240), random_crop_transform(image_size, 240, 200, rng)]
    for t in transforms:
        t = t if t.flip == flip else t.flipped()
        out = t.apply_image(img)
        assert tuple(out.shape[-2:]) == t.size
        got = centroid(out)
        want = t.apply(np.array(centre))
        assert abs(got[0] - want[0]) < 0.05 and abs(got[1] - want[1]) < 0.05, f"{t}: centroid {got}, mapped {want}"


def test_flipped_crop_pixels_are_the_mirrored_crop() -> None:
    img = torch.randint(0, 256, (3, 300, 417), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    t = center_crop_transform((300, 417), 224)
    assert torch.equal(t.flipped().apply_image(img), torch.flip(t.apply_image(img), dims=[-1]))
    with pytest.raises(ValueError, match="made for 300x417"):
        t.apply_image(img[:, :, :-1])


def test_random_crops_stay_inside_and_are_reproducible() -> None:
    seen_flips, seen_lefts = set(), set()
    for seed in range(40):
        t = random_crop_transform((480, 700), 480, 450, np.random.default_rng(seed))
        assert t.resized == (480, 700) and t.size == (450, 450)
        assert 0 <= t.top <= 30 and 0 <= t.left <= 250
        seen_flips.add(t.flip)
        seen_lefts.add(t.left)
        assert t == random_crop_transform((480, 700), 480, 450, np.random.default_rng(seed))
    assert seen_flips == {False, True} and len(seen_lefts) > 10
    never = random_crop_transform((480, 700), 480, 450, np.random.default_rng(0), flip_prob=0.0)
    assert not never.flip
    # The pixels are the plain crop of the resized image.
    img = torch.randint(0, 256, (3, 240, 350), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    t = random_crop_transform((240, 350), 240, 200, np.random.default_rng(3), flip_prob=0.0)
    expected = TF.resize(img, [240], antialias=True)[:, t.top : t.top + 200, t.left : t.left + 200]
    assert torch.equal(t.apply_image(img), expected)


# --------------------------------------------------------------------------------------------------------------
# Map cells


def test_cell_centers() -> None:
    # Default: the cells tile the crop, centre (j + 0.5) * w / W.
    np.testing.assert_allclose(cell_centers(450, 15), 15 + 30 * np.arange(15))
    np.testing.assert_allclose(cell_centers(224, 7), 16 + 32 * np.arange(7))
    # The backbone's stride, centred: 450 px with 15 cells 32 px apart -> 1, 33, ..., 449.
    np.testing.assert_allclose(cell_centers(450, 15, stride=32), 1 + 32 * np.arange(15))
    np.testing.assert_allclose(cell_centers(224, 7, stride=32), cell_centers(224, 7))
    for stride in (None, 32):
        c = cell_centers(450, 15, stride=stride)
        np.testing.assert_allclose(c + c[::-1], 450), "the grid is mirror-symmetric"
    q = cell_coordinates(np.array([[15.0, 1.0], [449.0, 435.0]]), (450, 450), (15, 15))
    np.testing.assert_allclose(q, [[0.0, -0.4666666666666667], [14.466666666666667, 14.0]])
    q = cell_coordinates(np.array([[1.0, 33.0]]), (450, 300), (15, 10), stride=32)  # rows 450, columns 300
    np.testing.assert_allclose(q, [[(1.0 - (300 - 32 * 9) / 2) / 32, 1.0]])


# --------------------------------------------------------------------------------------------------------------
# Heatmaps

# A 450 x 600 image center-cropped at 450: no scaling, crop columns [75, 525), so crop u = x - 75.
IMAGE, CROP, MAP = (450, 600), 450, (15, 15)


def expected_cell(x: float, y: float, stride: float | None) -> tuple[int, int]:
    """(row, column) of the cell whose centre is nearest to image point (x, y), computed from the rules."""
    s = 30.0 if stride is None else stride
    first = 15.0 if stride is None else (450 - 32 * 14) / 2
    return round((y - first) / s), round((x - 75 - first) / s)


PEOPLE = [
    person({0: (100.0, 400.0), 5: (160.0, 410.0), 9: (130.0, 40.0), 12: (110.0, 120.0), 13: (150.0, 118.0)}),
    person({0: (300.0, 300.0), 5: (350.0, 305.0), 9: (320.0, 200.0), 10: (280.0, 250.0), 11: (290.0, 280.0),
            15: (370.0, 240.0)}),
    person({0: (480.0, 90.0), 9: (500.0, 20.0), 10: (460.0, 60.0), 12: (470.0, 30.0), 13: (510.0, 30.0)}),
]
for _p in PEOPLE:  # off the round numbers, so that no joint is equally near two cell centres
    _p[:, :2] += (3.7, 2.3)


@pytest.mark.parametrize("stride", [None, 32])
@pytest.mark.parametrize("sigma", [0.7, 1.0, 1.5])
def test_heatmaps_peak_at_every_persons_joints(stride, sigma) -> None:
    t = center_crop_transform(IMAGE, CROP)
    assert (t.left, t.top, t.scale) == (75, 0, (1.0, 1.0))
    heat, mask = keypoints_to_heatmaps(PEOPLE, t, MAP, sigma=sigma, stride=stride)
    assert heat.shape == (16, 15, 15) and heat.dtype == np.float32
    assert mask.shape == (16,) and mask.dtype == bool
    annotated = {j for p in PEOPLE for j in range(16) if not np.isnan(p[j, 0])}
    assert set(np.flatnonzero(mask).tolist()) == annotated
    for p in PEOPLE:
        for j in range(16):
            if np.isnan(p[j, 0]):
                continue
            x, y = p[j, :2]
            row, col = expected_cell(x, y, stride)
            # The joint's own cell is the maximum of its neighbourhood (the people are several cells apart) ...
            window = heat[j, max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3]
            assert heat[j, row, col] == window.max(), f"joint {j} at ({x}, {y}) does not peak at cell {row, col}"
            # ... and holds the Gaussian of its distance to that cell's centre, in cells.
            s = 30.0 if stride is None else 32.0
            first = 15.0 if stride is None else 1.0
            d2 = ((x - 75 - first) / s - col) ** 2 + ((y - first) / s - row) ** 2
            assert heat[j, row, col] == pytest.approx(math.exp(-d2 / (2 * sigma**2)), rel=1e-6)
    # A channel with a single person: the global argmax is that joint's cell.
    only_one = [j for j in annotated if sum(not np.isnan(p[j, 0]) for p in PEOPLE) == 1]
    assert only_one
    for j in only_one:
        x, y = next(p[j, :2] for p in PEOPLE if not np.isnan(p[j, 0]))
        assert np.unravel_index(heat[j].argmax(), heat[j].shape) == expected_cell(x, y, stride)
    for j in set(range(16)) - annotated:
        assert (heat[j] == 0).all()


def test_heatmaps_are_the_max_over_people() -> None:
    t = center_crop_transform(IMAGE, CROP)
    together, _ = keypoints_to_heatmaps(PEOPLE, t, MAP)
    alone = np.stack([keypoints_to_heatmaps([p], t, MAP)[0] for p in PEOPLE])
    np.testing.assert_array_equal(together, alone.max(axis=0))
    # A (P, J, 3) array is accepted as well as a list; no people gives zeros and an empty mask.
    np.testing.assert_array_equal(keypoints_to_heatmaps(np.stack(PEOPLE), t, MAP)[0], together)
    heat, mask = keypoints_to_heatmaps([], t, MAP)
    assert heat.shape == (16, 15, 15) and not heat.any() and not mask.any()
    with pytest.raises(ValueError, match="16, 3"):
        keypoints_to_heatmaps([np.zeros((14, 3))], t, MAP)
    with pytest.raises(ValueError, match="sigma"):
        keypoints_to_heatmaps(PEOPLE, t, MAP, sigma=0)


def test_joints_outside_the_crop_are_masked() -> None:
    # Crop columns [75, 525) of the 600-wide image; rows are all kept (450 = the image height).
    t = center_crop_transform(IMAGE, CROP)
    outside = person({0: (40.0, 200.0), 1: (560.0, 200.0), 2: (74.9, 10.0), 3: (525.0, 10.0), 4: (75.0, 10.0),
                      5: (524.9, 449.9)})
    heat, mask = keypoints_to_heatmaps([outside], t, MAP)
    assert mask.tolist() == [False, False, False, False, True, True] + [False] * 10
    for j in range(16):
        assert heat[j].any() == mask[j], f"channel {j}"
    # With a second person whose joint 0 is inside, channel 0 is supervised and holds only that person:
    # the first person's joint 0, just outside, leaves no tail.
    inside = person({0: (80.0, 200.0)})
    heat, mask = keypoints_to_heatmaps([outside, inside], t, MAP)
    assert mask[0] and mask[4] and not mask[1]
    np.testing.assert_array_equal(heat[0], keypoints_to_heatmaps([inside], t, MAP)[0][0])
    # Vertically too: a crop of rows [15, 465) of a 480 x 480 image.
    t = center_crop_transform((480, 480), 480, crop=450)
    heat, mask = keypoints_to_heatmaps([person({0: (200.0, 14.0), 1: (200.0, 16.0), 2: (200.0, 466.0)})], t, MAP)
    assert mask[:3].tolist() == [False, True, False]


def test_partially_annotated_people() -> None:
    t = center_crop_transform(IMAGE, CROP)
    p = person({0: (200.0, 200.0), 7: (250.0, 100.0)})
    p[7, 1] = NAN  # one coordinate missing: the joint is absent
    p[9] = (260.0, 60.0, 0.0)  # annotated but marked not visible: still drawn
    heat, mask = keypoints_to_heatmaps([p], t, MAP)
    assert np.flatnonzero(mask).tolist() == [0, 9]
    assert not heat[7].any() and heat[9].max() > 0.5


@pytest.mark.parametrize("stride", [None, 32])
def test_flipped_crop_heatmaps_are_mirrored_and_swapped(stride) -> None:
    t = random_crop_transform((480, 700), 480, 450, np.random.default_rng(5), flip_prob=0.0)
    people = [from_pixel_indices(p, base=1) for p in PEOPLE]
    heat, mask = keypoints_to_heatmaps(people, t, MAP, stride=stride)
    heat_f, mask_f = keypoints_to_heatmaps(people, t.flipped(), MAP, stride=stride)
    expected_heat, expected_mask = flip_heatmaps(heat, mask)
    np.testing.assert_allclose(heat_f, expected_heat, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(mask_f, expected_mask)
    assert np.abs(heat_f - heat).max() > 0.5, "the test needs people that are not mirror-symmetric"
    assert not np.array_equal(mask_f, mask), "left and right joints must trade channels"


@pytest.mark.parametrize("stride", [None, 32])
def test_flipping_the_image_keypoints_agrees_with_flipping_the_heatmaps(stride) -> None:
    """Heatmaps of the mirrored image's keypoints = mirrored, channel-swapped heatmaps of the original. The
    600-wide image's center crop [75, 525) is mirror-symmetric, so both images get the same crop."""
    t = center_crop_transform(IMAGE, CROP)
    heat, mask = keypoints_to_heatmaps(PEOPLE, t, MAP, stride=stride)
    mirrored = flip_keypoints(PEOPLE, IMAGE[1])
    heat_m, mask_m = keypoints_to_heatmaps(mirrored, t, MAP, stride=stride)
    expected_heat, expected_mask = flip_heatmaps(heat, mask)
    np.testing.assert_allclose(heat_m, expected_heat, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(mask_m, expected_mask)
    # flip_keypoints itself: x -> W - x, rows swapped, the visibility column moving with its joint.
    assert mirrored[0][5].tolist() == [600 - 103.7, 402.3, 1.0]  # the right ankle becomes the left ankle
    assert mirrored[0][0].tolist() == [600 - 163.7, 412.3, 1.0]
    assert np.isnan(mirrored[0][1]).all()
    np.testing.assert_array_equal(flip_keypoints(mirrored, IMAGE[1])[2], PEOPLE[2])
    # Batched heatmaps flip the same way.
    batched = flip_heatmaps(np.stack([heat, heat]))
    np.testing.assert_array_equal(batched[1], expected_heat)
