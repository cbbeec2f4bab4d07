"""Training-step throughput of ResNet-20 on CIFAR-sized batches with each regularizer, against none.

    PYTHONPATH=. .venv/bin/python bench/train.py                      # CPU, batch 128, all threads
    PYTHONPATH=. .venv/bin/python bench/train.py --device cuda         # bf16 autocast, channels-last

Models take turns one training step at a time (forward, loss, backward, SGD update, drop-rate schedule step:
what ``python -m dropviz.train`` does per step, with its memory settings), so a busy machine slows all alike.
Images/s come from each model's median step time; the overhead is the median over rounds of a step's time
over ``none``'s in the same round, minus 1, with a distribution-free 95% confidence interval for that median
(order statistics), so a reader can tell a difference from the machine's noise.
Regularizers sit where :mod:`dropviz.models.placement` puts them, with their registry defaults.
Goal: under 5% overhead on CPU for every method but DropCluster; on the CPU a last column says whether the
interval shows it met (all of it below 5%), missed (all of it above) or neither (it reaches across 5%).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from dropviz.models import build_model, regularizers
from dropviz.regularizers import LinearScheduler
from dropviz.train.engine import (LossStep, compile_step, keep_freed_memory, make_optimizer, mixed_precision,
                                  training_step)
from dropviz.train.config import regularizer_names


def make_step(name: str, device: torch.device, batch_size: int, compile: bool = False):
    torch.manual_seed(0)
    model = build_model("resnet20", regularizer=name).to(device, memory_format=torch.channels_last).train()
    optimizer = make_optimizer(model, lr=0.05, weight_decay=5e-4, device=device)
    loss_step = compile_step(LossStep(model), device) if compile else LossStep(model)
    # Held at the full rate (the end of the ramp, and `--schedule constant`): a ramp from 0 over a short
    # benchmark would time near-empty masks. The scheduler still steps, as in training.
    schedules = [LinearScheduler(m, m.drop_prob, m.drop_prob, 1) for m in regularizers(model)]
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    autocast = mixed_precision(device)

    def step() -> None:
        training_step(loss_step, optimizer, x, y, autocast, compile)
        for schedule in schedules:
            schedule.step()

    return step


def timed(step, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The median of ``values`` and a confidence interval for the population median that assumes nothing about
    the distribution: order statistics ``k`` and ``n + 1 - k`` (1-based), the largest ``k`` with
    ``P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2``; the whole range where ``n`` is too small for that."""
    ordered, n = sorted(values), len(values)
    below, k = 0.0, 0
    while below + math.comb(n, k) / 2**n <= (1 - confidence) / 2:
        below += math.comb(n, k) / 2**n
        k += 1
    k = max(k, 1)
    return statistics.median(ordered), ordered[k - 1], ordered[n - k]


CPU_GOAL = 0.05
NO_GOAL = ("none", "dropcluster")  # the baseline, and the one method the goal leaves out


def verdict(low: float, high: float, goal: float = CPU_GOAL) -> str:
    """What an overhead's confidence interval ``[low, high]`` shows of the goal ``overhead < goal``."""
    if high < goal:
        return "met"
    if low > goal:
        return "missed"
    return "unclear"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile each model's step, as the training "
                        "command's --compile does (CUDA graphs on a GPU); compiling takes a minute or so per model")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    steps = {name: make_step(name, device, args.batch_size, args.compile) for name in regularizer_names()}
    for step in steps.values():
        timed(step, args.warmup, device)
    seconds = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            seconds[name].append(timed(step, 1, device))
    print(f"ResNet-20 training steps, batch {args.batch_size}, {device} ({torch.get_num_threads()} threads), "
          f"{args.steps} rounds{', compiled' if args.compile else ''}")
    on_cpu = device.type == "cpu"
    print(f"{'regularizer':<14} {'images/s':>9} {'overhead vs none':>17} {'95% interval':>18}"
          + (f"  goal <{CPU_GOAL:.0%}" if on_cpu else ""))
    for name, times in seconds.items():
        ratios = [own / plain for own, plain in zip(times, seconds["none"])]  # round by round
        overhead, low, high = (r - 1 for r in median_interval(ratios))
        goal = ("-" if name in NO_GOAL else verdict(low, high)) if on_cpu else ""
        print(f"{name:<14} {args.batch_size / statistics.median(times):>9.0f} {overhead:>+16.1%} "
              f"{low:>+8.1%} to {high:>+6.1%}  {goal}".rstrip())


if __name__ == "__main__":
    main()
