"""On a CUDA device a training step must never make the host wait for the GPU: the engine synchronises only
when it logs, so a regularizer (or the GPU data pipeline) that reads a value back per step would stall every
step on the launch queue. Skipped where there is no CUDA device; run on one with `pytest tests/unit/test_cuda.py`."""
from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from dropviz.data.datasets import Batches, ImageData
from dropviz.train.config import regularizer_names

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_train", ROOT / "bench" / "train.py")
bench_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_train)

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


def test_no_host_sync_catches_a_read_back():
    with pytest.raises(RuntimeError), no_host_sync():
        torch.ones(3, device="cuda").sum().item()


@pytest.mark.parametrize("name", NO_WAIT)
def test_cuda_training_step_never_waits_for_the_host(name):
    # bench/train.py's step: forward under bf16 autocast, backward, SGD, schedules, each method at its full rate
    step = bench_train.make_step(name, torch.device("cuda"), batch_size=32)
    for _ in range(2):  # lazy initialisation (cuDNN plans, optimizer state) may wait; steps after it may not
        step()
    with no_host_sync():
        for _ in range(3):
            step()


def test_cuda_batches_never_wait_for_the_host():
    generator = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=generator),
                     torch.randint(0, 10, (300,), generator=generator), [str(c) for c in range(10)])
    batches = Batches(data, 64, torch.device("cuda"), torch.full((3,), 0.5), torch.full((3,), 0.25), train=True)
    with no_host_sync():
        shapes = [x.shape for x, _ in batches.epoch(1)]
    assert shapes == [(64, 3, 32, 32)] * 4


def test_a_compiled_step_replays_as_cuda_graphs_and_never_waits_for_the_host():
    # `--compile` on one GPU: the step's kernels recorded once and replayed as CUDA graphs (a plain compiled
    # step is still bound by its launches). Inductor's graph manager holds the recorded graphs; a graph it had
    # to skip counts in its counters.
    from torch._dynamo.utils import counters
    from torch._inductor.cudagraph_trees import get_manager

    counters.clear()
    step = bench_train.make_step("none", torch.device("cuda"), batch_size=32, compile=True)
    for _ in range(3):  # compile, record, replay
        step()
    manager = get_manager(torch.cuda.current_device(), create_if_none_exists=False)
    assert manager is not None and manager.roots and counters["inductor"]["cudagraph_skips"] == 0
    with no_host_sync():
        for _ in range(3):
            step()


@pytest.mark.parametrize("name", regularizer_names())
def test_a_compiled_step_trains_with_every_regularizer(name):
    # CUDA graphs where the regularizers allow them (Regularizer.cuda_graphs), the default mode elsewhere: either
    # way the step must compile and keep running (DropBlock, Disout and DropCluster failed as graphs)
    step = bench_train.make_step(name, torch.device("cuda"), batch_size=32, compile=True)
    for _ in range(5):  # compile, record, replay
        step()
    torch.cuda.synchronize()
