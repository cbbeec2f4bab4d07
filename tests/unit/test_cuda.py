"""On a CUDA device a training step must never make the host wait for the GPU: the engine synchronises only
when it logs, so a regularizer (or the GPU data pipeline) that reads a value back per step would stall every
step on the launch queue. Skipped where there is no CUDA device; run on one with `pytest tests/unit/test_cuda.py`."""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch import nn

from dropviz.data.datasets import Batches, ImageData
from dropviz.models import build_model, regularizers
from dropviz.regularizers import LinearScheduler
from dropviz.train.config import regularizer_names

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# DropCluster fits its clusters on activations read back to the host: that is its method, not a slip.
NO_WAIT = [name for name in regularizer_names() if name != "dropcluster"]


@contextmanager
def no_host_sync():
    """Any operation that synchronises the host with the GPU raises inside the block."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _training_step(name: str):
    torch.manual_seed(0)
    model = build_model("resnet20", regularizer=name).cuda().to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedules = [LinearScheduler(m, 0.0, m.drop_prob, 10) for m in regularizers(model)]
    loss_fn = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = model.loss(x, y, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for schedule in schedules:
            schedule.step()
        return loss.detach()

    return step


@pytest.mark.parametrize("name", NO_WAIT)
def test_cuda_training_step_never_waits_for_the_host(name):
    step = _training_step(name)
    x = torch.randn(32, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,), device="cuda")
    for _ in range(2):  # lazy initialisation (cuDNN plans, optimizer state) may wait; steps after it may not
        step(x, y)
    with no_host_sync():
        losses = [step(x, y) for _ in range(3)]
    assert torch.isfinite(torch.stack(losses)).all()


def test_cuda_batches_never_wait_for_the_host():
    generator = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=generator),
                     torch.randint(0, 10, (300,), generator=generator), [str(c) for c in range(10)])
    batches = Batches(data, 64, torch.device("cuda"), torch.full((3,), 0.5), torch.full((3,), 0.25), train=True)
    with no_host_sync():
        shapes = [x.shape for x, _ in batches.epoch(1)]
    assert shapes == [(64, 3, 32, 32)] * 4
