"""Pure plotly figures of regularizer stages: one panel per ``explain()`` stage, comparison grids, numbers.

Panels are PNG images inside ``go.Image`` traces laid out on hand-placed axes: a 224 x 224 row of six
stages costs a few milliseconds to build and well under a megabyte to send, where one heatmap per panel
through ``make_subplots`` costs tens of milliseconds and megabytes of JSON. Each stage is drawn by its kind:

* ``image``: values mapped linearly from ``[min(0, lo), max(1, hi)]`` to black..white (RGB if 3 channels);
* ``mask``: 1 = kept (white), 0 = dropped (black); a 3-channel mask whose channels differ is drawn in colour
  (each colour channel shows that channel's mask), any other channel count as the fraction kept;
* ``signed``: blue (negative) .. white (0) .. red (positive), symmetric about 0 (e.g. Disout's distortion);
* ``labels``: integer cluster ids in a qualitative palette.

An ``output`` is drawn on its input's scale times the kept scale (:func:`output_panel`), so kept units look
like the input and the title says by how much they were scaled.
"""
from __future__ import annotations

import base64
import hashlib
import io
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

STAGE_KINDS = {"input": "image", "seeds": "mask", "mask": "mask", "distortion": "signed",
               "clusters": "labels", "output": "image"}
STAGE_TITLES = {"input": "input", "seeds": "block seeds (white = seed)", "mask": "mask (white = kept)",
                "distortion": "distortion", "clusters": "cluster map", "output": "output"}
PALETTE = np.array([(99, 110, 250), (239, 85, 59), (0, 204, 150), (171, 99, 250), (255, 161, 90),
                    (25, 211, 243), (255, 102, 146), (182, 232, 128), (255, 151, 255), (254, 203, 82),
                    (31, 119, 180), (140, 86, 75)], dtype=np.uint8)
TITLE_SIZE = 15
MIN_PANEL_WIDTH = 170  # narrower, and titles such as "mask (white = kept)" run into each other
# px of one small figure (a stage on the Explorer, a method on Compare): four a row beside the sidebar at
# 1280 px, two at 800.
SMALL_FIGURE_WIDTH = 175


@dataclass(frozen=True)
class Panel:
    """One image of a grid: an ``(H, W)`` or ``(H, W, 3)`` uint8 array, its title (also the trace's name)
    and a note written after the title."""

    pixels: np.ndarray
    title: str
    note: str = ""


def stage_kind(name: str, t: torch.Tensor) -> str | None:
    """How to draw stage ``name``; None for stages that are not maps (e.g. a list of dropped cluster ids)."""
    if t.dim() < 2 or name == "dropped_clusters":
        return None
    if name.startswith("mask"):  # Multi-Sample Dropout names its extra masks mask_2, mask_3, ...
        return "mask"
    return STAGE_KINDS.get(name, "image")


def to_pixels(t: torch.Tensor, kind: str = "image", vrange: tuple[float, float] | None = None) -> np.ndarray:
    """A stage tensor (``(N, C, H, W)``, ``(C, H, W)`` or ``(H, W)``; first sample shown) as uint8 pixels.

    ``vrange`` fixes the values an ``image`` maps to black and white (default: see the module docstring)."""
    t = t.detach().to("cpu", torch.float32)
    while t.dim() > 3:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if kind == "labels":
        labels = t[0].to(torch.int64).numpy()
        return PALETTE[labels % len(PALETTE)]
    if kind == "signed":
        values = t.mean(dim=0).numpy()
        bound = max(float(np.abs(values).max()), 1e-12)
        return _diverging(values / bound)
    if kind == "mask":
        lo, hi = 0.0, 1.0
        if t.shape[0] == 3 and not (t == t[:1]).all():
            return _to_uint8(t.permute(1, 2, 0).numpy(), lo, hi)
        return _to_uint8(t.mean(dim=0).numpy(), lo, hi)
    lo, hi = vrange or image_range(t)
    values = t.permute(1, 2, 0).numpy() if t.shape[0] == 3 else t.mean(dim=0).numpy()
    return _to_uint8(values, lo, hi)


def image_range(t: torch.Tensor) -> tuple[float, float]:
    """The values drawn black and white: [0, 1] widened to include everything in ``t``."""
    return min(0.0, float(t.min())), max(1.0, float(t.max()))


def _to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((values - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def _diverging(unit: np.ndarray) -> np.ndarray:
    """[-1, 1] to blue-white-red."""
    blue, red = np.array([33, 102, 172], np.float32), np.array([178, 24, 43], np.float32)
    weight = np.abs(unit)[..., None]
    end = np.where(unit[..., None] < 0, blue, red)
    return (255.0 * (1 - weight) + end * weight + 0.5).astype(np.uint8)


def png_uri(pixels: np.ndarray) -> str:
    """A data URI of ``pixels`` as PNG (fast compression: masks shrink to a few hundred bytes anyway).

    Panels that repeat between reruns (the input, while only a parameter changes) are encoded once.
    """
    digest = hashlib.blake2b(pixels.tobytes(), digest_size=16, person=repr(pixels.shape).encode()[:16]).digest()
    uri = _png_cache.get(digest)
    if uri is None:
        buffer = io.BytesIO()
        _png_image(pixels).save(buffer, format="PNG", compress_level=1)
        uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        with _png_cache_lock:  # Streamlit serves sessions from several threads
            if len(_png_cache) >= _PNG_CACHE_SIZE:
                _png_cache.pop(next(iter(_png_cache)))  # oldest first
            _png_cache[digest] = uri
    return uri


def _png_image(pixels: np.ndarray) -> Image.Image:
    """Masks (only 0 and 255) as 1-bit gray or a 3-bit palette: a fraction of the data to compress."""
    if not np.all((pixels == 0) | (pixels == 255)):
        return Image.fromarray(pixels)
    if pixels.ndim == 2:
        return Image.fromarray(pixels > 0)
    index = (pixels[..., 0] >> 7 << 2) | (pixels[..., 1] >> 7 << 1) | (pixels[..., 2] >> 7)
    image = Image.fromarray(index.astype(np.uint8), "P")
    image.putpalette(_BINARY_PALETTE)
    return image


_BINARY_PALETTE = [255 * (i >> shift & 1) for i in range(8) for shift in (2, 1, 0)]
_PNG_CACHE_SIZE = 64
_png_cache: dict[bytes, str] = {}
_png_cache_lock = threading.Lock()


# What every panel's axes, titles and frames share, stated once in a template (applied to every axis,
# annotation and shape), which keeps building a figure of 28 panels to a few milliseconds.
_AXIS = dict(visible=False, constrain="domain")
_GRID_TEMPLATE = dict(layout=dict(
    xaxis=_AXIS, yaxis=_AXIS,
    annotationdefaults=dict(xref="paper", yref="paper", showarrow=False, xanchor="center", yanchor="middle",
                            font=dict(size=TITLE_SIZE)),
    # A thin frame, so an all-white panel (nothing dropped) still shows where it is.
    shapedefaults=dict(type="rect", line=dict(color="#b0b0b0", width=1), layer="above"),
))


def image_grid(rows: Sequence[Sequence[Panel | None]], *, row_titles: Sequence[str] = (),
               panel_height: int = 220, gap: float = 0.012, title: str | None = None) -> go.Figure:
    """Panels in a grid of equal cells, each keeping its aspect ratio and pixel-exact hover coordinates.

    ``None`` leaves a cell empty. Row titles, if given, are written vertically at the left.
    """
    n_rows, n_cols = len(rows), max(len(row) for row in rows)
    left = 0.03 if row_titles else 0.0
    title_space = 26 / (panel_height * n_rows)  # paper height of the ~26 px kept above each image for its title
    cell_w = (1.0 - left - gap * (n_cols - 1)) / n_cols
    cell_h = (1.0 - gap * (n_rows - 1)) / n_rows
    data, annotations, shapes = [], [], []
    layout: dict = {}
    index = 0
    for r, row in enumerate(rows):
        top = 1.0 - r * (cell_h + gap)
        y_domain = [top - cell_h, top - title_space]
        for c, panel in enumerate(row):
            if panel is None:
                continue
            index += 1
            suffix = "" if index == 1 else str(index)
            x0 = left + c * (cell_w + gap)
            h, w = panel.pixels.shape[:2]
            data.append(go.Image(source=png_uri(panel.pixels), xaxis=f"x{suffix}", yaxis=f"y{suffix}",
                                 name=panel.title, hovertemplate=f"{panel.title}<br>x %{{x}}, y %{{y}}<extra></extra>"))
            layout[f"xaxis{suffix}"] = dict(domain=[x0, x0 + cell_w], range=[-0.5, w - 0.5])
            # A panel narrower than its cell moves up, right under its title.
            layout[f"yaxis{suffix}"] = dict(domain=y_domain, range=[h - 0.5, -0.5], scaleanchor=f"x{suffix}",
                                            constraintoward="top")
            shapes.append(dict(xref=f"x{suffix}", yref=f"y{suffix}", x0=-0.5, x1=w - 0.5, y0=-0.5, y1=h - 0.5))
            annotations.append(dict(text=f"{panel.title} {panel.note}".strip(), x=x0 + cell_w / 2, y=y_domain[1],
                                    yanchor="bottom"))
        if r < len(row_titles):
            annotations.append(dict(text=f"<b>{row_titles[r]}</b>", x=0, y=(y_domain[0] + y_domain[1]) / 2,
                                    textangle=-90, xanchor="left"))
    layout.update(template=_GRID_TEMPLATE, annotations=annotations, shapes=shapes,
                  height=int(panel_height * n_rows + (40 if title else 10)),
                  margin=dict(l=0, r=0, t=40 if title else 10, b=0), plot_bgcolor="rgba(0,0,0,0)",
                  paper_bgcolor="rgba(0,0,0,0)", showlegend=False, dragmode=False,
                  title=dict(text=title, x=0.0, xanchor="left") if title else None)
    return go.Figure(data=data, layout=layout)


def tensor_image(t: torch.Tensor, title: str, kind: str = "image", *, height: int = 300) -> go.Figure:
    """One tensor as a single image figure (see the module docstring for ``kind``)."""
    return image_grid([[Panel(to_pixels(t, kind), title)]], panel_height=height)


def stage_panels(stages: Mapping[str, torch.Tensor], titles: Mapping[str, str] | None = None,
                 max_panels: int = 6) -> list[Panel]:
    """A panel per map-like stage, in the stages' order; non-map stages are skipped. Beyond ``max_panels``
    the middle stages are left out (the last panel's title says how many), so a row stays readable."""
    titles = {**STAGE_TITLES, **(titles or {})}
    drawable = [(name, t, kind) for name, t in stages.items() if (kind := stage_kind(name, t)) is not None]
    hidden = max(0, len(drawable) - max_panels)
    if hidden:
        drawable = drawable[:max_panels - 1] + drawable[-1:]
    panels = [output_panel(stages, titles.get(name, name)) if name == "output" and "input" in stages
              else Panel(to_pixels(t, kind), titles.get(name, stage_title(name))) for name, t, kind in drawable]
    if hidden:
        panels[-1] = Panel(panels[-1].pixels, panels[-1].title, f"{panels[-1].note} ({hidden} more not shown)")
    return panels


def output_panel(stages: Mapping[str, torch.Tensor], title: str) -> Panel:
    """The output drawn on the input's scale divided by the kept scale (e.g. ``1 / (1 - p)``), so a kept
    unit looks exactly like the input and only what was dropped or distorted stands out; the title says so."""
    lo, hi = image_range(stages["input"])
    scale = kept_scale(stages) if "mask" in stages else None
    if scale is None or scale <= 0 or abs(scale - 1.0) < 1e-3:
        return Panel(to_pixels(stages["output"], "image", (lo, hi)), title)
    return Panel(to_pixels(stages["output"], "image", (lo * scale, hi * scale)), title, f"÷ {scale:.2f}")


def stage_title(name: str) -> str:
    """A stage's title for students: Multi-Sample Dropout's extra masks ``mask_2``... become "mask, sample 2"."""
    prefix, _, number = name.rpartition("_")
    return f"mask, sample {number}" if prefix == "mask" and number.isdigit() else name


def stage_row(stages: Mapping[str, torch.Tensor], *, titles: Mapping[str, str] | None = None,
              width: int = 780, title: str | None = None, max_panels: int = 6) -> go.Figure:
    """The stages of one ``explain()`` call side by side, in order (input, seeds, mask, ..., output), in as
    few rows of equal length as keep each panel at least :data:`MIN_PANEL_WIDTH` of about ``width`` pixels.

    The height fits square panels into that width (a wider screen gets the same height)."""
    panels = stage_panels(stages, titles, max_panels)
    n_rows = -(-len(panels) // max(1, width // MIN_PANEL_WIDTH))
    per_row = -(-len(panels) // n_rows)
    rows = [panels[start:start + per_row] for start in range(0, len(panels), per_row)]
    panel_height = int(min(320, max(150, width / per_row + 26)))
    return image_grid(rows, panel_height=panel_height, title=title)


def stage_figures(stages: Mapping[str, torch.Tensor], *, width: int = SMALL_FIGURE_WIDTH,
                  titles: Mapping[str, str] | None = None, max_panels: int = 6) -> list[go.Figure]:
    """The panels of :func:`stage_row` as one figure each, ``width`` px wide: figures of a fixed width wrap onto
    rows in a page of any width, where one figure's row would shrink its panels and run their titles together."""
    return [image_grid([[panel]], panel_height=width + 26) for panel in stage_panels(stages, titles, max_panels)]


def comparison_column(name: str, stages: Mapping[str, torch.Tensor] | str, *,
                      width: int = SMALL_FIGURE_WIDTH) -> go.Figure:
    """One method of a comparison, ``width`` px wide: its output over its mask, titled with its name.

    ``stages`` may be an error message instead (the output cell is left grey and says it failed). Figures
    of a fixed width can wrap onto rows in a page of any width, and their height fits their square panels.
    """
    if isinstance(stages, str):
        rows = [[Panel(np.full((8, 8), 230, np.uint8), "error")]]
    else:
        rows = [[output_panel(stages, "output")], [Panel(to_pixels(stages["mask"], "mask"), "mask")]]
    figure = image_grid(rows, panel_height=width + 26, title=name)
    return figure.update_layout(title_font_size=14)  # "Multi-Sample Dropout" in 175 px


def kept_scale(stages: Mapping[str, torch.Tensor]) -> float | None:
    """``sum(output) / sum(input)`` over the kept units: the factor kept units were scaled by (None if
    their input sums to ~0)."""
    x = stages["input"]
    kept = (stages["mask"] > 0).to(x.dtype)
    kept_input = float((x * kept).sum())
    return float((stages["output"] * kept).sum()) / kept_input if abs(kept_input) > 1e-6 else None


def stage_stats(stages: Mapping[str, torch.Tensor], drop_prob: float | None) -> dict[str, float | int | None]:
    """Numbers that go with one draw: requested vs realised drop fraction, the scale on kept units, and
    how many blocks (DropBlock seeds) or clusters (summed over channels: each channel drops its own) were
    dropped when the method has them.

    The scale is measured, not assumed (:func:`kept_scale`).
    """
    stats: dict[str, float | int | None] = {
        "requested drop": drop_prob,
        "realised drop": float(1.0 - stages["mask"].to(torch.float32).mean()),
        "kept scale": kept_scale(stages),
    }
    if "seeds" in stages:
        seeds = stages["seeds"]
        shared = bool((seeds == seeds[:, :1]).all())  # one mask for all channels: count its seeds once
        stats["blocks dropped"] = int((seeds[:, :1] if shared else seeds).sum())
    if "dropped_clusters" in stages:  # flags, 1 = dropped, per sample, channel and cluster
        stats["clusters dropped, all channels"] = int(stages["dropped_clusters"].sum())
    return stats
