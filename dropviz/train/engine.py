"""The training loop of one run, writing everything it learns to the runs database and the run folder.

One process runs one run (or, under ``torchrun``, one rank of it; rank 0 does all the writing). The run's
row in ``runs`` carries its status and a heartbeat the worker refreshes every second from a thread, so a
dashboard can tell a dead worker from a busy one; a cancel request set there stops the loop at the next step.

Speed: on CUDA the model runs channels-last under bf16 autocast, the dataset sits on the GPU with
augmentation done there (:class:`~dropviz.data.datasets.Batches`), and the loop synchronises with the host
only when it logs (every ``log_every`` steps), never per step. On the CPU, channels-last too, and freed
activations stay with the process (:func:`keep_freed_memory`).
"""
from __future__ import annotations

import ctypes
import math
import os
import platform
import sqlite3
import sys
import threading
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dropviz.data.datasets import Batches, DatasetError, channel_stats, load_split
from dropviz.models import build_model, regularizers
from dropviz.regularizers import LinearScheduler

from .config import ConfigError, RunConfig, class_folder_mismatch
from .db import RunsDB, run_dir
from .process import process_start_time

HEARTBEAT_S = 1.0
CHECKPOINT = "checkpoint.pt"
LOG = "log.txt"
WARMUP_FRACTION = 0.05


class Cancelled(Exception):
    pass


class LossStep(nn.Module):
    """``(x, y) -> (loss, logits)`` as one forward, so DistributedDataParallel sees the whole step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.loss(x, y, self.loss_fn)


def cpu_thread_share(threads: int, cpu_runs: int) -> int:
    """Threads for one of ``cpu_runs`` runs training at once on a CPU that each worker would use ``threads`` of.

    torch's OpenMP threads spin while they wait for each other, so runs that each take every core make
    each other wait at every parallel op: two tiny runs on this project's 2-core machine took 61 s for 20
    steps each with 2 threads apiece, against 1.9 s with one each."""
    return max(1, threads // max(cpu_runs, 1))


class Heartbeat:
    """Refreshes ``runs.heartbeat`` every second from a thread with its own connection, and notices a
    cancel request (from the database or SIGTERM) so the training loop can stop cleanly. With
    ``share_cpu``, it also counts the runs training on the CPU and sets :attr:`share` to this run's share of
    the threads the process started with (:func:`cpu_thread_share`) and that count, for the loop to take up."""

    def __init__(self, runs_dir: Path, run_id: str, share_cpu: bool = False):
        self.runs_dir, self.run_id = runs_dir, run_id
        self.all_threads = torch.get_num_threads() if share_cpu else None
        self.share: tuple[int, int] | None = None  # (threads, runs on the CPU), one value: set in one step
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="dropviz-heartbeat")

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        db = RunsDB(self.runs_dir)
        try:
            while True:
                try:
                    db.update_run(self.run_id, heartbeat=time.time())
                    run = db.run(self.run_id)
                    if run is None or run["cancel_requested"]:
                        self.cancelled.set()
                    if self.all_threads:
                        cpu_runs = db.running_on_cpu()
                        self.share = cpu_thread_share(self.all_threads, cpu_runs), cpu_runs
                except sqlite3.OperationalError:  # the database stayed locked past busy_timeout: beat again
                    pass
                if self._stop.wait(HEARTBEAT_S):
                    return
        finally:
            db.close()


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks of up to 256 MB (32 MB where it allows no more) for reuse rather than hand
    them back to the system; returns whether the settings took (False off glibc, where nothing happens).

    By default it returns a step's freed activations (a few MB each for ResNet-20 on the CPU, 32 MB for
    ResNet-18 at batch 128) and the next step takes them again as fresh pages: thousands of page faults per
    step, 3-4% of a ResNet-20 CPU training step measured here. Settings of this process only."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    # Setting either threshold stops glibc adjusting the other, so the trim threshold only once this took.
    if not any(libc.mallopt(m_mmap_threshold, size << 20) for size in (256, 32)):
        return False
    return bool(libc.mallopt(m_trim_threshold, 1 << 30))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_factor(step: int, total_steps: int) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to zero."""
    warmup = max(1, int(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))


def distributed(device: str = "auto") -> tuple[int, int]:
    """``(rank, world_size)``; when launched by ``torchrun``, starts the process group for the run's
    ``device`` (``--device``): NCCL with one GPU per process on CUDA, gloo on the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        on_gpu = resolve_device(device).type == "cuda"
        if on_gpu:
            local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local_rank >= gpus:
                raise ConfigError(f"torchrun started process {local_rank} of a node that has {gpus} GPU(s): start "
                                  f"at most {gpus} per node (--nproc-per-node), or train on the CPU (--device cpu)")
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return dist.get_rank(), world_size


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.SGD:
    """Nesterov SGD with momentum 0.9; on CUDA its fused kernel, one launch for all the parameters where the
    default takes several per group of them (a ResNet-20 step at batch 512 on an H100: 10.8 -> 10.4 ms eager,
    4.8 -> 4.1 ms as CUDA graphs)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay,
                           fused=device.type == "cuda")


def replays_as_cuda_graphs(step_module: nn.Module, device: torch.device, world_size: int = 1) -> bool:
    """Whether :func:`compile_step` records ``step_module`` as CUDA graphs: on one GPU, where every regularizer
    in it can be replayed so (its ``cuda_graphs``). Not under DistributedDataParallel, whose gradient buckets
    split the graph around collectives."""
    return device.type == "cuda" and world_size == 1 and all(m.cuda_graphs for m in regularizers(step_module))


def compile_step(step_module: nn.Module, device: torch.device, world_size: int = 1) -> nn.Module:
    """``torch.compile`` of a training step, as CUDA graphs (mode ``reduce-overhead``) where
    :func:`replays_as_cuda_graphs`. A ResNet-20 step is a few hundred small kernels whose launches the host
    cannot keep up with: at batch 512 on an H100 it took 10.8 ms eager, 12.3 ms compiled in the default mode
    (still one launch per kernel) and 4.8 ms replayed as a graph."""
    graphs = replays_as_cuda_graphs(step_module, device, world_size)
    return torch.compile(step_module, mode="reduce-overhead" if graphs else None)


def mixed_precision(device: torch.device):
    """The training step's autocast: bf16 on CUDA, none elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def training_step(step_module: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  autocast, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One update: ``step_module``'s loss and logits under ``autocast``, backward, optimizer step; returns the
    loss (detached) and the logits. ``compiled`` marks a new step for CUDA graphs first: from then on the last
    step's outputs may be overwritten."""
    if compiled:
        torch.compiler.cudagraph_mark_step_begin()
    with autocast:
        loss, logits = step_module(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits


def batch_sums(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[loss * n, correct]`` of a batch, on its device: summed there, read back only when logged."""
    return torch.stack([loss.float() * len(y), (logits.argmax(1) == y).sum().float()])


def train_run(runs_dir: str | Path, run_id: str, progress: bool | None = None) -> str:
    """Run (or continue, from its last checkpoint) the registered run ``run_id``; return its final status.

    Failures end up in the database (status ``failed`` and an error text), not as exceptions.
    """
    runs_dir = Path(runs_dir)
    folder = run_dir(runs_dir, run_id)
    writer = int(os.environ.get("RANK", "0")) == 0  # torchrun's global rank: rank 0 does all the writing
    db = RunsDB(runs_dir) if writer else None
    world_size = 1
    try:
        reader = db or RunsDB(runs_dir)
        config = reader.config(run_id)
        rank, world_size = distributed(config.device)
        if db:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(config.to_json())
            db.update_run(run_id, status="running", pid=os.getpid(), pid_start=process_start_time(os.getpid()),
                          heartbeat=time.time(), started=time.time(), finished=None, error=None)
        share_cpu = resolve_device(config.device).type == "cpu" and world_size == 1
        heartbeat = Heartbeat(runs_dir, run_id, share_cpu) if db else nullcontext()
        with heartbeat:
            _train(config, db, run_id, folder, rank, world_size, heartbeat, progress)
        status, error = "finished", None
    except (Cancelled, KeyboardInterrupt):  # a cancel request, Ctrl-C or SIGTERM
        status, error = "cancelled", None
    except (DatasetError, ConfigError) as problem:
        status, error = "failed", str(problem)
        print(f"error: {problem}", file=sys.stderr)
    except Exception:
        status, error = "failed", traceback.format_exc(limit=-8)
        traceback.print_exc()
    if db:
        db.update_run(run_id, status=status, error=error, finished=time.time())
        db.close()
    if world_size > 1:
        dist.destroy_process_group()
    return status


def _train(config: RunConfig, db: RunsDB | None, run_id: str, folder: Path, rank: int, world_size: int,
           heartbeat, progress: bool | None) -> None:
    device = resolve_device(config.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if device.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(config.seed)
    train_data = load_split(config.dataset, "train", config.data_dir, config.limit_train, config.seed)
    test_data = load_split(config.dataset, "test", config.data_dir, config.limit_test, config.seed)
    mismatch = class_folder_mismatch(config.data_dir, train_data.classes, test_data.classes)
    if mismatch:  # checked at launch; the folders may have changed since
        raise DatasetError(mismatch)
    mean, std = channel_stats(train_data)
    flip = config.dataset != "digits"  # a mirrored digit is another symbol
    train_batches = Batches(train_data, config.batch_size, device, mean, std, train=True, flip=flip,
                            seed=config.seed, shard=(rank, world_size))
    test_batches = Batches(test_data, 500, device, mean, std, train=False)
    if len(train_batches) == 0:
        raise ConfigError(f"--batch-size {config.batch_size} is larger than the {len(train_data)} training "
                          f"images{' per process' if world_size > 1 else ''}")

    model = build_model(config.model, num_classes=len(train_data.classes),
                        regularizer=config.regularizer, params=config.params,
                        dropcluster_after=config.dropcluster_after)
    model = model.to(device, memory_format=torch.channels_last)
    step_module = LossStep(model)
    if world_size > 1:
        step_module = nn.parallel.DistributedDataParallel(step_module)
    if config.compile:  # the step only: checkpoints and evaluation keep the plain model
        step_module = compile_step(step_module, device, world_size)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, device)
    steps_per_epoch = len(train_batches)
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps))
    drop_modules = regularizers(model)
    drop_schedules = [LinearScheduler(m, start_value=0.0, stop_value=m.drop_prob, nr_steps=total_steps)
                      for m in drop_modules] if config.schedule == "linear" else []

    checkpoint = folder / CHECKPOINT
    start_epoch = _load_checkpoint(checkpoint, model, optimizer, scheduler) if checkpoint.is_file() else 0
    for schedule in drop_schedules:  # the schedule is a function of the step: replay it to where we are
        for _ in range(start_epoch * steps_per_epoch):
            schedule.step()
    if db:
        db.forget_after(run_id, start_epoch)
        db.update_run(run_id, device=str(device) + (f" x{world_size}" if world_size > 1 else ""),
                      epoch=start_epoch, step=start_epoch * steps_per_epoch, total_steps=total_steps)

    autocast = mixed_precision(device)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, disable=not show or rank != 0,
               unit="step", desc=f"{config.model} {config.regularizer}")
    cancelled = getattr(heartbeat, "cancelled", threading.Event())
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, config.epochs):
        model.train()
        epoch_sums = torch.zeros(2, device=device)  # loss * n, correct: summed on the device, no sync
        window_sums = torch.zeros(2, device=device)
        epoch_n = window_n = 0
        window_start = time.perf_counter()
        for x, y in train_batches.epoch(epoch):
            _take_thread_share(heartbeat, bar)
            loss, logits = training_step(step_module, optimizer, x, y, autocast, config.compile)
            scheduler.step()
            for schedule in drop_schedules:
                schedule.step()
            sums = batch_sums(loss, logits, y)
            epoch_sums += sums
            window_sums += sums
            epoch_n += len(y)
            window_n += len(y)
            step += 1
            bar.update()
            if cancelled.is_set():
                raise Cancelled
            if db and (step % config.log_every == 0 or step % steps_per_epoch == 0):
                (loss_sum, correct), n = window_sums.tolist(), window_n  # the one host sync, every log_every steps
                elapsed = time.perf_counter() - window_start
                db.log_step(run_id, step, step / steps_per_epoch, train_loss=loss_sum / n, train_acc=correct / n,
                            lr=scheduler.get_last_lr()[0], drop_prob=_drop_prob(drop_modules),
                            images_per_s=n * world_size / elapsed)
                db.update_run(run_id, step=step)
                window_sums.zero_()
                window_n = 0
                window_start = time.perf_counter()
        (loss_sum, correct), n = epoch_sums.tolist(), epoch_n
        if rank == 0:
            test_loss, test_acc = evaluate(model, test_batches, autocast)
            db.log_epoch(run_id, epoch + 1, step, train_loss=loss_sum / n, train_acc=correct / n,
                         test_loss=test_loss, test_acc=test_acc, lr=scheduler.get_last_lr()[0],
                         drop_prob=_drop_prob(drop_modules), images_per_s=_epoch_speed(db, run_id, epoch + 1))
            _save_checkpoint(checkpoint, model, optimizer, scheduler, epoch + 1, step, config)
            db.update_run(run_id, epoch=epoch + 1, step=step)
            bar.set_postfix(test_acc=f"{test_acc:.3f}")
        if world_size > 1:
            dist.barrier()
    bar.close()


def _take_thread_share(heartbeat, bar: tqdm) -> None:
    """Between steps, run on the threads the heartbeat last found to be this run's share of the CPU."""
    share = getattr(heartbeat, "share", None)
    if share and share[0] != torch.get_num_threads():
        threads, cpu_runs = share
        bar.write(f"cpu threads: {threads} of {heartbeat.all_threads} ({cpu_runs} run{'s' * (cpu_runs != 1)} "
                  f"training on the CPU)", file=sys.stderr)
        torch.set_num_threads(threads)


def _drop_prob(modules: list[nn.Module]) -> float:
    """The current rate of the most-dropping regularizer (the chosen ``drop_prob`` once the ramp is done)."""
    return max((float(m.drop_prob) for m in modules), default=0.0)


def _epoch_speed(db: RunsDB, run_id: str, epoch: int) -> float | None:
    rows = [r["images_per_s"] for r in db.steps(run_id) if epoch - 1 < r["epoch"] <= epoch]
    return sum(rows) / len(rows) if rows else None


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, autocast=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) over ``batches``."""
    model.eval()
    sums, n = torch.zeros(2, device=batches.device), 0
    for x, y in batches.epoch():
        with autocast or nullcontext():
            logits = model(x)
        sums += torch.stack([nn.functional.cross_entropy(logits.float(), y, reduction="sum"),
                             (logits.argmax(1) == y).sum().float()])
        n += len(y)
    loss_sum, correct = sums.tolist()
    return loss_sum / n, correct / n


def _load_checkpoint(path: Path, model, optimizer, scheduler) -> int:
    """Restore what :func:`_save_checkpoint` wrote; return the number of epochs done."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["lr_scheduler"])
    torch.set_rng_state(state["rng"])
    device = next(model.parameters()).device
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return state["epoch"]


def _save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, step: int, config: RunConfig) -> None:
    """Tensors, numbers and strings only (``torch.load(weights_only=True)`` reads it), written atomically."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "lr_scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch, "step": step,
             "config": config.to_json()}
    device = next(model.parameters()).device
    if device.type == "cuda":  # dropout draws on the GPU use its generator
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
