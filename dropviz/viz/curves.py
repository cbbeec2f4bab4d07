"""Training curves of several runs overlaid: pure plotly figure builders over rows from the runs database."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

METRICS = {"accuracy": "acc", "loss": "loss"}
SPLITS = ("train", "test")
UIREVISION = "training-curves"  # fixed: zoom and hidden traces survive the refreshes of a live chart


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average: the first points are not pulled towards zero.

    ``last = w * last + (1 - w) * x``, then ``last / (1 - w ** n)`` after ``n`` points. ``weight`` 0 is no
    smoothing; it must be in [0, 1).
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    last, out = 0.0, []
    for n, value in enumerate(values, 1):
        last = weight * last + (1 - weight) * value
        out.append(last / (1 - weight ** n))
    return out


def curves_figure(runs: Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]], metric: str = "accuracy",
                  splits: Sequence[str] = SPLITS, smoothing: float = 0.6, height: int = 440) -> go.Figure:
    """One line per run and split against epochs.

    ``runs`` maps a run's label to ``{"steps": rows, "epochs": rows}`` (rows as the database returns them).
    Train curves come from the per-step rows (dotted, smoothed as in TensorBoard), test curves from the
    per-epoch rows (solid, with markers). A run keeps its colour in both.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    column = METRICS[metric]
    fig = go.Figure()
    for index, (label, rows) in enumerate(runs.items()):
        color = qualitative.Plotly[index % len(qualitative.Plotly)]
        if "train" in splits and rows.get("steps"):
            steps = rows["steps"]
            y = smooth([r[f"train_{column}"] for r in steps], smoothing)
            # a line through one point draws nothing: a run's first logged step shows as a dot
            fig.add_scatter(x=[r["epoch"] for r in steps], y=y, mode="lines" if len(steps) > 1 else "markers",
                            name=f"{label} · train", legendgroup=label, line=dict(color=color, width=1.5, dash="dot"),
                            marker=dict(color=color, size=6),
                            hovertemplate=f"{label}<br>train {metric} %{{y:.4g}}<br>epoch %{{x:.2f}}<extra></extra>")
        if "test" in splits and rows.get("epochs"):
            epochs = rows["epochs"]
            fig.add_scatter(x=[r["epoch"] for r in epochs], y=[r[f"test_{column}"] for r in epochs],
                            mode="lines+markers", name=f"{label} · test", legendgroup=label,
                            line=dict(color=color, width=2.5),
                            hovertemplate=f"{label}<br>test {metric} %{{y:.4g}}<br>epoch %{{x}}<extra></extra>")
    fig.update_layout(height=height, uirevision=UIREVISION, margin=dict(l=10, r=10, t=40, b=10),
                      title=f"{metric.capitalize()}: dotted = train (smoothed {smoothing:g}), solid = test",
                      xaxis_title="epoch", yaxis_title=metric, hovermode="closest",
                      legend=dict(orientation="h", yanchor="top", y=-0.25, x=0))
    if metric == "accuracy":
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig
