"""Background runs: launch as separate processes, queue beyond a bound, cancel, delete, resume, notice death.

A launched run is a ``python -m dropviz.train --worker RUN_ID`` process in its own session
(``start_new_session=True``): it survives page reloads and dashboard restarts. At most ``max_running`` runs
are active at once (``$DROPVIZ_MAX_RUNS``, default 2); more launches wait as ``queued`` and start when a slot
frees, whoever notices first (a dashboard refresh, or a run that just ended: a worker or a command-line run).
Claiming a queued run is one ``BEGIN IMMEDIATE`` transaction, so two schedulers never start the same run.

A worker that dies without a word (SIGKILL, out of memory) leaves its row ``running``; :meth:`JobManager.reap`
marks it ``failed`` as soon as its process is gone (or is a zombie). What it logged stays;
:meth:`JobManager.resume` continues from its last checkpoint. A worker that is alive but silent for more than
``STALE_HEARTBEAT_S`` (stopped with Ctrl-Z or SIGSTOP, on a machine that slept, or hung) is never failed: it
would carry on later beside a resumed one. It stays ``running``, shown as unresponsive (:func:`unresponsive_for`),
until it goes on or someone ends it; no run is resumed while its last worker lives.

With ``$DROPVIZ_READONLY`` set (a dashboard shared with a class), launching, cancelling, resuming and deleting
raise :class:`ReadOnlyError`.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import dropviz

from .config import RunConfig
from .db import ACTIVE, RunsDB, check_run_id, run_dir
from .engine import LOG
from .process import process_start_time, worker_alive

STALE_HEARTBEAT_S = 60.0  # a live worker silent for longer is shown as unresponsive
START_GRACE_S = 120.0  # a claimed run's process must show up by then (imports can be slow on a busy machine)
DEFAULT_MAX_RUNS = 2
_WARNED: set[str] = set()  # warnings printed by this process


class ReadOnlyError(PermissionError):
    """This dashboard is read-only (``DROPVIZ_READONLY``)."""


class RunsDirError(OSError):
    """The runs folder cannot hold the runs database (a file, a place that cannot be written, ...)."""


def readonly() -> bool:
    return os.environ.get("DROPVIZ_READONLY", "").strip().lower() in ("1", "true", "yes", "on")


def default_runs_dir() -> Path:
    return Path(os.environ.get("DROPVIZ_RUNS_DIR", "runs"))


def max_running_from_env() -> tuple[int, str | None]:
    """``$DROPVIZ_MAX_RUNS`` (default 2), with a warning when it is set to anything but a whole number >= 1."""
    value = os.environ.get("DROPVIZ_MAX_RUNS", "").strip()
    if not value:
        return DEFAULT_MAX_RUNS, None
    if value.isdigit() and int(value) > 0:
        return int(value), None
    return DEFAULT_MAX_RUNS, (f"DROPVIZ_MAX_RUNS={value!r} is not a whole number of at least 1: at most "
                              f"{DEFAULT_MAX_RUNS} runs train at once")


def unresponsive_for(run: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds since a running run's worker last reported, once that is more than ``STALE_HEARTBEAT_S``; else
    None. :meth:`JobManager.reap` fails runs whose worker is gone, so this one is alive but not running."""
    if run["status"] != "running" or not run["heartbeat"]:
        return None
    silent = (now or time.time()) - run["heartbeat"]
    return silent if silent > STALE_HEARTBEAT_S else None


def live_worker_problem(run: dict[str, Any]) -> str | None:
    """Why ``run`` cannot be resumed while its last worker lives (None when it does not): two would write."""
    if not worker_alive(run["pid"], run["pid_start"]):
        return None
    return (f"run {run['id']}'s worker (pid {run['pid']}) is still alive ({run['status']}): wait for it to end, or "
            f"end it (kill {run['pid']}; kill -9 {run['pid']} if it is stopped), before resuming")


class JobManager:
    def __init__(self, runs_dir: str | Path | None = None, max_running: int | None = None):
        self.runs_dir = Path(runs_dir if runs_dir is not None else default_runs_dir()).resolve()
        self.max_running, self.max_running_warning = max_running, None
        if not max_running:
            self.max_running, self.max_running_warning = max_running_from_env()
        if self.max_running_warning and self.max_running_warning not in _WARNED:  # once per process
            _WARNED.add(self.max_running_warning)
            print(f"warning: {self.max_running_warning}", file=sys.stderr)  # a worker's goes to its log
        try:
            self.db = RunsDB(self.runs_dir)
        except (OSError, sqlite3.Error) as error:
            where = "the runs folder" if runs_dir is not None else "DROPVIZ_RUNS_DIR, the runs folder,"
            what = "is a file, not a folder" if self.runs_dir.is_file() else f"cannot hold the runs ({error})"
            raise RunsDirError(f"{where} {self.runs_dir} {what}: choose a folder this user can write to") from error

    def close(self) -> None:
        self.db.close()

    # ---------------------------------------------------------------- reading

    def runs(self) -> list[dict[str, Any]]:
        """All runs, newest first, after marking dead workers' runs failed and starting queued runs in free slots:
        a dashboard's refresh calls this, and may be all that is left to start the queue (after a SIGKILLed
        worker, or a command-line run)."""
        self.schedule()
        return self.db.runs()

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self.db.run(run_id)

    def log_tail(self, run_id: str, lines: int = 25) -> str:
        """The last lines the run's worker printed (its stdout and stderr)."""
        path = run_dir(self.runs_dir, run_id) / LOG
        if not path.is_file():
            return ""
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 64_000))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])

    # ---------------------------------------------------------------- actions

    def _writable(self) -> None:
        if readonly():
            raise ReadOnlyError("this dashboard is read-only (DROPVIZ_READONLY is set): runs cannot be launched, "
                                "cancelled, resumed or deleted here")

    def launch(self, config: RunConfig, labels: Mapping[str, str] | None = None) -> str:
        """Validate ``config`` (refusals name settings by ``labels``, see :meth:`RunConfig.validate`), queue it and
        start it if a slot is free; return the run id."""
        self._writable()
        config.validate(labels)
        run_id = self.db.create_run(config)
        run_dir(self.runs_dir, run_id).mkdir(parents=True, exist_ok=True)
        self.schedule()
        return run_id

    def cancel(self, run_id: str) -> None:
        """A queued run is cancelled at once; an active one stops at its next step (within about a second)."""
        self._writable()
        check_run_id(run_id)
        with self.db.transaction() as conn:
            conn.execute("UPDATE runs SET status = 'cancelled', finished = ? WHERE id = ? AND status = 'queued'",
                         (time.time(), run_id))
            conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ? AND status IN ('starting', 'running')",
                         (run_id,))

    def resume(self, run_id: str, labels: Mapping[str, str] | None = None) -> None:
        """Queue a failed or cancelled run again; its worker continues from the last checkpoint. Its settings are
        checked again first (:class:`ConfigError`): they may not hold here, e.g. CUDA for a run launched elsewhere."""
        self._writable()
        check_run_id(run_id)
        self.db.config(run_id).validate(labels)
        with self.db.transaction() as conn:
            run = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if run is None or run["status"] not in ("failed", "cancelled"):
                raise ValueError(f"run {run_id} is not failed or cancelled, so there is nothing to resume")
            problem = live_worker_problem(dict(run))
            if problem:
                raise ValueError(problem)
            conn.execute("UPDATE runs SET status = 'queued', error = NULL, cancel_requested = 0, finished = NULL "
                         "WHERE id = ?", (run_id,))
        self.schedule()

    def delete(self, run_id: str) -> None:
        """Remove a run that is not active: its rows and its folder."""
        self._writable()
        self.reap()
        run = self.db.run(run_id)
        if run is None:
            raise ValueError(f"no run {run_id}")
        if run["status"] in ACTIVE:
            raise ValueError(f"run {run_id} is {run['status']}: cancel it before deleting it")
        self.db.delete_run(run_id)
        folder = run_dir(self.runs_dir, run_id)
        if folder.resolve().parent == self.runs_dir:
            shutil.rmtree(folder, ignore_errors=True)

    # ---------------------------------------------------------------- bookkeeping

    def reap(self) -> list[str]:
        """Mark active runs whose worker is gone as failed; return their ids. A live worker is never judged gone,
        however long it has been silent (see :func:`unresponsive_for`)."""
        now = time.time()
        dead = []
        for run in self.db.conn.execute("SELECT * FROM runs WHERE status IN ('starting', 'running')").fetchall():
            beat = run["heartbeat"] or run["created"]
            if run["status"] == "starting" and run["pid"] is None:  # claimed, its process not yet recorded
                gone = now - beat > START_GRACE_S
            else:
                gone = not worker_alive(run["pid"], run["pid_start"])
            if gone:
                dead.append(run["id"])
                message = (f"The worker process (pid {run['pid']}) stopped without reporting (killed, e.g. by "
                           f"SIGKILL or the out-of-memory killer); last heartbeat at "
                           f"{time.strftime('%H:%M:%S', time.localtime(beat))}. Metrics logged until then are "
                           f"kept; resume continues from the last checkpoint (epoch {run['epoch']}).")
                # only the worker we judged: a resume may have started another one since we read the row
                self.db.conn.execute("UPDATE runs SET status = 'failed', error = ?, finished = ? "
                                     "WHERE id = ? AND status = ? AND pid IS ?",
                                     (message, now, run["id"], run["status"], run["pid"]))
        return dead

    def schedule(self) -> list[str]:
        """Start queued runs, oldest first, while fewer than ``max_running`` are active; return their ids.

        Looks before it takes the write lock: most calls are a dashboard's polls, which find nothing to start."""
        self.reap()
        queued, active = self.db.conn.execute(
            f"SELECT TOTAL(status = 'queued'), TOTAL(status IN {ACTIVE}) FROM runs").fetchone()
        if not queued or active >= self.max_running:
            return []
        with self.db.transaction() as conn:  # counted again inside: another scheduler may have claimed meanwhile
            active = conn.execute(f"SELECT COUNT(*) FROM runs WHERE status IN {ACTIVE}").fetchone()[0]
            claimed = [row[0] for row in conn.execute(
                "SELECT id FROM runs WHERE status = 'queued' ORDER BY created, id LIMIT ?",
                (max(0, self.max_running - active),))]
            for run_id in claimed:
                conn.execute("UPDATE runs SET status = 'starting', pid = NULL, pid_start = NULL, heartbeat = ? "
                             "WHERE id = ?", (time.time(), run_id))
        for run_id in claimed:
            self._spawn(run_id)
        return claimed

    def _spawn(self, run_id: str) -> None:
        folder = run_dir(self.runs_dir, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        package_root = str(Path(dropviz.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
               "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "dropviz.train", "--worker", run_id, "--runs-dir", str(self.runs_dir)]
        try:
            with open(folder / LOG, "ab") as log:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           env=env, start_new_session=True)
        except OSError as error:
            self.db.update_run(run_id, status="failed", error=f"could not start the worker: {error}",
                               finished=time.time())
            return
        self.db.conn.execute("UPDATE runs SET pid = ?, pid_start = ? WHERE id = ? AND pid IS NULL",
                             (process.pid, process_start_time(process.pid), run_id))
