"""Background runs as separate processes: killed workers, concurrent runs, the queue, cancel, delete, read-only."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dropviz.train import (JobManager, ReadOnlyError, RunConfig, RunsDB, RunsDirError, process_start_time,
                           worker_alive)
from dropviz.train.__main__ import main
from dropviz.train.db import DB_NAME, SCHEMA
from dropviz.train.engine import cpu_thread_share, lr_factor
from dropviz.train.jobs import STALE_HEARTBEAT_S, unresponsive_for

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


TRAIN_FROM_PYTHON = """
import sys
from dropviz.train import train_run
train_run(sys.argv[1], sys.argv[2], progress=False)
"""


def test_a_run_trained_from_python_is_alive_while_it_trains(tmp_path):
    """A script calling train_run is no `python -m dropviz.train`: its command line must not decide."""
    manager = JobManager(tmp_path)
    run_id = manager.db.create_run(RunConfig(epochs=30, limit_train=1024, **TINY), status="starting")
    script = tmp_path / "my_experiment.py"
    script.write_text(TRAIN_FROM_PYTHON)
    with subprocess.Popen([sys.executable, str(script), str(tmp_path), run_id],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}) as process:
        wait_for(manager, run_id, lambda r: r["step"] >= 2)
        assert manager.reap() == [] and manager.run(run_id)["status"] == "running"
        manager.cancel(run_id)
        assert process.wait(timeout=120) == 0
    assert manager.run(run_id)["status"] == "cancelled"


def test_a_worker_is_known_by_its_pid_and_start_time(tmp_path):
    manager = JobManager(tmp_path)
    run_id = manager.db.create_run(RunConfig(**TINY), status="running")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) as process:
        try:
            started = process_start_time(process.pid)
            assert worker_alive(process.pid, started)
            assert not worker_alive(process.pid, started + 1)  # the same pid, given later to another process
            manager.db.update_run(run_id, pid=process.pid, pid_start=started, heartbeat=time.time())
            assert manager.reap() == [] and manager.run(run_id)["status"] == "running"
        finally:
            process.kill()
    assert not worker_alive(process.pid, started)
    assert manager.reap() == [run_id]  # once it is gone, the next poll says so


def test_a_live_worker_that_stopped_reporting_is_not_failed_nor_resumed_beside(tmp_path, monkeypatch, capsys):
    """Stopped (Ctrl-Z, SIGSTOP) or on a machine that slept, a worker carries on later: failing its run would let
    a resume start a second worker on it, both writing."""
    monkeypatch.setattr(JobManager, "_spawn", lambda self, run_id: None)  # a resume queues, starts no worker
    monkeypatch.setattr("signal.signal", lambda *args: None)  # main() sets a SIGTERM handler: not in pytest
    manager = JobManager(tmp_path)
    run_id = manager.db.create_run(RunConfig(**TINY), status="running")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) as process:
        try:
            last_beat = time.time() - 10 * STALE_HEARTBEAT_S
            manager.db.update_run(run_id, pid=process.pid, pid_start=process_start_time(process.pid),
                                  heartbeat=last_beat)
            assert manager.reap() == [] and manager.run(run_id)["status"] == "running"
            assert unresponsive_for(manager.run(run_id)) == pytest.approx(10 * STALE_HEARTBEAT_S, abs=5)
            with pytest.raises(ValueError, match="not failed or cancelled"):
                manager.resume(run_id)
            # a worker that wrote its last status and has yet to exit
            manager.db.update_run(run_id, status="cancelled")
            with pytest.raises(ValueError, match=f"worker \\(pid {process.pid}\\) is still alive"):
                manager.resume(run_id)
            with pytest.raises(SystemExit) as exit_info:
                main(["--resume", run_id, "--runs-dir", str(tmp_path)])
            assert exit_info.value.code == 2 and f"(pid {process.pid}) is still alive" in capsys.readouterr().err
            assert manager.run(run_id)["status"] == "cancelled"
        finally:
            process.kill()
    manager.resume(run_id)  # gone now: the run may go on
    assert manager.run(run_id)["status"] == "starting"


def test_a_runs_database_from_before_the_start_time_gains_its_column(tmp_path):
    old_schema = SCHEMA.replace(" pid_start INTEGER,", "")
    assert old_schema != SCHEMA
    sqlite3.connect(tmp_path / DB_NAME).executescript(old_schema)
    assert "pid_start" in RunsDB(tmp_path).run_columns()


def test_a_dashboard_poll_starts_a_queued_run_once_a_slot_frees(tmp_path, monkeypatch):
    """With no launch, resume or finishing worker left to do it (the worker was SIGKILLed, or the run that held the
    slot was a command-line one), the dashboard's refresh starts the queue; two dashboards start it once."""
    started = []
    monkeypatch.setattr(JobManager, "_spawn", lambda self, run_id: started.append(run_id))
    page, other_page = JobManager(tmp_path, max_running=1), JobManager(tmp_path, max_running=1)
    killed = page.db.create_run(RunConfig(**TINY), status="running")
    page.db.update_run(killed, pid=2**22 + 1)  # above Linux's pid_max: no such process
    waiting = [page.db.create_run(RunConfig(**TINY)) for _ in range(2)]
    for _ in range(3):
        page.runs()
        other_page.runs()
    assert started == waiting[:1]
    assert [page.run(run_id)["status"] for run_id in (killed, *waiting)] == ["failed", "starting", "queued"]


def test_a_command_line_run_that_ends_starts_the_queued_run(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(JobManager, "_spawn", lambda self, run_id: started.append(run_id))
    monkeypatch.setattr("signal.signal", lambda *args: None)  # main() sets a SIGTERM handler: not in pytest
    waiting = RunsDB(tmp_path).create_run(RunConfig(**TINY))  # queued while the slots were taken
    assert main(["--dataset", "digits", "--limit-train", "64", "--limit-test", "32", "--batch-size", "32",
                 "--epochs", "1", "--device", "cpu", "--runs-dir", str(tmp_path), "--no-progress"]) == 0
    assert started == [waiting]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5"])
def test_a_max_runs_setting_that_is_no_count_is_warned_about(tmp_path, monkeypatch, capsys, value):
    monkeypatch.setenv("DROPVIZ_MAX_RUNS", value)
    monkeypatch.setattr("dropviz.train.jobs._WARNED", set())  # as in a fresh process
    manager = JobManager(tmp_path)
    message = f"DROPVIZ_MAX_RUNS='{value}' is not a whole number of at least 1: at most 2 runs train at once"
    assert manager.max_running == 2 and manager.max_running_warning == message
    JobManager(tmp_path)
    assert capsys.readouterr().err.count(f"warning: {message}") == 1  # once per process, not on every refresh
    monkeypatch.setenv("DROPVIZ_MAX_RUNS", "3")
    assert JobManager(tmp_path).max_running == 3 and JobManager(tmp_path).max_running_warning is None


def test_two_runs_at_once_keep_their_metrics_apart_and_share_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # each worker would take two threads: they must halve them
    manager = JobManager(tmp_path, max_running=2)
    lrs = {manager.launch(RunConfig(epochs=2, limit_train=320, lr=lr, **TINY)): lr for lr in (0.05, 0.2)}
    for run_id in lrs:
        wait_for(manager, run_id, lambda run: run["status"] in ("finished", "failed"))
    # They wrote at the same time: each run's first logged step came before the other's last (the steps' own
    # timestamps, not a poll that could fall between them).
    spans = [(steps[0]["time"], steps[-1]["time"]) for steps in map(manager.db.steps, lrs)]
    assert max(first for first, _ in spans) < min(last for _, last in spans), spans
    for run_id in lrs:  # each took its half of the CPU while the other ran
        assert "cpu threads: 1 of 2 (2 runs training on the CPU)" in manager.log_tail(run_id, 200)
    total = 2 * 10
    for run_id, lr in lrs.items():
        run, steps = manager.run(run_id), manager.db.steps(run_id)
        assert run["status"] == "finished", run["error"]
        assert [s["step"] for s in steps] == list(range(1, total + 1))
        # each row carries its own run's learning rate schedule: rows were neither lost nor swapped
        assert [s["lr"] for s in steps] == pytest.approx([lr * lr_factor(s, total) for s in range(1, total + 1)])
        assert len(manager.db.epochs(run_id)) == 2


def test_runs_training_on_the_cpu_share_its_threads():
    assert [cpu_thread_share(2, runs) for runs in (0, 1, 2, 3)] == [2, 2, 1, 1]
    assert [cpu_thread_share(16, runs) for runs in (1, 2, 3, 5, 32)] == [16, 8, 5, 3, 1]
    assert cpu_thread_share(1, 2) == 1


def test_runs_on_the_cpu_are_counted_by_status_device_and_a_fresh_heartbeat(tmp_path):
    db = RunsDB(tmp_path)
    now = time.time()
    rows = [("running", "cpu", now), ("running", None, now), ("running", "cuda", now), ("running", "cpu", now - 60),
            ("queued", None, None), ("finished", "cpu", now)]
    for status, device, beat in rows:
        db.update_run(db.create_run(RunConfig(**TINY)), status=status, device=device, heartbeat=beat)
    # a run still starting (no device yet) counts; one on the GPU, one whose worker went silent and ended ones do not
    assert db.running_on_cpu() == 2


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


@pytest.mark.parametrize("place", ["file", "file/runs"])
def test_a_runs_dir_that_cannot_hold_runs_is_named(tmp_path, monkeypatch, place):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(tmp_path / place))
    named = rf"^DROPVIZ_RUNS_DIR, the runs folder, {tmp_path / place} (is a file|cannot hold the runs)"
    with pytest.raises(RunsDirError, match=named):
        JobManager()
    with pytest.raises(RunsDirError, match=r"^the runs folder .* choose a folder this user can write to$"):
        JobManager(tmp_path / place)  # given by the caller (--runs-dir): no setting to name
