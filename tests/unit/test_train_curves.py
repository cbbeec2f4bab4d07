"""Curves and run summaries the Training page shows: smoothing, overlaid figure, labels, progress, CSV."""
from __future__ import annotations

import csv
import io

import pytest

from dropviz.train import RunConfig, RunsDB
from dropviz.train.report import metrics_csv, progress, run_label
from dropviz.viz.curves import UIREVISION, curves_figure, smooth


def test_smoothing_is_tensorboards_debiased_ema():
    assert smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])  # debiased: no pull towards 0
    # by hand: last = 0.5 * 0 + 0.5 * 1 = 0.5 -> 0.5 / 0.5 = 1; last = 0.25 + 1.5 = 1.75 -> 1.75 / 0.75
    assert smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, 1.75 / 0.75])
    assert smooth([1.0, 5.0, 2.0], 0.0) == [1.0, 5.0, 2.0]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        smooth([1.0], 1.0)


def rows(n_steps: int, n_epochs: int) -> dict:
    steps = [{"epoch": s / 4, "train_acc": 0.1 * s, "train_loss": 2.0 / s} for s in range(1, n_steps + 1)]
    epochs = [{"epoch": e, "test_acc": 0.2 * e, "test_loss": 1.0 / e} for e in range(1, n_epochs + 1)]
    return {"steps": steps, "epochs": epochs}


def test_figure_overlays_runs_with_one_colour_each_and_keeps_zoom():
    fig = curves_figure({"a": rows(8, 2), "b": rows(4, 1)}, "accuracy", smoothing=0.0)
    assert [t.name for t in fig.data] == ["a · train", "a · test", "b · train", "b · test"]
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert list(fig.data[1].y) == pytest.approx([0.2, 0.4]) and list(fig.data[0].x)[-1] == 2.0
    assert fig.layout.uirevision == UIREVISION
    loss = curves_figure({"a": rows(8, 2)}, "loss", splits=("test",))
    assert [t.name for t in loss.data] == ["a · test"] and list(loss.data[0].y) == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match="metric"):
        curves_figure({}, "speed")


def test_a_run_with_one_logged_step_shows_a_point():
    """Plotly draws nothing for a line through one point; the run's first train row must still be seen."""
    fig = curves_figure({"new": rows(1, 0), "older": rows(3, 0)}, "accuracy")
    assert [t.mode for t in fig.data] == ["markers", "lines"]
    assert fig.data[0].marker.color == fig.data[0].line.color


def test_labels_progress_and_csv(tmp_path):
    db = RunsDB(tmp_path)
    run_id = db.create_run(RunConfig(regularizer="dropblock", params={"drop_prob": 0.2, "block_size": 3,
                                                                      "share_channels": False}), status="running")
    db.update_run(run_id, step=25, total_steps=100, started=1000.0)
    run = db.run(run_id)
    assert run_label(run) == f"dropblock p=0.2 b=3 · resnet20 · {run_id[-6:]}"  # defaults left out
    placed = db.run(db.create_run(RunConfig(regularizer="dropcluster", dropcluster_after="stage2")))
    assert run_label(placed) == f"dropcluster p=0.1 after stage2 · resnet20 · {placed['id'][-6:]}"
    fraction, eta = progress(run, now=1010.0)
    assert fraction == 0.25 and eta == pytest.approx(30.0)  # 10 s for 25 steps, 75 to go
    db.log_step(run_id, 10, 0.1, train_loss=2.0, train_acc=0.2)
    db.log_epoch(run_id, 1, 100, test_acc=0.3)
    table = list(csv.DictReader(io.StringIO(metrics_csv(db, [run_id]))))
    assert [(r["kind"], r["step"]) for r in table] == [("step", "10"), ("epoch", "100")]
    assert table[1]["test_acc"] == "0.3" and table[0]["label"] == run_label(run)
