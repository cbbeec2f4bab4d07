"""Pure plotly figures of feature maps: channel mosaics, before/after grids, cluster maps, top-k bars.

A grid of many channels is ONE image of tiles (a PNG through :func:`dropviz.viz.figures.image_grid`), with
one invisible marker per tile that carries the channel number and its activity in the hover text: a
browser draws that in a fraction of the time a facet per channel takes, and a 64-channel 56 x 56 grid
weighs tens of kilobytes instead of megabytes of per-pixel heatmap data.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.colors import sample_colorscale, unlabel_rgb

from dropviz.features.extract import Prediction

from .figures import PALETTE, Panel, image_grid

GAP = 1  # blank source pixels between tiles
GAP_COLOR = (255, 255, 255)
MOSAIC_COLORS = "Viridis"
COLORBAR_MARGIN = 90  # px right of a mosaic for its colour bar
MIN_SIDE = 360  # small maps are enlarged (nearest neighbour) so tiles stay crisp on screen
CLEAN_COLOR = "#636efa"
REGULARIZED_COLOR = "#ef553b"
_LUT = np.array([unlabel_rgb(c) for c in sample_colorscale(MOSAIC_COLORS, np.linspace(0, 1, 256).tolist())],
                dtype=np.uint8)


def mosaic_columns(n_tiles: int) -> int:
    """Columns of a near-square grid of ``n_tiles`` tiles."""
    return max(1, math.ceil(math.sqrt(n_tiles)))


def tile(maps: torch.Tensor | np.ndarray, channels: Sequence[int], columns: int | None = None) -> np.ndarray:
    """``maps[c]`` for each ``c`` of ``channels`` (``maps`` is ``(C, H, W)``) laid out row by row as one
    ``float32`` image, with NaN in the gaps between tiles."""
    maps = np.asarray(maps, dtype=np.float32)
    columns = columns or mosaic_columns(len(channels))
    rows = max(1, math.ceil(len(channels) / columns))
    h, w = maps.shape[1:]
    image = np.full((rows * (h + GAP) - GAP, columns * (w + GAP) - GAP), np.nan, dtype=np.float32)
    for i, channel in enumerate(channels):
        top, left = (i // columns) * (h + GAP), (i % columns) * (w + GAP)
        image[top:top + h, left:left + w] = maps[channel]
    return image


def _zoom(shape: tuple[int, int]) -> int:
    return max(1, math.ceil(MIN_SIDE / max(shape)))


def _colorize(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values to Viridis RGB over ``[lo, hi]``, gaps (NaN) white, enlarged by :func:`_zoom`."""
    gaps = np.isnan(image)
    unit = np.clip((np.nan_to_num(image, nan=lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = _LUT[np.rint(unit * 255).astype(np.intp)]
    rgb[gaps] = GAP_COLOR
    return _enlarge(rgb)


def _enlarge(pixels: np.ndarray) -> np.ndarray:
    zoom = _zoom(pixels.shape[:2])
    return pixels.repeat(zoom, axis=0).repeat(zoom, axis=1)


def _tile_markers(maps: torch.Tensor, channels: Sequence[int], columns: int, axis: str, label: str,
                  colorbar: dict | None = None) -> go.Scatter:
    """One invisible marker at the centre of each tile: the hover text names the channel."""
    h, w = maps.shape[1:]
    rows = math.ceil(len(channels) / columns)
    zoom = _zoom((rows * (h + GAP) - GAP, columns * (w + GAP) - GAP))
    index = np.arange(len(channels))
    x = ((index % columns) * (w + GAP) + w / 2) * zoom - 0.5  # tile centre in enlarged pixel coordinates
    y = ((index // columns) * (h + GAP) + h / 2) * zoom - 0.5
    activity = maps[list(channels)].abs().mean(dim=(1, 2)).numpy()
    marker = dict(size=1, opacity=0)
    if colorbar:
        marker = dict(size=1, opacity=0, color=activity, **colorbar)
    return go.Scatter(x=x, y=y, mode="markers", marker=marker, xaxis=f"x{axis}", yaxis=f"y{axis}",
                      customdata=np.stack([np.asarray(channels), activity], axis=1), showlegend=False,
                      hovertemplate=f"{label}<br>channel %{{customdata[0]}}<br>mean |a| %{{customdata[1]:.3f}}"
                                    "<extra></extra>")


def normalise_channels(clean: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Divide every channel of ``clean`` and of ``others`` (all ``(C, H, W)``) by that channel's largest
    clean ``|a|``, so faint and strong channels are both visible and a rescaled (``1 / keep``) value
    reads as > 1 after the regularizer."""
    scale = clean.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return [t / scale for t in (clean, *others)]


def _mosaic_figure(panels: Sequence[tuple[str, np.ndarray]], markers: Sequence[go.Scatter],
                   panel_height: int) -> go.Figure:
    fig = image_grid([[Panel(pixels, name) for name, pixels in panels]], panel_height=panel_height)
    for image in fig.data:
        image.hoverinfo = "skip"  # the tile markers answer hovers; pixel coordinates mean little here
    fig.add_traces(list(markers))
    fig.update_xaxes(showline=False)  # the white gaps frame every tile already
    fig.update_yaxes(showline=False)
    fig.update_layout(hovermode="closest", hoverdistance=-1)
    if any(m.marker.showscale for m in markers):
        fig.update_layout(margin_r=COLORBAR_MARGIN)
    return fig


def before_after(clean: torch.Tensor, regularized: torch.Tensor, channels: Sequence[int],
                 titles: tuple[str, str] = ("clean", "after regularizer"), *, width: int = 370) -> list[go.Figure]:
    """The same ``channels`` of a ``(C, H, W)`` activation before and after the regularizer, as two figures
    ``width`` px wide (side by side on a wide page, one under the other on a narrow one) on one colour scale:
    each channel divided by its clean maximum, the scale fixed by the clean side (so the clean grid never
    changes with the regularizer; kept units rescaled above 1 show the top colour). Each has the colour bar,
    so both mosaics are the same size and either reads alone (a downloaded PNG, say)."""
    clean, regularized = normalise_channels(clean.float(), regularized.float())
    picked = list(channels)
    lo, hi = min(0.0, float(clean[picked].min())), 1.0
    columns = mosaic_columns(len(picked))
    colorbar = dict(colorscale=MOSAIC_COLORS, cmin=lo, cmax=hi, showscale=True,
                    colorbar=dict(title="a / clean max<br>(clipped at 1)", thickness=12))
    figures = []
    for maps, title in ((clean, titles[0]), (regularized, titles[1])):
        pixels = _colorize(tile(maps, picked, columns), lo, hi)
        # The mosaic's height at the width it gets beside the colour bar, and 26 px for its title above it.
        panel_height = round((width - COLORBAR_MARGIN) * pixels.shape[0] / pixels.shape[1]) + 26
        figures.append(_mosaic_figure([(title, pixels)], [_tile_markers(maps, picked, columns, "", title, colorbar)],
                                      panel_height))
    return figures


def cluster_mosaic(labels: torch.Tensor, channels: Sequence[int], mask: torch.Tensor | None = None, *,
                   panel_height: int = 420) -> go.Figure:
    """Each channel's cluster label map (``(C, H, W)`` integers) tiled in the stage palette; where one
    draw's ``mask`` (``(C, H, W)``, 0 = dropped) removed a cluster it is drawn black."""
    labels = torch.as_tensor(labels).to(torch.int64)
    picked = list(channels)
    columns = mosaic_columns(len(picked))
    image = tile(labels, picked, columns)
    gaps = np.isnan(image)
    pixels = PALETTE[np.nan_to_num(image, nan=0).astype(np.int64) % len(PALETTE)]
    if mask is not None:
        pixels[tile(mask, picked, columns) == 0] = 0
    pixels[gaps] = GAP_COLOR
    n_clusters = len(torch.unique(labels[picked]))
    marker = _tile_markers(labels.float(), picked, columns, "", "cluster map")
    marker.hovertemplate = "channel %{customdata[0]}<extra></extra>"
    title = f"cluster map per channel ({n_clusters} cluster ids; black = dropped in the first draw)"
    return _mosaic_figure([(title, _enlarge(pixels))], [marker], panel_height)


def topk_bars(rows: Sequence[Prediction], n_draws: int, agreement: float) -> go.Figure:
    """Clean probability vs. the mean over ``n_draws`` regularized passes (bar = mean, whisker = min..max)."""
    labels = [row.label for row in rows]
    top = max(max(row.clean, row.high) for row in rows)
    fig = go.Figure([
        go.Bar(name="clean", y=labels, x=[row.clean for row in rows], orientation="h", marker_color=CLEAN_COLOR,
               hovertemplate="%{y}: %{x:.3f}<extra>clean</extra>"),
        go.Bar(name=f"regularized: mean of {n_draws} draws, min..max", y=labels,
               x=[row.mean for row in rows], orientation="h", marker_color=REGULARIZED_COLOR,
               error_x=dict(type="data", symmetric=False, array=[row.high - row.mean for row in rows],
                            arrayminus=[row.mean - row.low for row in rows]),
               hovertemplate="%{y}: %{x:.3f}<extra>regularized mean</extra>"),
    ])
    fig.update_layout(barmode="group", yaxis=dict(autorange="reversed", type="category"),  # "0".."9" stay labels
                      xaxis=dict(range=[0, min(1.0, 1.15 * top)], title="probability"),  # small ones readable too
                      title=dict(text=f"Top-5 classes<br><sup>top-1 unchanged in {agreement:.0%} of {n_draws} "
                                      "draws</sup>", x=0, xanchor="left"),
                      legend=dict(orientation="h", y=-0.3), margin=dict(l=10, r=10, t=60, b=10), height=380,
                      uirevision="topk")
    return fig
