"""What a dashboard shows about runs: labels, progress and ETA, a table, metrics as CSV."""
from __future__ import annotations

import csv
import io
import json
import time
from typing import Any, Sequence

from dropviz.models import DROPCLUSTER_DEFAULT
from dropviz.regularizers import REGISTRY

from .db import EPOCH_METRICS, STEP_METRICS, RunsDB
from .jobs import unresponsive_for

ACTIVE_OR_WAITING = ("queued", "starting", "running")


def run_label(run: dict[str, Any]) -> str:
    """``dropblock p=0.1 b=3 · resnet20 · 3fa9c1``: what was run, and the id's tail to tell repeats apart.

    Parameters at their registry default are left out, except ``drop_prob``; so is DropCluster's place
    unless it is not the stem (``dropcluster p=0.1 after stage2``)."""
    config = json.loads(run["config"])
    spec = REGISTRY.get(config["regularizer"])
    defaults = spec.defaults() if spec else {}
    short = {"drop_prob": "p", "block_size": "b", "alpha": "α", "n_clusters": "k", "n_samples": "n"}
    params = " ".join(f"{short.get(k, k)}={v}" for k, v in {**defaults, **config.get("params", {})}.items()
                      if k == "drop_prob" or defaults.get(k) != v)
    place = config.get("dropcluster_after", DROPCLUSTER_DEFAULT)  # absent from configs stored before it existed
    if place != DROPCLUSTER_DEFAULT:
        params += f" after {place}"
    method = f"{config['regularizer']} {params}".strip()
    return f"{method} · {config['model']} · {run['id'][-6:]}"


def progress(run: dict[str, Any], now: float | None = None) -> tuple[float, float | None]:
    """Fraction of steps done and the estimated seconds left (None until the first steps are done)."""
    total, done = run.get("total_steps"), run.get("step") or 0
    if run["status"] == "finished":
        return 1.0, None
    if not total:
        return 0.0, None
    fraction = min(1.0, done / total)
    if run["status"] != "running" or not run.get("started") or done == 0:
        return fraction, None
    elapsed = (now or time.time()) - run["started"]
    return fraction, elapsed / done * (total - done)  # a resumed run restarts the clock: a rough figure


def device_text(run: dict[str, Any]) -> str:
    """Where the run trains (once its worker has said) and whether its step is compiled: ``cuda, compiled``."""
    compiled = json.loads(run["config"]).get("compile")  # absent from configs stored before it existed
    return ", ".join(part for part in (run.get("device"), "compiled" if compiled else None) if part)


def runs_table(db: RunsDB, runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run for a table: label, status (with how long a live worker has been silent, past
    ``STALE_HEARTBEAT_S``), progress, epochs, last test accuracy, ETA, device (and whether compiled)."""
    rows = []
    for run in runs:
        fraction, eta = progress(run)
        epochs = db.epochs(run["id"])
        silent = unresponsive_for(run)
        status = f"{run['status']}, unresponsive {duration(silent)}" if silent else run["status"]
        rows.append({"run": run_label(run), "status": status, "progress": fraction,
                     "epoch": f"{run['epoch']}/{run['epochs']}",
                     "test acc": epochs[-1]["test_acc"] if epochs else None,
                     "ETA": duration(eta) if eta is not None else "", "device": device_text(run),
                     "id": run["id"]})
    return rows


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def metrics_csv(db: RunsDB, run_ids: Sequence[str]) -> str:
    """Per-step and per-epoch metrics of the runs as one CSV (``kind`` says which a row is)."""
    columns = ["run_id", "label", "kind", "step", "epoch", *dict.fromkeys(STEP_METRICS + EPOCH_METRICS), "time"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore")
    writer.writeheader()
    for run_id in run_ids:
        run = db.run(run_id)
        if run is None:
            continue
        label = run_label(run)
        for kind, rows in (("step", db.steps(run_id)), ("epoch", db.epochs(run_id))):
            writer.writerows({**row, "label": label, "kind": kind} for row in rows)
    return out.getvalue()
