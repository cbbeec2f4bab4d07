"""Figures for the Lecture page: pure plotly, readable on a projector, sweeps that play in the browser.

Builders take arrays and numbers (never modules) and return ``go.Figure``; animations carry all their
frames, so pressing Play or dragging the frame slider needs no round-trip to the server.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .droprate import COLORS as DROP_RATE_COLORS
from .figures import Panel, image_grid, png_uri

# Presenter defaults: text that reads from the back row, the app's accent for what was dropped.
FONT_SIZE = 20
TITLE_SIZE = 24
ACCENT = "#c2410c"
MUTED = "#78716c"
HIGHLIGHT = "#2563eb"
# 0 = dropped (accent), 1 = kept (near white), for grids of keep decisions.
MASK_COLORS = [[0.0, ACCENT], [1.0, "#f5f5f4"]]


def title_layout(text: str) -> dict:
    """A figure title at presenter size; animation frames pass the whole dict, or plotly drops the font."""
    return {"text": text, "x": 0.0, "xanchor": "left", "font": {"size": TITLE_SIZE, "weight": "bold"}}


def presenter_layout(fig: go.Figure, title: str | None = None, height: int = 380) -> go.Figure:
    fig.update_layout(
        title=None if title is None else title_layout(title),
        font={"size": FONT_SIZE}, height=height, margin={"l": 40, "r": 20, "t": 80, "b": 40},
        template="plotly_white", uirevision="lecture", legend_font_size=16,
    )
    fig.update_annotations(font_size=FONT_SIZE)
    fig.update_xaxes(tickfont_size=16, title_font_size=18)
    fig.update_yaxes(tickfont_size=16, title_font_size=18)
    return fig


def panel_figure(panels: Sequence[Panel], title: str | None = None, panel_height: int = 270,
                 highlight: tuple[int, int, int, int] | None = None) -> go.Figure:
    """Side-by-side panels (the Explorer's image grid) at presenter size.

    ``highlight = (row0, col0, row1, col1)`` outlines that inclusive pixel rectangle on every panel
    (e.g. DropBlock's valid seed region).
    """
    fig = image_grid([list(panels)], panel_height=panel_height, title=title)
    if highlight is not None:
        row0, col0, row1, col1 = highlight
        for index in range(1, len(panels) + 1):
            suffix = "" if index == 1 else str(index)
            fig.add_shape(type="rect", xref=f"x{suffix}", yref=f"y{suffix}", x0=col0 - 0.5, x1=col1 + 0.5,
                          y0=row0 - 0.5, y1=row1 + 0.5, line={"color": HIGHLIGHT, "width": 3, "dash": "dash"})
    return _presenter_grid(fig, title)


def _presenter_grid(fig: go.Figure, title: str | None) -> go.Figure:
    """Projector fonts on an image grid, and room above it for a title of that size."""
    fig.update_annotations(font_size=FONT_SIZE)
    fig.update_layout(font={"size": FONT_SIZE}, margin={"l": 8, "r": 8, "t": 60 if title else 30, "b": 8},
                      height=fig.layout.height + 30, uirevision="lecture")
    if title:
        fig.update_layout(title=title_layout(title))
    return fig


def map_sweep(frames: Sequence[tuple[str, Sequence[Panel], str]], slider_label: str,
              panel_height: int = 250, start: int = 0) -> go.Figure:
    """An in-browser animation of side-by-side panels.

    ``frames`` are ``(frame label, panels, caption)``, every frame with the same number of panels (their
    titles are taken from the first frame). The caption becomes the figure title of its frame (e.g. a
    measurement at that setting). Frame ``start`` is shown until Play or the slider is used, so the still
    view already makes the point. Each frame is a few PNG data URIs, so a 10-frame sweep stays small.
    """
    if not frames:
        raise ValueError("map_sweep needs at least one frame")
    count = len(frames[0][1])
    if any(len(panels) != count for _, panels, _ in frames):
        raise ValueError(f"every frame needs the same number of panels ({count})")
    _, first_panels, first_caption = frames[start]
    titled = [Panel(panel.pixels, title.title) for panel, title in zip(first_panels, frames[0][1])]
    fig = _presenter_grid(image_grid([titled], panel_height=panel_height, title=first_caption), first_caption)
    fig.frames = [
        go.Frame(name=label, traces=list(range(count)),
                 data=[go.Image(source=png_uri(panel.pixels)) for panel in panels],
                 layout={"title": title_layout(caption)})
        for label, panels, caption in frames
    ]
    _add_player(fig, [label for label, _, _ in frames], slider_label, start)
    return fig


def _add_player(fig: go.Figure, labels: Sequence[str], slider_label: str, start: int = 0,
                below_axis_titles: bool = False) -> None:
    """Play/Pause buttons and a frame slider, all handled by plotly.js in the browser. Play runs every
    frame from the first; the slider starts at frame ``start`` (the one the figure shows)."""
    def go_to(names, duration):
        return [names, {"frame": {"duration": duration, "redraw": True}, "mode": "immediate",
                        "transition": {"duration": 0}, "fromcurrent": False}]

    # Plotly places the controls in fractions of the plot's height: convert from pixels, so they clear the
    # tick labels and axis title (about 75 px at presenter sizes) at every figure height.
    gap = 75 if below_axis_titles else 5
    margin = fig.layout.margin
    bottom = gap + 90  # the buttons, the slider and its ticks
    height = fig.layout.height + bottom - (margin.b or 0)
    y = -gap / (height - (margin.t or 0) - bottom)
    fig.update_layout(
        updatemenus=[{
            "type": "buttons", "direction": "left", "x": 0.0, "y": y, "xanchor": "left", "yanchor": "top",
            "pad": {"t": 10, "r": 10}, "showactive": False,
            "buttons": [{"label": "▶ Play", "method": "animate", "args": go_to(None, 700)},
                        {"label": "❚❚ Pause", "method": "animate", "args": go_to([None], 0)}],
        }],
        sliders=[{
            # Starts right of the buttons (about 190 px at presenter font sizes), value shown at its right end.
            "active": start, "x": 0.3, "len": 0.7, "y": y, "yanchor": "top", "pad": {"t": 10},
            "currentvalue": {"prefix": f"{slider_label} = ", "font": {"size": FONT_SIZE}, "xanchor": "right"},
            "steps": [{"label": label, "method": "animate", "args": go_to([label], 0)} for label in labels],
        }],
        margin={"b": bottom}, height=height,
    )


def _image_axes(fig: go.Figure, axis: str) -> None:
    """Hide the ticks of an image subplot and keep its pixels square."""
    fig.layout[f"xaxis{axis}"].update(visible=False, constrain="domain")
    fig.layout[f"yaxis{axis}"].update(visible=False, scaleanchor=f"x{axis}", constrain="domain")


def correlation_figure(feature_map: Panel, correlations: Sequence[float], title: str | None = None) -> go.Figure:
    """A feature map beside the correlation of each unit with its neighbour ``d`` pixels away."""
    distances = np.arange(1, len(correlations) + 1)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=[feature_map.title, "correlation with the unit d pixels away"])
    fig.add_trace(go.Image(source=png_uri(feature_map.pixels), hoverinfo="skip"), row=1, col=1)
    fig.add_trace(go.Scatter(x=distances, y=list(correlations), mode="lines+markers", line={"color": ACCENT,
                             "width": 4}, marker={"size": 10}, name="correlation",
                             hovertemplate="d = %{x}: %{y:.2f}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="distance d (pixels)", dtick=1, row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], title_text="correlation", row=1, col=2)
    _image_axes(fig, "")
    fig.update_layout(showlegend=False)
    return presenter_layout(fig, title)


def curves_figure(x: Sequence[float], curves: Mapping[str, Sequence[float]], x_title: str, y_title: str,
                  title: str | None = None, y_range: tuple[float, float] | None = None,
                  reference: tuple[Sequence[float], str] | None = None) -> go.Figure:
    """Named line curves over one x axis; ``reference = (y values, name)`` draws a dashed guide (e.g. y = x)."""
    fig = go.Figure()
    palette = [ACCENT, "#2563eb", "#16a34a", "#7c3aed", MUTED]
    for index, (name, values) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=list(x), y=list(values), name=name, mode="lines+markers",
                                 line={"width": 4, "color": DROP_RATE_COLORS.get(name, palette[index % len(palette)])},
                                 marker={"size": 9}))
    if reference is not None:
        fig.add_trace(go.Scatter(x=list(x), y=list(reference[0]), name=reference[1], mode="lines",
                                 line={"dash": "dash", "color": MUTED, "width": 3}))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title, range=list(y_range) if y_range else None)
    # Under the axis title, not beside the figure title: beside the sidebar at 800 px its lines would cover it.
    fig.update_layout(legend={"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom", "x": 0.0})
    return presenter_layout(fig, title)


def schedule_sweep(training_steps: Sequence[int], drop_probs: Sequence[float], masks: Sequence[Panel],
                   frame_indices: Sequence[int], title: str) -> go.Figure:
    """The linear schedule as a curve with a moving marker, beside the mask drawn at that step.

    ``masks[i]`` is the keep-mask drawn at ``training_steps[frame_indices[i]]``.
    """
    if len(masks) != len(frame_indices):
        raise ValueError("one mask per frame index")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.08,
                        subplot_titles=["drop_prob over training", "mask at this step"])
    fig.add_trace(go.Scatter(x=list(training_steps), y=list(drop_probs), mode="lines",
                             line={"color": MUTED, "width": 4}, name="schedule"), row=1, col=1)

    def marker(index):
        return go.Scatter(x=[training_steps[index]], y=[drop_probs[index]], mode="markers",
                          marker={"size": 22, "color": ACCENT}, name="now")

    fig.add_trace(marker(frame_indices[-1]), row=1, col=1)
    fig.add_trace(go.Image(source=png_uri(masks[-1].pixels), hoverinfo="skip"), row=1, col=2)
    height, width = masks[-1].pixels.shape[:2]
    fig.add_shape(type="rect", xref="x2", yref="y2", x0=-0.5, x1=width - 0.5, y0=-0.5, y1=height - 0.5,
                  line={"color": MUTED, "width": 1})
    labels = [str(training_steps[index]) for index in frame_indices]
    fig.frames = [
        go.Frame(name=label, traces=[1, 2], data=[marker(index), go.Image(source=png_uri(mask.pixels))],
                 layout={"title": title_layout(f"{title}: step {label}, drop_prob = {drop_probs[index]:.3f}")})
        for label, index, mask in zip(labels, frame_indices, masks)
    ]
    span = training_steps[-1] - training_steps[0]
    fig.update_xaxes(title_text="training step", range=[training_steps[0] - 0.03 * span, training_steps[-1] + 0.03 * span],
                     row=1, col=1)
    fig.update_yaxes(title_text="drop_prob", range=[0, max(max(drop_probs) * 1.1, 0.01)], row=1, col=1)
    _image_axes(fig, "2")
    fig.update_layout(showlegend=False)
    presenter_layout(fig, f"{title}: step {labels[-1]}, drop_prob = {drop_probs[frame_indices[-1]]:.3f}",
                     height=340)
    _add_player(fig, labels, "training step", start=len(labels) - 1, below_axis_titles=True)
    return fig


def grid_figure(keep, x_title: str, y_title: str, title: str | None = None,
                column_labels: Sequence[str] | None = None) -> go.Figure:
    """A 0/1 grid (e.g. samples x residual blocks kept), dropped cells in the accent colour, with labels."""
    keep = np.asarray(keep, dtype=np.float32)
    x = list(column_labels) if column_labels is not None else list(range(1, keep.shape[1] + 1))
    fig = go.Figure(go.Heatmap(z=keep, x=x, y=list(range(1, keep.shape[0] + 1)), zmin=0, zmax=1,
                               colorscale=MASK_COLORS, showscale=False, xgap=3, ygap=3,
                               hovertemplate=f"{y_title} %{{y}}, {x_title} %{{x}}: %{{z:.0f}}<extra></extra>"))
    fig.update_xaxes(title_text=x_title, type="category" if column_labels is not None else None)
    fig.update_yaxes(title_text=y_title, autorange="reversed", dtick=1)
    return presenter_layout(fig, title)


def results_figure(rows: Sequence[Mapping[str, object]], title: str | None = None) -> go.Figure:
    """Grouped bars of reported accuracies, one group per setting, text labels on the bars.

    Each row: ``setting`` (e.g. "ResNet-50, ImageNet"), ``method``, ``top1`` (percent), ``source``.
    """
    settings = list(dict.fromkeys(str(row["setting"]) for row in rows))
    fig = make_subplots(rows=1, cols=len(settings), subplot_titles=settings, horizontal_spacing=0.08)
    colors = {"baseline": MUTED, "DropBlock": "#2563eb", "Disout": ACCENT}
    for column, setting in enumerate(settings, start=1):
        chosen = [row for row in rows if row["setting"] == setting]
        values = [float(row["top1"]) for row in chosen]
        fig.add_trace(go.Bar(
            x=[str(row["method"]) for row in chosen], y=values, text=[f"{value:.2f}" for value in values],
            textposition="outside", marker_color=[colors.get(str(row["method"]), "#7c3aed") for row in chosen],
            customdata=[str(row["source"]) for row in chosen],
            hovertemplate="%{x}: %{y:.2f}%<br>%{customdata}<extra></extra>", showlegend=False,
        ), row=1, col=column)
        low, high = min(values), max(values)
        fig.update_yaxes(range=[low - 1.5, high + 0.8], title_text="top-1 accuracy (%)" if column == 1 else None,
                         row=1, col=column)
    return presenter_layout(fig, title)


def profile_sweep(columns: Sequence[int], original: Sequence[float], profiles: Mapping[str, Sequence[float]],
                  dropped: Sequence[float], title: str, slider_label: str, start: int = 0) -> go.Figure:
    """One row of a map as a line, the regularized row animated over ``profiles`` (label -> values).

    Left: the whole row, dropped columns shaded; right: the dropped columns only, on a fixed y range that
    fits every frame, so a small distortion is still visible.
    """
    dropped_columns = [c for c, d in zip(columns, dropped) if d]
    if not dropped_columns:
        raise ValueError("profile_sweep needs at least one dropped column")
    lo, hi = min(dropped_columns), max(dropped_columns)
    inside = [[v for c, v in zip(columns, values) if lo <= c <= hi] for values in profiles.values()]
    bound = max(max(abs(v) for v in values) for values in inside) * 1.2 or 1e-3
    labels = list(profiles)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.08,
                        subplot_titles=["the whole row", "the dropped block, zoomed"])

    def output_line(values, column):
        return go.Scatter(x=list(columns), y=list(values), mode="lines+markers", name="output",
                          line={"color": ACCENT, "width": 3}, marker={"size": 6}, showlegend=column == 1)

    for column in (1, 2):
        fig.add_trace(go.Scatter(x=list(columns), y=list(original), mode="lines", name="input",
                                 line={"color": MUTED, "width": 3, "dash": "dot"}, showlegend=column == 1),
                      row=1, col=column)
        fig.add_trace(output_line(profiles[labels[start]], column), row=1, col=column)
        fig.add_vrect(x0=lo - 0.5, x1=hi + 0.5, fillcolor=HIGHLIGHT, opacity=0.12, line_width=0, row=1, col=column)
    fig.update_xaxes(title_text="column", row=1, col=1)
    fig.update_xaxes(title_text="column", range=[lo - 0.5, hi + 0.5], row=1, col=2)
    fig.update_yaxes(range=[-bound, bound], row=1, col=2)
    fig.frames = [go.Frame(name=label, traces=[1, 3], data=[output_line(profiles[label], 1), output_line(profiles[label], 2)],
                           layout={"title": title_layout(f"{title} = {label}")})
                  for label in labels]
    # On the title's line, at the right: above the subplot titles it would cover them on a narrow figure.
    fig.update_layout(legend={"orientation": "h", "yref": "container", "y": 1.0, "yanchor": "top", "x": 1.0,
                              "xanchor": "right"})
    presenter_layout(fig, f"{title} = {labels[start]}", height=340)
    _add_player(fig, labels, slider_label, start, below_axis_titles=True)
    return fig


def runs_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str,
                 references: Mapping[str, float] | None = None,
                 empty_text: str = "No runs yet: start one on the Training page,<br>and its test accuracy appears "
                                   "here epoch by epoch.") -> go.Figure:
    """Test accuracy per epoch of our own runs (label -> (epochs, accuracy %)) beside dotted reference
    levels (label -> accuracy %, e.g. a paper's number), or ``empty_text`` when there are no runs."""
    fig = go.Figure()
    palette = [ACCENT, "#2563eb", "#16a34a", "#7c3aed", "#0891b2", MUTED]
    for index, (label, (epochs, accuracy)) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=list(epochs), y=list(accuracy), name=label, mode="lines+markers",
                                 line={"width": 4, "color": palette[index % len(palette)]}, marker={"size": 9}))
    if not curves:
        fig.add_annotation(text=empty_text, x=0.5, y=0.5, xref="paper", yref="paper",
                           showarrow=False, font={"size": FONT_SIZE + 4, "color": MUTED})
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    else:
        for label, level in (references or {}).items():
            # Above the line at the left: accuracy curves rise, so that corner is the one they leave empty.
            fig.add_hline(y=level, line={"dash": "dot", "color": MUTED, "width": 2}, annotation_text=label,
                          annotation_position="top left", annotation_font_color=MUTED)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="test accuracy (%)")
    presenter_layout(fig, title)
    # The legend goes under the axis title, a run a line, with the figure grown by its lines.
    legend_height = 28 * len(curves)
    fig.update_layout(legend={"orientation": "v", "yref": "container", "y": 0.0, "yanchor": "bottom", "x": 0.0},
                      margin={"b": 80 + legend_height}, height=fig.layout.height + legend_height)
    return fig
