"""Which memory format is faster for each backbone family on this machine's CPU: contiguous or channels_last?

For each model (random weights, fp32, one batch of ``--batch`` frames at ``--size`` px, ``torch.inference_mode``)
the forward to the given layers is timed in both formats, interleaved (``--repeats`` rounds, median of each),
after a warm-up of each; the features of both formats are compared (max abs difference relative to the largest
value). The ratio channels_last / contiguous (frames/s) is what ``actiontk.models.backbones.CPU_CHANNELS_LAST``
records per family.

    .venv/bin/python bench/memory_format.py                       # the default list, 224 px, batch 8, 3 rounds
    .venv/bin/python bench/memory_format.py --models vgg16:conv5_3 --size 224 --batch 32
"""

from __future__ import annotations

import argparse
import statistics
import time

DEFAULT = ["vgg16:conv5_3", "resnet50:layer4", "convnext_tiny:features.7", "efficientnet_b0:features.8",
           "mobilenet_v3_small:features.12", "regnet_y_400mf:trunk_output.block4",
           "vit_b_16:encoder.layers.encoder_layer_11", "swin_t:features.7"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT, help="NAME:LAYER[,LAYER]")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch

    from actiontk.models.backbones import build_backbone

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} px, batch {args.batch}, fp32")
    print(f"{'model':<40} {'contiguous fr/s':>16} {'channels_last fr/s':>19} {'ratio':>6} {'rel diff':>9}")
    for item in args.models:
        name, layers = item.split(":")
        bb = build_backbone(name, layers.split(","), "none", size=args.size)
        x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
        times: dict[str, list[float]] = {k: [] for k in formats}
        outs = {}
        with torch.inference_mode():
            for fmt_name, fmt in formats.items():  # warm-up, and the features of each format
                bb.to(memory_format=fmt)
                outs[fmt_name] = bb(x.contiguous(memory_format=fmt))
            for _ in range(args.repeats):
                for fmt_name, fmt in formats.items():
                    bb.to(memory_format=fmt)
                    xi = x.contiguous(memory_format=fmt)
                    t0 = time.perf_counter()
                    bb(xi)
                    times[fmt_name].append(time.perf_counter() - t0)
        fps = {k: args.batch / statistics.median(v) for k, v in times.items()}
        diff = max(float((outs["channels_last"][k] - outs["contiguous"][k]).abs().max()
                         / outs["contiguous"][k].abs().max().clamp_min(1e-12)) for k in outs["contiguous"])
        print(f"{item:<40} {fps['contiguous']:>16.2f} {fps['channels_last']:>19.2f} "
              f"{fps['channels_last'] / fps['contiguous']:>6.2f} {diff:>9.1e}", flush=True)


if __name__ == "__main__":
    main()
