"""Lecture figure builders: sweeps carry every frame (playback needs no server), stills show the chosen frame."""
from __future__ import annotations

import numpy as np
import pytest

from dropviz.viz import lecture as figures
from dropviz.viz.figures import Panel


def panels(*values):
    return [Panel(np.full((6, 6), v, np.uint8), f"panel {i}") for i, v in enumerate(values)]


def test_map_sweep_has_one_frame_per_level_and_starts_where_asked():
    frames = [(f"{p:.1f}", panels(int(p * 100), 255), f"caption {p:.1f}") for p in (0.0, 0.1, 0.2)]
    fig = figures.map_sweep(frames, "drop_prob", start=2)
    assert [frame.name for frame in fig.frames] == ["0.0", "0.1", "0.2"]
    assert all(len(frame.data) == 2 and list(frame.traces) == [0, 1] for frame in fig.frames)
    assert fig.layout.title.text == "caption 0.2"
    assert fig.data[0].source == fig.frames[2].data[0].source != fig.frames[0].data[0].source
    slider = fig.layout.sliders[0]
    assert slider.active == 2 and [step.label for step in slider.steps] == ["0.0", "0.1", "0.2"]
    play = fig.layout.updatemenus[0].buttons[0]
    assert play.method == "animate" and play.args[0] is None  # all frames, in the browser


def test_map_sweep_rejects_ragged_frames():
    with pytest.raises(ValueError, match="same number of panels"):
        figures.map_sweep([("a", panels(0, 0), ""), ("b", panels(0), "")], "x")
    with pytest.raises(ValueError, match="at least one frame"):
        figures.map_sweep([], "x")


def test_panel_figure_outlines_the_highlight_on_every_panel():
    fig = figures.panel_figure(panels(0, 255), "t", highlight=(1, 1, 4, 4))
    rects = [shape for shape in fig.layout.shapes if shape.line.dash == "dash"]
    assert [(r.xref, r.x0, r.x1, r.y0, r.y1) for r in rects] == [("x", 0.5, 4.5, 0.5, 4.5), ("x2", 0.5, 4.5, 0.5, 4.5)]
    assert fig.layout.title.font.size == figures.TITLE_SIZE


def test_schedule_sweep_moves_the_marker_and_swaps_the_mask():
    steps = list(range(0, 1001, 100))
    probs = [0.1 * s / 1000 for s in steps]
    masks = [Panel(np.full((4, 4), 255 - i, np.uint8), "m") for i in range(3)]
    fig = figures.schedule_sweep(steps, probs, masks, [0, 5, 10], "S")
    assert [f.name for f in fig.frames] == ["0", "500", "1000"]
    assert [f.data[0].x[0] for f in fig.frames] == [0, 500, 1000]
    assert fig.layout.sliders[0].active == 2 and "drop_prob = 0.100" in fig.layout.title.text
    with pytest.raises(ValueError, match="one mask per frame"):
        figures.schedule_sweep(steps, probs, masks, [0, 5], "S")


def test_profile_sweep_zooms_on_the_dropped_columns():
    columns = list(range(10))
    dropped = [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    profiles = {"0": [1.0] * 3 + [0.0] * 3 + [1.0] * 4, "5": [1.0] * 3 + [0.05, -0.05, 0.0] + [1.0] * 4}
    fig = figures.profile_sweep(columns, [1.0] * 10, profiles, dropped, "alpha", "alpha", start=1)
    assert tuple(fig.layout.xaxis2.range) == (2.5, 5.5)
    bound = fig.layout.yaxis2.range[1]
    assert bound == pytest.approx(0.06)  # 1.2 x the largest |value| inside, over all frames
    assert fig.layout.title.text == "alpha = 5" and len(fig.frames) == 2
    with pytest.raises(ValueError, match="dropped column"):
        figures.profile_sweep(columns, [1.0] * 10, profiles, [0] * 10, "a", "a")


def test_results_figure_groups_by_setting_and_labels_every_bar():
    rows = [{"setting": "A", "method": "baseline", "top1": 90.0, "source": "p1"},
            {"setting": "A", "method": "Disout", "top1": 91.5, "source": "p2"},
            {"setting": "B", "method": "baseline", "top1": 70.0, "source": "p1"}]
    fig = figures.results_figure(rows)
    assert [list(bar.x) for bar in fig.data] == [["baseline", "Disout"], ["baseline"]]
    assert list(fig.data[0].text) == ["90.00", "91.50"] and list(fig.data[0].customdata) == ["p1", "p2"]


def test_runs_figure_says_so_when_there_are_no_runs():
    empty = figures.runs_figure({}, "ours")
    assert not empty.data and "No runs yet" in empty.layout.annotations[0].text
    fig = figures.runs_figure({"ours: resnet20 + dropblock": ([1, 2], [50.0, 60.0])}, "ours",
                              references={"paper: 93.95": 93.95})
    assert fig.data[0].name == "ours: resnet20 + dropblock" and list(fig.data[0].y) == [50.0, 60.0]
    assert [(shape.y0, a.text) for shape, a in zip(fig.layout.shapes, fig.layout.annotations)] == [
        (93.95, "paper: 93.95")]


def test_correlation_figure_names_the_map_it_shows():
    fig = figures.correlation_figure(Panel(np.zeros((6, 6), np.uint8), "ResNet-20 stem, channel 3"), [0.9, 0.5])
    assert [a.text for a in fig.layout.annotations][:2] == ["ResNet-20 stem, channel 3",
                                                            "correlation with the unit d pixels away"]
    assert list(fig.data[1].y) == [0.9, 0.5]
