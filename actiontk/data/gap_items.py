"""Still images as training items of the GAP head (``train-gap``): image, label and pose targets.

- :func:`load_items`: the (classes, train, test) :class:`Item` lists of an image dataset's split 1, each image
  with its upright size and its people's keypoints.
- :class:`CachedMaps`: cached ``layer`` maps of an ``extract`` run, with keypoint heatmaps drawn at the cached map
  size through the geometry of extract's preprocessing (shorter side resized to S, centre S x S crop).
- :class:`ImageCrops`: the images themselves for ``--finetune``: random (train) or centre (test) crops, with the
  heatmaps drawn through the same crop.

Every item is ``{"x", "label", "heatmap", "mask", "index"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actiontk.cache import features as store
from actiontk.errors import UserError

def _image_datasets() -> tuple[str, ...]:
    from actiontk.datasets import DATASETS

    return tuple(name for name, cls in DATASETS.items() if getattr(cls, "kind", "video") == "image")


IMAGE_DATASETS = _image_datasets()  # the still-image datasets, by their own ``kind`` (mpii, toy-mpii, images)


@dataclass(frozen=True)
class Item:
    rel: str
    path: Path
    label: int
    size: tuple[int, int]  # (H, W) of the original image
    people: np.ndarray  # (P, 16, 3) continuous image coordinates [x, y, visible], NaN where absent


def _image_size(path: Path) -> tuple[int, int]:
    from actiontk.data.images import image_size

    return image_size(path)  # upright (EXIF orientation applied); reads the header only


def load_items(dataset: str, root: str | Path, *, keep: Callable[[str], bool] = lambda rel: True,
               need_pose: bool, log: Callable[[str], None]) -> tuple[list[str], list[Item], list[Item]]:
    """(classes, train items, test items) of an image dataset's split 1, with each image's people."""
    from actiontk.data.pose import from_pixel_indices
    from actiontk.datasets import get_dataset

    ds = get_dataset(dataset, root)
    if getattr(ds, "kind", "video") != "image":
        raise UserError(f"train-gap needs a still-image dataset, {dataset!r} holds videos",
                        f"use one of: {', '.join(IMAGE_DATASETS)}")
    index = ds.load(1)
    annotations = ds.annotations() if hasattr(ds, "annotations") else None
    if need_pose and annotations is None:
        raise UserError(f"--pose needs keypoint annotations, which the {dataset!r} dataset does not have",
                        "use --no-pose, or an MPII-layout dataset (mpii, toy-mpii)")

    def items(samples) -> list[Item]:
        out = []
        for s in samples:
            if not keep(s.rel):
                continue
            people = np.zeros((0, 16, 3))
            if annotations is not None:
                people = from_pixel_indices(annotations[s.rel].keypoints(), base=1)
            out.append(Item(s.rel, s.path, s.label, _image_size(s.path), people))
        return out

    train, test = items(index.train), items(index.test)
    left_out = len(index.train) + len(index.test) - len(train) - len(test)
    if left_out:
        log(f"{left_out} image(s) of the split have no cached features (unreadable at extract) and are left out")
    if not train or not test:
        raise UserError(f"{dataset} has {len(train)} train and {len(test)} test images to use",
                        "check the dataset with `actiontk datasets check` and the extract run with `actiontk status`")
    return index.classes, train, test


class CachedMaps:
    """Cached ``layer`` maps of images as training items: ``{"x", "label", "heatmap", "mask"}``."""

    def __init__(self, reader: store.FeatureReader, items: list[Item], layer: str, input_size: int, sigma: float,
                 stride: int):
        from actiontk.data.pose import center_crop_transform, keypoints_to_heatmaps

        self.reader, self.items, self.layer = reader, items, layer
        _, h, w = reader.layers()[layer]
        self.map_size = (int(h), int(w))
        self.heatmaps = np.zeros((len(items), 16, h, w), np.float32)
        self.masks = np.zeros((len(items), 16), bool)
        for i, it in enumerate(items):
            t = center_crop_transform(it.size, input_size)
            self.heatmaps[i], self.masks[i] = keypoints_to_heatmaps(it.people, t, self.map_size, sigma, stride=stride)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        x = self.reader.read(self.items[i].rel, self.layer)[0]  # (C, h, w) float16
        return {"x": torch.from_numpy(x.astype(np.float32)), "label": self.items[i].label,
                "heatmap": torch.from_numpy(self.heatmaps[i]), "mask": torch.from_numpy(self.masks[i]), "index": i}


class ImageCrops:
    """Images as training items for ``--finetune``: a random (``train``) or centre crop, with pose targets."""

    def __init__(self, items: list[Item], *, resize: int, crop: int, map_size: tuple[int, int], sigma: float,
                 stride: int, train: bool, seed: int):
        self.items, self.resize, self.crop, self.map_size = items, resize, crop, map_size
        self.sigma, self.stride, self.train, self.seed = sigma, stride, train, seed
        self.epoch = 0  # set by the caller's sampler through set_epoch; makes crops depend on (seed, epoch, i)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch
        import torchvision.transforms.functional as TF

        from actiontk.data.images import load_rgb
        from actiontk.data.pose import center_crop_transform, keypoints_to_heatmaps, random_crop_transform
        from actiontk.models.backbones import IMAGENET_MEAN, IMAGENET_STD

        it = self.items[i]
        if self.train:
            import torch.utils.data as tud

            info = tud.get_worker_info()
            # A fresh stream per (seed, item, draw): a worker's base seed (epoch-dependent) or torch's RNG.
            draw = info.seed if info is not None else int(torch.randint(0, 2**62, ()).item())
            rng = np.random.default_rng([self.seed, i, draw % 2**62])
            t = random_crop_transform(it.size, self.resize, self.crop, rng)
        else:
            t = center_crop_transform(it.size, self.resize, self.crop)
        img = t.apply_image(load_rgb(it.path))  # upright: EXIF orientation applied, as extract does
        x = TF.normalize(TF.to_tensor(img), IMAGENET_MEAN, IMAGENET_STD)
        heat, mask = keypoints_to_heatmaps(it.people, t, self.map_size, self.sigma, stride=self.stride)
        return {"x": x, "label": it.label, "heatmap": torch.from_numpy(heat), "mask": torch.from_numpy(mask),
                "index": i}
