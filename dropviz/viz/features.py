"""Pure plotly figures of feature maps: channel mosaics, before/after grids, cluster maps, top-k bars.

A grid of many channels is ONE heatmap of tiles separated by a blank gap (the channel shows in the hover
text): a browser draws it in a fraction of the time a facet per channel takes.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from dropviz.features.extract import Prediction

GAP = 1  # blank pixels between tiles
MOSAIC_COLORS = "Viridis"
CLEAN_COLOR = "#636efa"
REGULARIZED_COLOR = "#ef553b"


def mosaic_columns(n_tiles: int) -> int:
    """Columns of a near-square grid of ``n_tiles`` tiles."""
    return max(1, math.ceil(math.sqrt(n_tiles)))


def tile(maps: torch.Tensor | np.ndarray, channels: Sequence[int], columns: int | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Lay out ``maps[c]`` for each ``c`` of ``channels`` (``maps`` is ``(C, H, W)``) as one image,
    row by row, with NaN gaps between tiles. Returns the image and, per pixel, its channel (-1 in gaps)."""
    maps = np.asarray(maps, dtype=np.float32)
    columns = columns or mosaic_columns(len(channels))
    rows = max(1, math.ceil(len(channels) / columns))
    h, w = maps.shape[1:]
    image = np.full((rows * (h + GAP) - GAP, columns * (w + GAP) - GAP), np.nan, dtype=np.float32)
    owner = np.full(image.shape, -1, dtype=np.int32)
    for i, channel in enumerate(channels):
        top, left = (i // columns) * (h + GAP), (i % columns) * (w + GAP)
        image[top:top + h, left:left + w] = maps[channel]
        owner[top:top + h, left:left + w] = channel
    return image, owner


def _mosaic_trace(maps, channels, columns, **heatmap) -> go.Heatmap:
    image, owner = tile(maps, channels, columns)
    return go.Heatmap(z=image, customdata=owner, hoverongaps=False,
                      hovertemplate="channel %{customdata}<br>value %{z:.3f}<extra></extra>", **heatmap)


def _square_axes(fig: go.Figure, n_axes: int) -> None:
    for i in range(1, n_axes + 1):
        suffix = "" if i == 1 else str(i)
        fig.layout[f"yaxis{suffix}"].update(autorange="reversed", scaleanchor=f"x{suffix}", showticklabels=False,
                                            showgrid=False, zeroline=False)
        fig.layout[f"xaxis{suffix}"].update(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")


def normalise_channels(clean: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Divide every channel of ``clean`` and of ``others`` (all ``(C, H, W)``) by that channel's largest
    clean ``|a|``, so faint and strong channels are both visible and a rescaled (``1 / keep``) value
    reads as > 1 after the regularizer."""
    scale = clean.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return [t / scale for t in (clean, *others)]


def before_after(clean: torch.Tensor, regularized: torch.Tensor, channels: Sequence[int],
                 titles: tuple[str, str] = ("clean", "after regularizer")) -> go.Figure:
    """The same ``channels`` of a ``(C, H, W)`` activation before and after the regularizer, side by side
    on one colour scale (each channel divided by its clean maximum)."""
    clean, regularized = normalise_channels(clean, regularized)
    picked = list(channels)
    zmin = min(0.0, float(clean[picked].min()), float(regularized[picked].min()))
    zmax = max(1.0, float(regularized[picked].max()))
    columns = mosaic_columns(len(picked))
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.04)
    for col, maps in enumerate((clean, regularized), start=1):
        fig.add_trace(_mosaic_trace(maps, picked, columns, coloraxis="coloraxis"), row=1, col=col)
    fig.update_layout(coloraxis=dict(colorscale=MOSAIC_COLORS, cmin=zmin, cmax=zmax,
                                     colorbar=dict(title="a / clean max", thickness=12)),
                      margin=dict(l=10, r=10, t=40, b=10), height=460, uirevision="features")
    _square_axes(fig, 2)
    return fig


def cluster_mosaic(labels: torch.Tensor, channels: Sequence[int], dropped: Sequence[int] = ()) -> go.Figure:
    """Each channel's cluster label map (``(C, H, W)`` integers), tiled; ``dropped`` clusters are drawn
    black, so the map shows which regions one draw removed."""
    labels = torch.as_tensor(labels).to(torch.float32)
    n_labels = int(labels.max().item()) + 1 if labels.numel() else 1
    shown = labels.clone()
    for cluster in dropped:
        shown[labels == cluster] = -1  # below every label: the first colour of the scale
    colors = ["#000000"] + [_qualitative(i) for i in range(n_labels)]
    steps = np.linspace(0, 1, len(colors) + 1)
    colorscale = [[float(p), color] for i, color in enumerate(colors) for p in (steps[i], steps[i + 1])]
    fig = go.Figure(_mosaic_trace(shown.numpy(), list(channels), None, colorscale=colorscale,
                                  zmin=-1.5, zmax=n_labels - 0.5, showscale=False))
    fig.data[0].hovertemplate = "channel %{customdata}<br>cluster %{z}<extra></extra>"
    fig.update_layout(title=f"cluster maps ({n_labels} clusters, black = dropped in this draw)",
                      margin=dict(l=10, r=10, t=40, b=10), height=420, uirevision="clusters")
    _square_axes(fig, 1)
    return fig


def _qualitative(i: int) -> str:
    palette = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880",
               "#ff97ff", "#fecb52")
    return palette[i % len(palette)]


def stage_row(stages: dict[str, torch.Tensor], title: str = "") -> go.Figure:
    """One panel per ``explain()`` stage of a single channel (each ``(H, W)``), in order."""
    names = list(stages)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.02)
    for col, name in enumerate(names, start=1):
        z = np.asarray(stages[name], dtype=np.float32)
        fig.add_trace(go.Heatmap(z=z, colorscale=MOSAIC_COLORS, showscale=False,
                                 hovertemplate=f"{name}<br>%{{z:.3f}}<extra></extra>"), row=1, col=col)
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=60, b=10), height=260, uirevision="stages")
    _square_axes(fig, len(names))
    return fig


def topk_bars(rows: Sequence[Prediction], n_draws: int, agreement: float) -> go.Figure:
    """Clean probability vs. the mean over ``n_draws`` regularized passes (bar = mean, whisker = min..max)."""
    labels = [row.label for row in rows]
    fig = go.Figure([
        go.Bar(name="clean", y=labels, x=[row.clean for row in rows], orientation="h", marker_color=CLEAN_COLOR,
               hovertemplate="%{y}: %{x:.3f}<extra>clean</extra>"),
        go.Bar(name=f"regularized (mean of {n_draws})", y=labels, x=[row.mean for row in rows], orientation="h",
               marker_color=REGULARIZED_COLOR,
               error_x=dict(type="data", symmetric=False, array=[row.high - row.mean for row in rows],
                            arrayminus=[row.mean - row.low for row in rows]),
               hovertemplate="%{y}: %{x:.3f}<extra>regularized mean</extra>"),
    ])
    fig.update_layout(barmode="group", yaxis=dict(autorange="reversed"), xaxis=dict(range=[0, 1], title="probability"),
                      title=f"top-5 predictions: top-1 unchanged in {agreement:.0%} of {n_draws} draws",
                      legend=dict(orientation="h", y=-0.2), margin=dict(l=10, r=10, t=50, b=10), height=340,
                      uirevision="topk")
    return fig
