"""Training runs: the engine (``python -m dropviz.train``), the runs database and background jobs.

Pages talk to runs only through :class:`JobManager` and :class:`RunsDB` (the database and files)."""
from .config import ConfigError, RunConfig, regularizer_names
from .db import RunsDB, check_run_id, new_run_id, run_dir
from .engine import evaluate, train_run
from .jobs import JobManager, ReadOnlyError, RunsDirError, default_runs_dir, readonly
from .process import process_start_time, worker_alive

__all__ = ["ConfigError", "JobManager", "ReadOnlyError", "RunConfig", "RunsDB", "RunsDirError", "check_run_id",
           "default_runs_dir", "evaluate", "new_run_id", "process_start_time", "readonly", "regularizer_names",
           "run_dir", "train_run", "worker_alive"]
