"""Where and how the work runs: the device, the numeric precision, and the torchrun process layout.

Shared by every stage that computes (extract and the training stages), so that ``--device``,
``--precision`` and torchrun's environment mean the same thing everywhere.
"""

from __future__ import annotations

import os

import torch

from actiontk.errors import UserError


def dist_info() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) from torchrun's environment; (0, 1, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return rank, world, local_rank, local_world


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device for ``--device`` (under torchrun, CUDA means this rank's GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}", "use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available", "use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    elif device.type != "cpu":
        raise UserError(f"unsupported --device {name!r}", "use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU; fp16 needs CUDA."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision fp16 needs a CUDA device", "use fp32 or bf16 on CPU")
    return precision
