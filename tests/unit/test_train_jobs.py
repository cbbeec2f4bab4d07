"""Background runs as separate processes: killed workers, concurrent runs, the queue, cancel, delete, read-only."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dropviz.train import JobManager, ReadOnlyError, RunConfig
from dropviz.train.engine import lr_factor

TINY = dict(dataset="digits", limit_test=64, batch_size=32, log_every=1, device="cpu")


@pytest.fixture(autouse=True)
def one_thread_per_worker(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # workers inherit it: two cores are shared by everything here
    monkeypatch.delenv("DROPVIZ_READONLY", raising=False)


def wait_for(manager: JobManager, run_id: str, condition, timeout: float = 120.0) -> dict:
    """Poll like the dashboard does until ``condition(run)`` holds (the timeout only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = next(r for r in manager.runs() if r["id"] == run_id)
        if condition(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run never reached the condition: {run}\n{manager.log_tail(run_id)}")


def test_sigkill_mid_epoch_fails_the_run_keeps_its_metrics_and_resume_finishes(tmp_path):
    manager = JobManager(tmp_path, max_running=1)
    run_id = manager.launch(RunConfig(epochs=3, limit_train=1024, **TINY))
    run = wait_for(manager, run_id, lambda r: r["epoch"] >= 1 and r["step"] >= 40)  # 32 steps per epoch
    os.kill(run["pid"], signal.SIGKILL)
    while Path(f"/proc/{run['pid']}/stat").read_text().split(") ")[1][0] != "Z":  # dead (a zombie: we are its parent)
        time.sleep(0.05)
    # the very next poll notices: it checks the process, it does not wait for the heartbeat to go stale
    assert manager.reap() == [run_id]
    failed = manager.run(run_id)
    assert failed["status"] == "failed" and "SIGKILL" in failed["error"]
    logged = manager.db.steps(run_id)
    assert logged and logged[-1]["step"] >= 40 and len(manager.db.epochs(run_id)) >= 1

    manager.resume(run_id)
    done = wait_for(manager, run_id, lambda r: r["status"] in ("finished", "failed"))
    assert done["status"] == "finished", (done["error"], manager.log_tail(run_id))
    steps = [row["step"] for row in manager.db.steps(run_id)]
    assert steps == list(range(1, 3 * 32 + 1))  # every step once: nothing lost, nothing doubled
    assert [e["epoch"] for e in manager.db.epochs(run_id)] == [1, 2, 3]


# fields 48 and 49 of /proc/PID/stat (proc(5)): where the kernel reads the process's command line from
BLANK_OWN_COMMAND_LINE = """
import ctypes, time
fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
arg_start, arg_end = int(fields[45]), int(fields[46])
ctypes.memset(arg_start, 0, arg_end - arg_start)
print("blank", flush=True)
time.sleep(120)
"""


def test_a_worker_the_kernel_is_still_starting_is_not_called_dead(tmp_path):
    """Popen returns, and the pid is recorded, before the kernel has set up the new program's arguments, so the
    first poll after a launch or resume can find the worker with a blank command line. A process that blanks its
    own command line stands in for that moment (which lasts microseconds, too short to hit on purpose)."""
    manager = JobManager(tmp_path)
    run_id = manager.db.create_run(RunConfig(**TINY), status="starting")
    with subprocess.Popen([sys.executable, "-c", BLANK_OWN_COMMAND_LINE], stdout=subprocess.PIPE) as process:
        try:
            assert process.stdout.readline() == b"blank\n"
            assert Path(f"/proc/{process.pid}/cmdline").read_bytes().strip(b"\0") == b""
            manager.db.update_run(run_id, pid=process.pid)
            assert manager.reap() == [] and manager.run(run_id)["status"] == "starting"
        finally:
            process.kill()
    assert manager.reap() == [run_id]  # once it is gone, the next poll says so


def test_two_runs_at_once_keep_their_metrics_apart(tmp_path):
    manager = JobManager(tmp_path, max_running=2)
    lrs = {manager.launch(RunConfig(epochs=2, limit_train=320, lr=lr, **TINY)): lr for lr in (0.05, 0.2)}
    most_running = 0
    for run_id in lrs:
        def finished(run):
            nonlocal most_running
            most_running = max(most_running, sum(r["status"] == "running" for r in manager.runs()))
            return run["status"] in ("finished", "failed")
        wait_for(manager, run_id, finished)
    assert most_running == 2  # they did run at the same time
    total = 2 * 10
    for run_id, lr in lrs.items():
        run, steps = manager.run(run_id), manager.db.steps(run_id)
        assert run["status"] == "finished", run["error"]
        assert [s["step"] for s in steps] == list(range(1, total + 1))
        # each row carries its own run's learning rate schedule: rows were neither lost nor swapped
        assert [s["lr"] for s in steps] == pytest.approx([lr * lr_factor(s, total) for s in range(1, total + 1)])
        assert len(manager.db.epochs(run_id)) == 2


def test_queue_bound_cancel_delete_and_read_only(tmp_path, monkeypatch):
    manager = JobManager(tmp_path, max_running=1)
    first = manager.launch(RunConfig(epochs=50, limit_train=512, **TINY))
    second = manager.launch(RunConfig(epochs=1, limit_train=64, **TINY))
    statuses = {r["id"]: r["status"] for r in manager.runs()}
    assert statuses == {first: "starting", second: "queued"}

    manager.cancel(second)
    assert manager.run(second)["status"] == "cancelled"
    with pytest.raises(ValueError, match="cancel it before deleting"):
        manager.delete(first)
    wait_for(manager, first, lambda r: r["step"] >= 1)
    manager.cancel(first)
    assert wait_for(manager, first, lambda r: r["status"] != "running")["status"] == "cancelled"

    monkeypatch.setenv("DROPVIZ_READONLY", "1")
    for action in (manager.delete, manager.cancel, manager.resume):
        with pytest.raises(ReadOnlyError):
            action(first)
    with pytest.raises(ReadOnlyError):
        manager.launch(RunConfig(**TINY))
    monkeypatch.delenv("DROPVIZ_READONLY")

    manager.delete(first)
    assert manager.run(first) is None and not (tmp_path / first).exists() and manager.db.steps(first) == []
    assert [r["id"] for r in manager.runs()] == [second]
    with pytest.raises(ValueError, match="not a run id"):
        manager.delete("../" + second)
