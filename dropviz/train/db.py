"""The runs database: one SQLite file in the runs dir, in WAL mode so the dashboard reads while jobs write.

Tables: ``runs`` (one row per run: config, status, progress, worker pid, start time and heartbeat, error), ``steps``
(training metrics every ``log_every`` steps) and ``epochs`` (train and test metrics per epoch). Every
process opens its own connection; writers wait for each other (``busy_timeout``) instead of failing.

Run ids look like ``20261122-220630-3fa9c1``; :func:`check_run_id` is the only way from an outside string
(URL, form, CLI) to a run folder.
"""
from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from .config import RunConfig

DB_NAME = "runs.sqlite"
STATUSES = ("queued", "starting", "running", "finished", "failed", "cancelled")
ACTIVE = ("starting", "running")
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")
STEP_METRICS = ("train_loss", "train_acc", "lr", "drop_prob", "images_per_s")
EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "drop_prob", "images_per_s")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, created REAL NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL,
    pid INTEGER, pid_start INTEGER, heartbeat REAL, device TEXT, epoch INTEGER NOT NULL DEFAULT 0,
    epochs INTEGER NOT NULL, step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER, started REAL, finished REAL,
    error TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, epoch REAL NOT NULL, time REAL NOT NULL,
    {", ".join(f"{m} REAL" for m in STEP_METRICS)}, PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL, epoch INTEGER NOT NULL, step INTEGER NOT NULL, time REAL NOT NULL,
    {", ".join(f"{m} REAL" for m in EPOCH_METRICS)}, PRIMARY KEY (run_id, epoch));
"""


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_run_id(run_id: Any) -> str:
    """``run_id`` if it is a well-formed run id, else ``ValueError`` (never a path, never ``..``)."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ValueError(f"not a run id: {str(run_id)[:80]!r} (expected e.g. 20261122-220630-3fa9c1)")
    return run_id


def run_dir(runs_dir: str | Path, run_id: str) -> Path:
    """The folder of a run, after checking the id."""
    return Path(runs_dir) / check_run_id(run_id)


class RunsDB:
    """Access to ``<runs_dir>/runs.sqlite``. Cheap to create; one per process or thread."""

    def __init__(self, runs_dir: str | Path):
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.runs_dir / DB_NAME
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self._add_missing_columns()

    def close(self) -> None:
        self.conn.close()

    def _add_missing_columns(self) -> None:
        """Bring a database written by an earlier version up to ``SCHEMA`` (in one transaction: two processes
        opening it at once must not both add a column)."""
        with self.transaction() as conn:
            if "pid_start" not in self.run_columns():
                conn.execute("ALTER TABLE runs ADD COLUMN pid_start INTEGER")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (``BEGIN IMMEDIATE``): read-then-write is atomic across processes."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---------------------------------------------------------------- runs

    def create_run(self, config: RunConfig, status: str = "queued", run_id: str | None = None) -> str:
        run_id = check_run_id(run_id) if run_id else new_run_id()
        self.conn.execute("INSERT INTO runs (id, created, config, status, epochs) VALUES (?, ?, ?, ?, ?)",
                          (run_id, time.time(), config.to_json(), status, config.epochs))
        return run_id

    def update_run(self, run_id: str, **values: Any) -> None:
        unknown = set(values) - self.run_columns()
        if unknown:
            raise ValueError(f"runs has no column(s) {sorted(unknown)}")
        assignments = ", ".join(f"{k} = ?" for k in values)
        self.conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))

    def run_columns(self) -> set[str]:
        return {row["name"] for row in self.conn.execute("PRAGMA table_info(runs)")}

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (check_run_id(run_id),)).fetchone()
        return dict(row) if row else None

    def runs(self) -> list[dict[str, Any]]:
        """All runs, newest first."""
        return [dict(row) for row in self.conn.execute("SELECT * FROM runs ORDER BY created DESC, id DESC")]

    def running_on_cpu(self, beat_within: float = 10.0) -> int:
        """How many runs are training on the CPU now: running, with a heartbeat in the last ``beat_within``
        seconds (a killed worker's row says running until a dashboard notices), on the CPU (a run still
        starting has no device yet: it counts)."""
        return self.conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'running' AND heartbeat > ? "
                                 "AND (device IS NULL OR device LIKE 'cpu%')",
                                 (time.time() - beat_within,)).fetchone()[0]

    def config(self, run_id: str) -> RunConfig:
        run = self.run(run_id)
        if run is None:
            raise ValueError(f"no run {run_id} in {self.path}")
        return RunConfig.from_dict(json.loads(run["config"]))

    def delete_run(self, run_id: str) -> None:
        with self.transaction() as conn:
            for table, column in (("steps", "run_id"), ("epochs", "run_id"), ("runs", "id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (run_id,))

    # ---------------------------------------------------------------- metrics

    def log_step(self, run_id: str, step: int, epoch: float, **metrics: float) -> None:
        self._insert("steps", STEP_METRICS, {"run_id": run_id, "step": step, "epoch": epoch}, metrics)

    def log_epoch(self, run_id: str, epoch: int, step: int, **metrics: float) -> None:
        self._insert("epochs", EPOCH_METRICS, {"run_id": run_id, "epoch": epoch, "step": step}, metrics)

    def _insert(self, table: str, allowed: tuple[str, ...], keys: dict[str, Any], metrics: dict[str, float]) -> None:
        unknown = set(metrics) - set(allowed)
        if unknown:
            raise ValueError(f"{table} has no metric(s) {sorted(unknown)}")
        row = {**keys, "time": time.time(), **metrics}
        self.conn.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                          tuple(row.values()))

    def forget_after(self, run_id: str, epoch: int) -> None:
        """Drop metrics logged after epoch ``epoch`` ended (what a resume from that checkpoint redoes)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM steps WHERE run_id = ? AND epoch > ?", (run_id, epoch))
            conn.execute("DELETE FROM epochs WHERE run_id = ? AND epoch > ?", (run_id, epoch))

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM steps WHERE run_id = ? ORDER BY step", (run_id,))]

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))]
