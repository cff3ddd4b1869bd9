"""The cache keys of the curated backbones (vgg16, resnet*) must not move when the registry grows: existing
feature caches are found by these identities. The hashes below were computed before the registry was opened
to every torchvision model (same torchvision minor version); a change here orphans every user's cache."""

from __future__ import annotations

import hashlib
import json

import pytest
import torchvision

from actiontk.models.backbones import backbone_identity

PINNED = [
    (("vgg16", ["pool4", "conv5_3"], "imagenet", 224, False), "3814745712e71dc6"),
    (("vgg16", ["conv4_3", "pool5"], "none", 112, True), "81e8785c9209edaf"),
    (("resnet101", ["layer4"], "imagenet", 224, False), "1e582ce761431fe9"),
    (("resnet50", ["layer3", "layer4"], "none", 112, False), "39a19ca143c49871"),
    (("resnet18", ["layer1", "layer2", "layer3", "layer4"], "imagenet", 96, False), "cc6ad618adb91f8c"),
]


def _digest(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@pytest.mark.skipif(not torchvision.__version__.startswith("0.29"),
                    reason="the pinned identities embed torchvision 0.29's version and transform repr")
@pytest.mark.parametrize(("case", "expected"), PINNED, ids=[f"{c[0]}-{c[2]}-{c[3]}" for c, _ in PINNED])
def test_curated_identities_are_unchanged(case, expected):
    name, layers, weights, size, square = case
    assert _digest(backbone_identity(name, layers, weights, size, seed=0, square=square)) == expected


def test_curated_identity_fields():
    ident = backbone_identity("resnet18", ["layer4"], "imagenet", 96)
    assert set(ident) == {"backbone", "layers", "weights_id", "size", "preprocess", "torchvision"}
    assert ident["backbone"] == "resnet18" and ident["layers"] == ["layer4"]
    assert ident["weights_id"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert ident["preprocess"]["resize_size"] == [96] and ident["preprocess"]["crop_size"] == [96]
