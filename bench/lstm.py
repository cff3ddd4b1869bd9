"""Benchmark of the joint attention LSTM's training speed: is the fused cell close to a fused LSTM kernel?

Training throughput (clips/s of forward + backward + SGD step; cross-entropy on every step's logits) of:

(i)   joint    ``actiontk.models.joint_lstm.JointAttentionLSTM`` (the fused cell, weight gradients batched over
      the steps), on K inputs ``(B, T, C, G, G)``;
(ii)  lstm     a plain stacked ``nn.LSTM`` of the same hidden size and layers, plus the same classifier, on the
      already pooled inputs ``(B, T, 5 * K * C)`` — PyTorch's fused LSTM, the speed to aim at;
(iii) naive    the same equations written step by step (:class:`NaiveJointCell` below: one small ``nn.Linear`` per
      input and gate, Python loops over inputs and pyramid regions), with the same upper LSTM and classifier;
(iv)  joint-unbatched  (i) with ``batched_weight_grad=False`` (plain autograd), to show what the batching buys.

Before timing, the naive cell is loaded with the fused cell's weights (via ``paper_weights()``) and both are run on
the same short input: the printed max difference shows that (i) and (iii) compute the same function.

The models are timed in rotating order over ``--rounds`` rounds (each: ``--iters`` steps after one warm-up step);
medians are printed, each with the CPU time that other processes used meanwhile ("foreign", in cores, from
/proc/stat), since this benchmark is meant to run beside other jobs only when that figure is reported.

    .venv/bin/python bench/lstm.py                 # B 16, T 30, hidden 1024, 2 inputs of 256 x 7 x 7, 3 layers
    .venv/bin/python bench/lstm.py --quick         # small sizes, a smoke run
    .venv/bin/python bench/lstm.py --device cuda   # on a GPU

Results are documented in docs/performance.md ("joint LSTM").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actiontk.models.joint_lstm import JointAttentionLSTM, JointLSTMConfig, pyramid_regions
from cpuclock import cpu_busy_seconds  # bench/ is on sys.path when a script here runs


class NaiveJointCell(nn.Module):
    """The joint cell's equations as written in the paper: separate matrices per input k and gate, loops over k."""

    def __init__(self, config: JointLSTMConfig, in_channels: list[int], grid: tuple[int, int]) -> None:
        super().__init__()
        self.config, self.in_channels, self.grid = config, in_channels, grid
        hid = config.hidden
        sizes = [config.regions * c for c in in_channels]
        self.att = nn.Linear(hid, grid[0] * grid[1], bias=False)  # W_att
        # Per input k and gate g in i, f, o: sub-gate W_xgk (with b_gk), W_hgk, and the final gate's W_ggk.
        self.sub_x = nn.ModuleList(nn.ModuleDict({g: nn.Linear(d, hid) for g in "ifo"}) for d in sizes)
        self.sub_h = nn.ModuleList(nn.ModuleDict({g: nn.Linear(hid, hid, bias=False) for g in "ifo"}) for _ in sizes)
        self.final = nn.ModuleList(nn.ModuleDict({g: nn.Linear(hid, hid, bias=False) for g in "ifo"}) for _ in sizes)
        self.cand_x = nn.ModuleList(nn.Linear(d, hid, bias=False) for d in sizes)  # W_xck
        self.cand_h = nn.Linear(hid, hid)  # W_hc, b_c
        if config.fusion == "late":
            self.in_x = nn.ModuleList(nn.Linear(d, d) for d in sizes)  # W'_k, b'_k
            self.in_h = nn.ModuleList(nn.Linear(hid, d, bias=False) for d in sizes)  # U'_k

    @torch.no_grad()
    def load_from(self, fused: JointAttentionLSTM) -> None:
        """Copies the fused cell's weights, by their paper names."""
        w = fused.cell.paper_weights()
        self.att.weight.copy_(w["W_att"])
        self.cand_h.weight.copy_(w["W_hc"])
        self.cand_h.bias.copy_(w["b_c"])
        for k0 in range(len(self.in_channels)):
            k = k0 + 1
            for g in "ifo":
                self.sub_x[k0][g].weight.copy_(w[f"W_x{g}{k}"])
                self.sub_x[k0][g].bias.copy_(w[f"b_{g}{k}"])
                self.sub_h[k0][g].weight.copy_(w[f"W_h{g}{k}"])
                self.final[k0][g].weight.copy_(w[f"W_{g}{g}{k}"])
            self.cand_x[k0].weight.copy_(w[f"W_xc{k}"])
            if self.config.fusion == "late":
                self.in_x[k0].weight.copy_(w[f"W'_{k}"])
                self.in_x[k0].bias.copy_(w[f"b'_{k}"])
                self.in_h[k0].weight.copy_(w[f"U'_{k}"])

    def pool(self, fmap: Tensor, att: Tensor) -> Tensor:
        """Pyramid pooling of one input ``(B, C, H, W)`` region by region: ``-> (B, R*C)``."""
        flat = fmap.flatten(2)  # (B, C, H*W)
        vectors = []
        for inside in pyramid_regions(*self.grid, pyramid=self.config.pyramid, device=fmap.device):
            a = att[:, inside]  # (B, n)
            a = a / a.sum(dim=1, keepdim=True)
            vectors.append((flat[:, :, inside] * a.unsqueeze(1)).sum(dim=2))  # (B, C)
        return torch.cat(vectors, dim=1)

    def forward(self, maps: list[Tensor], h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step on K maps ``(B, C_k, H, W)``."""
        att = torch.softmax(self.att(h), dim=1)  # (B, H*W)
        gate_i = gate_f = gate_o = 0.0
        cand = self.cand_h(h)
        for k, fmap in enumerate(maps):
            x = self.pool(fmap, att)
            sub = {g: torch.tanh(self.sub_x[k][g](x) + self.sub_h[k][g](h)) for g in "ifo"}
            gate_i = gate_i + self.final[k]["i"](sub["i"])
            gate_f = gate_f + self.final[k]["f"](sub["f"])
            gate_o = gate_o + self.final[k]["o"](sub["o"])
            if self.config.fusion == "late":
                x = x * torch.sigmoid(self.in_x[k](x) + self.in_h[k](h))
            cand = cand + self.cand_x[k](x)
        c = torch.sigmoid(gate_f) * c + torch.sigmoid(gate_i) * torch.tanh(cand)
        h = torch.sigmoid(gate_o) * torch.tanh(c)
        return h, c, att


class NaiveJointLSTM(nn.Module):
    """:class:`NaiveJointCell` unrolled, with the same upper layers and classifier as ``JointAttentionLSTM``."""

    def __init__(self, config: JointLSTMConfig, in_channels: list[int], grid: tuple[int, int], classes: int) -> None:
        super().__init__()
        self.cell = NaiveJointCell(config, in_channels, grid)
        # borrow the upper layers' and classifier's construction
        ref = JointAttentionLSTM(config, in_channels, grid, classes)
        self.drop, self.upper, self.classifier = ref.drop, ref.upper, ref.classifier

    def forward(self, xs: list[Tensor]) -> tuple[Tensor, Tensor]:
        batch, steps = xs[0].shape[:2]
        h = c = xs[0].new_zeros(batch, self.cell.config.hidden)
        hs, atts = [], []
        for t in range(steps):
            h, c, att = self.cell([x[:, t] for x in xs], h, c)
            hs.append(h)
            atts.append(att)
        top = torch.stack(hs, dim=1)  # (B, T, hidden)
        if self.upper is not None:
            top, _ = self.upper(self.drop(top))
        return self.classifier(self.drop(top)), torch.stack(atts, dim=1)


class PlainLSTM(nn.Module):
    """A stacked ``nn.LSTM`` and a per-step classifier on already pooled inputs ``(B, T, D)``."""

    def __init__(self, inputs: int, config: JointLSTMConfig, classes: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(inputs, config.hidden, num_layers=config.layers, batch_first=True, dropout=config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden, classes)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        h, _ = self.lstm(x)  # (B, T, hidden)
        return self.classifier(self.drop(h)), None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model: nn.Module, inputs, target: Tensor, iters: int, device: torch.device) -> tuple[float, float]:
    """Seconds per training step (after one warm-up step), and the foreign CPU load (cores) meanwhile."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    num_classes = model.classifier.out_features

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits, _ = model(inputs)  # (B, T, K)
        loss = F.cross_entropy(logits.reshape(-1, num_classes), target.reshape(-1))
        loss.backward()
        opt.step()

    step()
    _sync(device)
    busy0, own0, t0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    wall = time.perf_counter() - t0
    foreign = max(0.0, (cpu_busy_seconds() - busy0) - (time.process_time() - own0)) / wall
    return wall / iters, foreign


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=30, help="T, frames per clip")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--inputs", type=int, default=2, help="K, feature levels")
    p.add_argument("--channels", type=int, default=256, help="channels of every input")
    p.add_argument("--grid", type=int, default=7, help="maps are grid x grid")
    p.add_argument("--fusion", choices=("early", "late"), default="early")
    p.add_argument("--classes", type=int, default=101)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=2, help="timed training steps per model per round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip", nargs="*", default=[], help="models to leave out (joint, lstm, naive, joint-unbatched)")
    p.add_argument("--quick", action="store_true", help="small sizes: B 4, T 8, hidden 128, 2 x 32 x 7 x 7")
    p.add_argument("--json", type=Path, help="also write the rates, ratios and settings to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.hidden, args.channels = 4, 8, 128, 32

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = JointLSTMConfig(hidden=args.hidden, layers=args.layers, fusion=args.fusion)
    shape = ([args.channels] * args.inputs, (args.grid, args.grid), args.classes)  # in_channels, grid, classes
    maps = [torch.randn(args.batch, args.steps, args.channels, args.grid, args.grid, device=device).relu()
            for _ in range(args.inputs)]  # K x (B, T, C, G, G)
    pooled = torch.randn(args.batch, args.steps, cfg.regions * sum(shape[0]), device=device)  # (B, T, 5 K C)
    target = torch.randint(args.classes, (args.batch, args.steps), device=device)

    joint = JointAttentionLSTM(cfg, *shape).to(device)
    naive = NaiveJointLSTM(cfg, *shape).to(device)
    naive.cell.load_from(joint)
    if joint.upper is not None:
        naive.upper.load_state_dict(joint.upper.state_dict())
    naive.classifier.load_state_dict(joint.classifier.state_dict())
    joint.eval()
    naive.eval()
    with torch.no_grad():
        short = [m[:, :4] for m in maps]
        diff = (joint(short)[0] - naive(short)[0]).abs().max().item()
    joint.train()
    naive.train()
    unbatched = JointAttentionLSTM(cfg, *shape, batched_weight_grad=False).to(device)
    unbatched.load_state_dict(joint.state_dict())
    models = {
        "joint": (joint, maps),
        "lstm": (PlainLSTM(pooled.shape[-1], cfg, args.classes).to(device), pooled),
        "naive": (naive, maps),
        "joint-unbatched": (unbatched, maps),
    }
    models = {k: v for k, v in models.items() if k not in args.skip}

    print(
        f"device {device} (torch {torch.__version__}, {torch.get_num_threads()} threads);"
        f" B {args.batch}, T {args.steps},"
        f" hidden {args.hidden}, layers {args.layers}, {args.inputs} inputs of {args.channels} x {args.grid} x"
        f" {args.grid}, {args.fusion} fusion, {args.classes} classes"
    )
    print(f"naive vs joint, same weights, 4 steps: max |logit difference| = {diff:.2e}")
    seconds: dict[str, list[float]] = {k: [] for k in models}
    foreign: dict[str, list[float]] = {k: [] for k in models}
    names = list(models)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            model, inputs = models[name]
            s, f = time_training(model, inputs, target, args.iters, device)
            seconds[name].append(s)
            foreign[name].append(f)
    rate = {}
    for name in names:
        s = statistics.median(seconds[name])
        rate[name] = args.batch / s
        print(
            f"{name:>16}: {rate[name]:8.2f} clips/s  ({s * 1000:8.1f} ms/step, median of {len(seconds[name])};"
            f" foreign CPU {statistics.median(foreign[name]):.2f} cores)"
        )
    if "joint" in rate and "lstm" in rate:
        slow = rate["lstm"] / rate["joint"]
        print(f"joint / nn.LSTM slowdown: {slow:.2f}x  (goal <= 2.5x: {'met' if slow <= 2.5 else 'NOT met'})")
    if "joint" in rate and "naive" in rate:
        speed = rate["joint"] / rate["naive"]
        print(f"joint / naive speedup:    {speed:.2f}x  (goal >= 3x: {'met' if speed >= 3 else 'NOT met'})")
    if "joint" in rate and "joint-unbatched" in rate:
        print(f"batched weight gradients: {rate['joint'] / rate['joint-unbatched']:.2f}x faster than plain autograd")
    if args.json:
        args.json.write_text(json.dumps({
            "device": str(device), "clips_per_s": rate, "max_logit_difference": diff,
            "foreign_cores": {k: statistics.median(v) for k, v in foreign.items()},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
