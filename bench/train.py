"""Training-step throughput of ResNet-20 on CIFAR-sized batches with each regularizer, against none.

    PYTHONPATH=. .venv/bin/python bench/train.py                      # CPU, batch 128, all threads
    PYTHONPATH=. .venv/bin/python bench/train.py --device cuda         # bf16 autocast, channels-last

Models take turns one training step at a time (forward, loss, backward, SGD update, drop-rate schedule step:
what ``python -m dropviz.train`` does per step, with its memory settings), so a busy machine slows all alike; each model's figure is
the median step time over ``--steps`` steps, and the overhead is ``median / median(none) - 1``.
Regularizers sit where :mod:`dropviz.models.placement` puts them, with their registry defaults.
Goal: under 5% overhead on CPU for every method but DropCluster.
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
from torch import nn

from dropviz.models import build_model, regularizers
from dropviz.regularizers import LinearScheduler
from dropviz.train.engine import keep_freed_memory
from dropviz.train.config import regularizer_names


def make_step(name: str, device: torch.device, batch_size: int):
    torch.manual_seed(0)
    model = build_model("resnet20", regularizer=name).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    # Held at the full rate (the end of the ramp, and `--schedule constant`): a ramp from 0 over a short
    # benchmark would time near-empty masks. The scheduler still steps, as in training.
    schedules = [LinearScheduler(m, m.drop_prob, m.drop_prob, 1) for m in regularizers(model)]
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast:
            loss, _ = model.loss(x, y, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    steps = {name: make_step(name, device, args.batch_size) for name in regularizer_names()}
    for step in steps.values():
        timed(step, args.warmup, device)
    seconds = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            seconds[name].append(timed(step, 1, device))
    base = statistics.median(seconds["none"])
    print(f"ResNet-20 training steps, batch {args.batch_size}, {device} ({torch.get_num_threads()} threads), "
          f"median of {args.steps} steps each")
    print(f"{'regularizer':<14} {'images/s':>9} {'overhead vs none':>17}")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"{name:<14} {args.batch_size / median:>9.0f} {median / base - 1:>+16.1%}")


if __name__ == "__main__":
    main()
