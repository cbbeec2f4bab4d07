"""Which process a run's worker is: its pid and its start time, so a later process given the same pid is not it.

A run's row records both (``pid``, ``pid_start``). Whatever started the run (``python -m dropviz.train``, a
dashboard's worker, ``train_run`` called from a script) is then known by identity, not by its command line.
"""
from __future__ import annotations

import os
from pathlib import Path

PROCFS = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3 onwards of ``/proc/PID/stat`` (proc(5)): after the command name, which may hold spaces."""
    try:
        return (PROCFS / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of ``/proc/PID/stat``); None without
    procfs or without such a process. Set at fork, so it is the same before and after the exec of a new program."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def worker_alive(pid: int | None, pid_start: int | None = None) -> bool:
    """Whether the process ``pid`` that started at ``pid_start`` (:func:`process_start_time`) is alive and not a
    zombie. ``pid_start`` None (rows from before it was recorded, or no procfs) asks only for a live ``pid``."""
    if not pid:
        return False
    if not PROCFS.joinpath("self").exists():
        return _pid_alive_without_procfs(pid)
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return pid_start is None or int(fields[19]) == pid_start


def _pid_alive_without_procfs(pid: int) -> bool:
    try:  # a worker this process started and that has exited is a zombie until waited for: wait for it
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:  # not our child
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    return True
