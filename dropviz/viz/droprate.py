"""Realised drop fraction of DropBlock implementations against block size and map size, and its figure.

``drop_prob`` promises a fraction of dropped units; whether a DropBlock delivers it depends on how it turns
``drop_prob`` into a seed rate (gamma), how it treats blocks at the border, and what it does when the block
is larger than the map. This measures it: every implementation gets a tensor of ones, the dropped fraction
is the share of zeros in its output, averaged over ``draws`` independent maps of ``channels`` channels.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

DropFn = Callable[[torch.Tensor, float, int, torch.Generator], torch.Tensor]
COLORS = {"dropviz": "#c2410c", "torchvision": "#2563eb", "timm": "#16a34a"}


def _ours(x, drop_prob, block_size, generator):
    from dropviz.regularizers import REGISTRY

    module = REGISTRY["dropblock"].make(drop_prob=drop_prob, block_size=block_size, share_channels=False)
    return module.train()(x, generator=generator)


def _torchvision(x, drop_prob, block_size, generator):
    from torchvision.ops import drop_block2d

    with _global_seed(generator):  # torchvision draws from the global RNG
        return drop_block2d(x, drop_prob, block_size, training=True)


def _timm(x, drop_prob, block_size, generator):
    from timm.layers import drop_block_2d

    with _global_seed(generator):
        return drop_block_2d(x, drop_prob, block_size, couple_channels=False)


@contextmanager
def _global_seed(generator: torch.Generator):
    """Run a peer that only knows the global RNG deterministically, leaving the caller's RNG state intact."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def implementations() -> dict[str, DropFn]:
    """The DropBlocks to measure: ours (when registered), torchvision's, and timm's when importable."""
    from dropviz.regularizers import REGISTRY

    found: dict[str, DropFn] = {}
    if "dropblock" in REGISTRY:
        found["dropviz"] = _ours
    found["torchvision"] = _torchvision
    try:
        import timm.layers  # noqa: F401
        found["timm"] = _timm
    except ImportError:
        pass
    return found


def drop_rate_sweep(drop_prob: float = 0.1, block_sizes: Sequence[int] = tuple(range(1, 12)),
                    map_sizes: Sequence[int] = (7, 14, 28, 56), *, draws: int = 16, channels: int = 4,
                    seed: int = 0, impls: dict[str, DropFn] | None = None) -> list[dict]:
    """One row per (implementation, map size, block size): the mean and standard error of the realised
    drop fraction over ``draws`` maps, or the error message when the implementation refuses the setting."""
    rows = []
    for name, fn in (impls or implementations()).items():
        generator = torch.Generator().manual_seed(seed)
        for size in map_sizes:
            x = torch.ones(draws, channels, size, size)
            for block_size in block_sizes:
                row = dict(implementation=name, map_size=size, block_size=block_size, requested=drop_prob,
                           realised=None, stderr=None, error=None)
                try:
                    out = fn(x, drop_prob, block_size, generator)
                except (ValueError, RuntimeError) as err:
                    row["error"] = f"{type(err).__name__}: {err}"
                else:
                    per_draw = (out == 0).to(torch.float64).mean(dim=(1, 2, 3))
                    row["realised"] = float(per_draw.mean())
                    row["stderr"] = float(per_draw.std() / draws ** 0.5) if draws > 1 else 0.0
                rows.append(row)
    return rows


def drop_rate_figure(rows: Sequence[dict], *, height: int = 360) -> go.Figure:
    """Realised drop fraction against block size, one panel per map size, a line per implementation
    (error bars: standard error over draws); the dotted line is the requested fraction and an ``x`` at
    the bottom marks a setting the implementation refused (hover for its message)."""
    map_sizes = sorted({row["map_size"] for row in rows})
    names = list(dict.fromkeys(row["implementation"] for row in rows))
    fig = make_subplots(rows=1, cols=len(map_sizes), shared_yaxes=True, horizontal_spacing=0.02,
                        subplot_titles=[f"{size} x {size} map" for size in map_sizes])
    requested = rows[0]["requested"] if rows else 0.0
    top = max([requested * 1.5] + [row["realised"] + row["stderr"] for row in rows if row["realised"] is not None])
    for col, size in enumerate(map_sizes, start=1):
        for name in names:
            mine = [row for row in rows if row["map_size"] == size and row["implementation"] == name]
            ok = [row for row in mine if row["error"] is None]
            failed = [row for row in mine if row["error"] is not None]
            color = COLORS.get(name, "#555")
            fig.add_trace(go.Scatter(
                x=[row["block_size"] for row in ok], y=[row["realised"] for row in ok], name=name,
                mode="lines+markers", line=dict(color=color), legendgroup=name, showlegend=col == 1,
                error_y=dict(type="data", array=[row["stderr"] for row in ok], visible=True, thickness=1),
                hovertemplate=f"{name}<br>block %{{x}}<br>dropped %{{y:.3f}}<extra></extra>"), row=1, col=col)
            if failed:
                fig.add_trace(go.Scatter(
                    x=[row["block_size"] for row in failed], y=[0.0] * len(failed), mode="markers",
                    marker=dict(symbol="x", size=9, color=color), name=f"{name} refused", legendgroup=name,
                    showlegend=False, text=[row["error"] for row in failed],
                    hovertemplate=f"{name} refused block %{{x}}:<br>%{{text}}<extra></extra>"), row=1, col=col)
        fig.add_hline(y=requested, line=dict(dash="dot", color="#555"), row=1, col=col)
        fig.update_xaxes(title_text="block_size", row=1, col=col, tick0=2, dtick=4)  # 3 labels fit 800 px
    fig.update_yaxes(title_text="realised drop fraction", row=1, col=1)
    fig.update_yaxes(range=[-0.02, top * 1.08])
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
                      legend=dict(orientation="h", y=-0.25), uirevision="droprate")
    return fig

