"""Forward+backward time of every dropviz regularizer against its peers, measured in the same run.

    PYTHONPATH=. .venv/bin/python bench/ops.py                 # (128, 64, 32, 32) float32, p=0.1, k=5, CPU
    PYTHONPATH=. .venv/bin/python bench/ops.py --device cuda

Prints the median milliseconds of ``--repeats`` rounds (after warm-up; in each round every method runs once,
in turn) and the median over rounds of the ratio to F.dropout's time in the same round.
Peers: torch.nn.functional.dropout, torchvision.ops.drop_block2d and timm's DropBlock2d with one mask per
channel (``couple_channels=False``), each when installed.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from dropviz.regularizers import (Disout, DropBlock2d, DropCluster, Dropout, DropPath, MultiSampleDropout,
                                  ProbDropBlock2d)


def cases(p: float, k: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    found: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "F.dropout (peer)": lambda x: F.dropout(x, p, training=True),
    }
    try:
        from torchvision.ops import drop_block2d
        found["torchvision drop_block2d (peer)"] = lambda x: drop_block2d(x, p, k)
    except ImportError:
        pass
    try:
        from timm.layers import DropBlock2d as TimmDropBlock2d
        found["timm DropBlock2d per-channel (peer)"] = TimmDropBlock2d(p, k, couple_channels=False).train()
    except ImportError:
        pass
    ours = {
        "dropviz Dropout": Dropout(p),
        "dropviz DropPath": DropPath(p),
        "dropviz DropBlock2d (per channel)": DropBlock2d(p, k),
        "dropviz DropBlock2d (share_channels)": DropBlock2d(p, k, share_channels=True),
        "dropviz Disout": Disout(p, k),
        "dropviz ProbDropBlock2d": ProbDropBlock2d(p, k),
        "dropviz DropCluster (grid, 16)": DropCluster(p, 16, refit_every=0),
        "dropviz MultiSampleDropout (identity head, 4)": MultiSampleDropout(torch.nn.Identity(), 4, p),
    }
    found.update({name: module.train() for name, module in ours.items()})
    return found


def time_rounds(fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, grad: torch.Tensor,
                repeats: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds of one forward+backward per method per round. The methods take turns within each
    round, so load from other processes on a shared machine hits them alike."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)

    def step(fn) -> float:
        x.grad = None
        sync()
        start = time.perf_counter()
        fn(x).backward(grad)
        sync()
        return (time.perf_counter() - start) * 1000

    for fn in fns.values():
        for _ in range(warmup):
            step(fn)
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            rounds[name].append(step(fn))
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=4, default=(128, 64, 32, 32))
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", default=None, help="substrings of the case names to run")
    args = parser.parse_args()

    device = torch.device(args.device)
    x = torch.randn(*args.shape, device=device, requires_grad=True)
    grad = torch.randn(*args.shape, device=device)
    selected = {name: fn for name, fn in cases(args.p, args.k).items()
                if name.startswith("F.dropout") or not args.only or any(s in name for s in args.only)}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"forward+backward, shape {tuple(args.shape)} float32, p={args.p}, k={args.k}, {where}, "
          f"median of {args.repeats} interleaved rounds")
    rounds = time_rounds(selected, x, grad, args.repeats, args.warmup)
    reference = rounds["F.dropout (peer)"]
    width = max(map(len, rounds))
    print(f"| {'method':<{width}} | {'ms':>8} | {'x F.dropout':>11} |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}|{'-' * 13}|")
    for name, times in rounds.items():
        ratio = statistics.median(t / r for t, r in zip(times, reference))  # per round, then the median
        print(f"| {name:<{width}} | {statistics.median(times):8.1f} | {ratio:11.2f} |")


if __name__ == "__main__":
    main()
