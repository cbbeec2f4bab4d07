"""The training engine: it learns real CIFAR-10, logs to SQLite, and resumes exactly where it stopped."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from dropviz.data.datasets import Batches
from dropviz.models import build_model
from dropviz.train import ConfigError, RunConfig, RunsDB, engine, train_run
from dropviz.train.config import regularizer_names
from dropviz.train.engine import CHECKPOINT, LossStep, replays_as_cuda_graphs


def _register(runs_dir, **settings) -> str:
    return RunsDB(runs_dir).create_run(RunConfig(**settings).validate(), status="starting")


@pytest.mark.slow
def test_resnet20_learns_cifar10_in_three_epochs_on_cpu(tmp_path, cifar10_dir):
    # 4,000 training images, 3 epochs: a plain ResNet-20 reaches ~33-37% here; chance is 10%. 2,000 test
    # images give a standard error of ~1 point, so 25% is a clear bar that an untrained net never passes.
    run_id = _register(tmp_path, model="resnet20", dataset="imagefolder", data_dir=str(cifar10_dir), epochs=3,
                       limit_train=4000, limit_test=2000, device="cpu")
    assert train_run(tmp_path, run_id, progress=False) == "finished"
    db = RunsDB(tmp_path)
    epochs = db.epochs(run_id)
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["test_acc"] >= 0.25
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    run = db.run(run_id)
    assert run["status"] == "finished" and run["step"] == run["total_steps"] == 3 * (4000 // 128)


def test_resume_continues_exactly_where_the_checkpoint_left_off(tmp_path, monkeypatch):
    settings = dict(dataset="digits", epochs=2, limit_train=192, limit_test=64, batch_size=64, log_every=1,
                    regularizer="dropout", params={"drop_prob": 0.3}, device="cpu")
    straight = _register(tmp_path, **settings)
    assert train_run(tmp_path, straight, progress=False) == "finished"

    interrupted = _register(tmp_path, **settings)
    real_epoch = Batches.epoch

    def crash_in_second_epoch(self, epoch=0):
        if self.train and epoch == 1:
            raise RuntimeError("simulated crash")
        return real_epoch(self, epoch)

    monkeypatch.setattr(Batches, "epoch", crash_in_second_epoch)
    assert train_run(tmp_path, interrupted, progress=False) == "failed"
    db = RunsDB(tmp_path)
    assert "simulated crash" in db.run(interrupted)["error"]
    state = torch.load(tmp_path / interrupted / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1 and RunConfig.from_dict(json.loads(state["config"])).epochs == 2

    monkeypatch.setattr(Batches, "epoch", real_epoch)
    assert train_run(tmp_path, interrupted, progress=False) == "finished"
    for table in (db.steps, db.epochs):
        a, b = table(straight), table(interrupted)
        assert len(a) == len(b)
        for row_a, row_b in zip(a, b):
            for key in set(row_a) - {"run_id", "time", "images_per_s"}:
                assert row_a[key] == pytest.approx(row_b[key], rel=1e-5), (key, row_a, row_b)
    assert db.epochs(straight)[-1]["drop_prob"] == pytest.approx(0.3)  # the linear ramp reached its value


def test_dropcluster_trains_after_the_chosen_stage_and_a_resume_rebuilds_it_there(tmp_path):
    run_id = _register(tmp_path, dataset="digits", epochs=1, limit_train=64, limit_test=32, batch_size=32,
                       regularizer="dropcluster", dropcluster_after="stage2", device="cpu")
    assert train_run(tmp_path, run_id, progress=False) == "finished"
    state = torch.load(tmp_path / run_id / CHECKPOINT, weights_only=True)
    labels = [key for key in state["model"] if key.endswith("labels")]
    assert labels == ["stages.stage2.3.labels"]  # after the 3 blocks of ResNet-20's stage 2
    assert state["model"][labels[0]].shape == (32, 16, 16)  # laid out on stage 2's maps
    # A resume builds the model from the stored settings and loads the checkpoint strictly: a DropCluster
    # rebuilt at the stem would not take the stage-2 labels and the run would fail.
    assert train_run(tmp_path, run_id, progress=False) == "finished"
    assert RunsDB(tmp_path).run(run_id)["error"] is None

    # What the README says of its weights in the plain model: all of them fit, the label map is the one key more
    plain = build_model("resnet20", num_classes=10)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "stages.stage2.3.labels"'):
        plain.load_state_dict(state["model"])
    loaded = plain.load_state_dict(state["model"], strict=False)
    assert loaded.missing_keys == [] and loaded.unexpected_keys == labels
    plain.load_state_dict({key: value for key, value in state["model"].items() if not key.endswith(".labels")})


@pytest.mark.slow
def test_compiled_steps_are_cuda_graphs_on_one_gpu_with_methods_that_ran_as_graphs():
    # Found on an H100: DropBlock, ProbDropBlock, Disout and DropCluster fail as CUDA graphs; the others ran
    for name in regularizer_names():
        step = LossStep(build_model("resnet20", regularizer=name))
        graphs = replays_as_cuda_graphs(step, torch.device("cuda"))
        assert graphs is (name in ("none", "dropout", "droppath", "multisample")), name
        assert not replays_as_cuda_graphs(step, torch.device("cpu"))
        assert not replays_as_cuda_graphs(step, torch.device("cuda"), world_size=2)


def test_a_compiled_run_with_a_ramped_rate_compiles_its_step_once(tmp_path):
    """``--compile``: the step is compiled once (the rate changes at every step of the linear ramp; it is a value
    in the graph, not a constant that would recompile it each step), the run finishes with its metrics, and the
    checkpoint holds the plain model's keys (a compiled module's would carry ``_orig_mod.``)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    run_id = _register(tmp_path, dataset="digits", epochs=2, limit_train=96, limit_test=64, batch_size=32,
                       log_every=1, regularizer="dropblock", device="cpu", compile=True)
    assert train_run(tmp_path, run_id, progress=False) == "finished"
    steps = RunsDB(tmp_path).steps(run_id)
    assert len(steps) == 6 and len({row["drop_prob"] for row in steps}) == 6
    # The first compile and the one that makes the rate a value; a graph per rate made 34 here before.
    assert 0 < counters["stats"]["unique_graphs"] <= 3
    state = torch.load(tmp_path / run_id / CHECKPOINT, weights_only=True)
    build_model("resnet20", num_classes=10, regularizer="dropblock").load_state_dict(state["model"])


def test_missing_dataset_fails_the_run_with_a_message(tmp_path):
    # launches check the folder; this one vanished after the launch
    run_id = RunsDB(tmp_path).create_run(RunConfig(dataset="imagefolder", data_dir=str(tmp_path / "gone"), epochs=1))
    assert train_run(tmp_path, run_id, progress=False) == "failed"
    error = RunsDB(tmp_path).run(run_id)["error"]
    assert "no folder" in error and "Traceback" not in error


def _fake_torchrun(monkeypatch, local_rank: int, gpus: int) -> list[str]:
    """torchrun's environment for process ``local_rank`` of two, on a machine with ``gpus`` GPUs; returns the
    backends the process group is started with (and GPUs selected) instead of starting it."""
    started: list[str] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: started.append(f"cuda:{index}"))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", started.append)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: local_rank)
    return started


@pytest.mark.parametrize("device, expected", [("cpu", ["gloo"]), ("auto", ["cuda:1", "nccl"]),
                                              ("cuda", ["cuda:1", "nccl"])])
def test_torchrun_backend_follows_the_device(monkeypatch, device, expected):
    started = _fake_torchrun(monkeypatch, local_rank=1, gpus=2)
    assert engine.distributed(device) == (1, 2)
    assert started == expected


def test_torchrun_with_more_processes_than_gpus_is_refused_with_a_way_out(monkeypatch):
    started = _fake_torchrun(monkeypatch, local_rank=1, gpus=1)
    with pytest.raises(ConfigError, match=r"1 GPU\(s\).*--nproc-per-node.*--device cpu"):
        engine.distributed("auto")
    assert started == []


def test_torchrun_two_processes_make_one_run(tmp_path):
    # DistributedDataParallel with the gloo backend on CPU: each process trains on half of every epoch.
    result = subprocess.run(  # --standalone: a rendezvous on a free port, as the README's command
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "dropviz.train", "--dataset", "digits", "--limit-train", "256", "--limit-test", "64", "--epochs", "1",
         "--batch-size", "32", "--log-every", "1", "--device", "cpu", "--runs-dir", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    [run] = RunsDB(tmp_path).runs()
    assert run["status"] == "finished" and run["device"] == "cpu x2"
    assert run["total_steps"] == 256 // 2 // 32  # steps per process
    assert len(RunsDB(tmp_path).steps(run["id"])) == 4 and len(RunsDB(tmp_path).epochs(run["id"])) == 1


_PAGE_FAULTS_PER_ROUND = """
import resource, torch
from dropviz.train.engine import keep_freed_memory
assert keep_freed_memory()
def allocate_and_free():  # a training step's activations, in miniature
    tensors = [torch.ones(2 << 20) for _ in range(16)] + [torch.ones(16 << 20) for _ in range(2)]  # 16 x 8, 2 x 64 MB
    del tensors
for _ in range(3):
    allocate_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    allocate_and_free()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_freed_activations_are_reused_without_page_faults():
    # Without the settings glibc often hands such memory back and faults it in again on the next round (whether
    # it does depends on what else sits on the heap; ResNet-20 training steps took 3800-9000 faults each here).
    out = subprocess.run([sys.executable, "-c", _PAGE_FAULTS_PER_ROUND], capture_output=True, text=True, check=True)
    pages = 256 * 2**20 / os.sysconf("SC_PAGE_SIZE")
    assert float(out.stdout) < pages / 100
