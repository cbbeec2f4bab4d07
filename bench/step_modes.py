"""Time of one step of the training loop, eager against compiled, on the batches the engine trains on.

    PYTHONPATH=. python bench/step_modes.py --device cuda --batch-size 512 1024

Each mode runs the engine's loop body (GPU-side augmentation of a uint8 dataset, forward and loss under bf16
autocast, backward, the engine's SGD, the learning-rate step, the on-device accuracy sums) for ``--steps`` steps
after a warm-up that includes compiling: ``eager``; ``compiled``, torch.compile's default mode; ``graphs``, its
``reduce-overhead`` mode (CUDA graphs), which ``--compile`` uses on one GPU where the regularizer allows it.
Prints ms per step, images/s and the ratio to eager at the same batch size: on a GPU a small model's eager step
is bound by the host's kernel launches, which is what the compiled modes are meant to remove.
"""
from __future__ import annotations

import argparse
import time
import torch

from dropviz.data.datasets import Batches, ImageData
from dropviz.models import build_model
from dropviz.train.engine import LossStep, batch_sums, lr_factor, make_optimizer, mixed_precision, training_step

MODES = {"eager": None, "compiled": "default", "graphs": "reduce-overhead"}


def step_seconds(mode: str, regularizer: str, batches: Batches, steps: int, warmup: int) -> float:
    """Mean wall time of a step in ``mode``, after ``warmup`` steps (compiling and recording happen there)."""
    device = batches.device
    torch.manual_seed(0)
    model = build_model("resnet20", regularizer=regularizer).to(device, memory_format=torch.channels_last)
    loss_step = LossStep(model)
    if MODES[mode] is not None:
        loss_step = torch.compile(loss_step, mode=MODES[mode])
    optimizer = make_optimizer(model, lr=0.1, weight_decay=5e-4, device=device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, 10 * (steps + warmup)))
    autocast = mixed_precision(device)
    sums = torch.zeros(2, device=device)
    batch_stream = (batch for epoch in range(10**6) for batch in batches.epoch(epoch))

    def run(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _, (x, y) in zip(range(n), batch_stream):
            loss, logits = training_step(loss_step, optimizer, x, y, autocast, compiled=MODES[mode] is not None)
            scheduler.step()
            sums.add_(batch_sums(loss, logits, y))
        sums.tolist()  # the engine's host sync when it logs
        return (time.perf_counter() - start) / n

    run(warmup)
    return run(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[512])
    parser.add_argument("--regularizer", default="none")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=None,
                        help="default: all on CUDA, eager and compiled on the CPU (no CUDA graphs there)")
    parser.add_argument("--images", type=int, default=50_000, help="size of the random uint8 dataset")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    modes = args.modes or (list(MODES) if device.type == "cuda" else ["eager", "compiled"])
    generator = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=generator),
                     torch.randint(0, 10, (args.images,), generator=generator), [str(c) for c in range(10)])
    print(f"ResNet-20 ({args.regularizer}) training steps on {device}, {args.steps} steps after {args.warmup}")
    print(f"{'mode':<9} {'batch':>6} {'ms/step':>8} {'images/s':>9} {'x eager':>8}")
    for batch_size in args.batch_size:
        batches = Batches(data, batch_size, device, torch.full((3,), 0.5), torch.full((3,), 0.25), train=True)
        eager = None
        for mode in modes:
            seconds = step_seconds(mode, args.regularizer, batches, args.steps, args.warmup)
            eager = seconds if mode == "eager" else eager
            ratio = f"{eager / seconds:>8.2f}" if eager else ""
            print(f"{mode:<9} {batch_size:>6} {seconds * 1e3:>8.2f} {batch_size / seconds:>9.0f} {ratio}".rstrip())


if __name__ == "__main__":
    main()
