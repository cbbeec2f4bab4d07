"""Reusable page panels: ``visualize_*(..., *, key=...)`` draws one self-contained block of a page.

Heavy work is cached on small values (method, parameters, image id, seed); tensors travel as ``_``-prefixed
arguments that Streamlit does not hash. A parameter combination the op rejects shows its message inline.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd
import streamlit as st
import torch

from dropviz.regularizers import REGISTRY, MethodSpec
from dropviz.viz import droprate, explain, figures
from dropviz.viz.texts import method_text

MASK_LEGEND = ("Masks: white = kept in every channel, black = dropped in every channel, a colour = kept only "
               "in the channels it is made of (red, green, blue).")
SEEDS_LEGEND = ("Block seeds: white = a seed in every channel, black = no seed, a colour = a seed only in the "
                "channels it is made of.")
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def plotly_config(filename: str) -> dict:
    """Plotly toolbar settings: the camera button downloads a PNG named ``filename``."""
    return {**PLOTLY_CONFIG, "toImageButtonOptions": {**PLOTLY_CONFIG["toImageButtonOptions"], "filename": filename}}


def _frozen(params: Mapping[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


@st.cache_data(show_spinner=False, max_entries=128)
def cached_draw(name: str, params: tuple, image_id: str, seed: int, _x: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`dropviz.viz.explain.draw`, cached on the method, parameters, image (id and shape) and seed."""
    return explain.draw(REGISTRY[name], dict(params), _x, seed)


@st.cache_resource(show_spinner="Fitting the method to this image (once per image and parameters)...",
                   max_entries=8)
def cached_fitted(name: str, params: tuple, image_id: str, _x: torch.Tensor) -> torch.nn.Module:
    """The module fitted to the image; shared by sessions and only read afterwards (``explain`` is pure)."""
    return explain.build(REGISTRY[name], dict(params), fit_on=_x)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_fitted_draw(name: str, params: tuple, image_id: str, seed: int, _x: torch.Tensor):
    return explain.run(cached_fitted(name, params, image_id, _x), _x, seed)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_draw_all(names: tuple[str, ...], params: tuple, image_id: str, seed: int, _x: torch.Tensor):
    return explain.draw_all(names, dict(params), _x, seed)


@st.cache_data(show_spinner="Measuring the drop rates...", max_entries=16)
def cached_drop_rate_sweep(drop_prob: float, draws: int, seed: int) -> list[dict]:
    return droprate.drop_rate_sweep(drop_prob, draws=draws, seed=seed)


def _stats_metrics(stats: Mapping[str, Any]) -> None:
    with st.container(horizontal=True, gap="small"):  # wraps as the stages do, where columns cut the labels
        for label, value in stats.items():
            if value is None:
                shown = "n/a"
            elif isinstance(value, float):
                shown = f"{value:.3f}"
            else:
                shown = str(value)
            st.metric(label, shown, width=figures.SMALL_FIGURE_WIDTH)


def visualize_stages(spec: MethodSpec, params: Mapping[str, Any], x: torch.Tensor, seed: int, *, key: str,
                     image_id: str, fit: bool = False) -> dict[str, torch.Tensor] | None:
    """The ``explain()`` stages of one method in one row, with the draw's numbers below. With ``fit``, a
    method that learns its structure (DropCluster) is first fitted to ``x`` itself.

    Returns the stages, or None when the op rejected the parameters (its message is shown instead).
    """
    draw = cached_fitted_draw if fit else cached_draw
    try:
        stages = draw(spec.name, _frozen(params), f"{image_id}:{tuple(x.shape)}", seed, x)
    except ValueError as err:
        st.error(f"{spec.display_name} rejects these settings: {err}", icon=":material/error:")
        return None
    # A figure per stage, in rows that wrap like Compare's: four a row beside the sidebar at 1280 px, two at 800.
    with st.container(horizontal=True, gap="small", key=f"{key}stages"):
        for index, figure in enumerate(figures.stage_figures(stages)):
            st.plotly_chart(figure, width=figures.SMALL_FIGURE_WIDTH, key=f"{key}stage_{index}",
                            config=plotly_config(f"dropviz-{spec.name}-stage{index + 1}"))
    if x.shape[1] == 3:
        st.caption(f"{MASK_LEGEND} {SEEDS_LEGEND}" if "seeds" in stages else MASK_LEGEND)
    _stats_metrics(figures.stage_stats(stages, params.get("drop_prob")))
    return stages


def visualize_method_text(spec: MethodSpec) -> None:
    """What the method does, its formula and its paper: large enough for a projector."""
    text = method_text(spec)
    st.subheader(spec.display_name)
    st.markdown(text.what)
    if text.formula:
        st.latex(text.formula)
    paper = f"[{text.paper}]({text.url})" if text.url else text.paper
    st.caption(f"Paper: {paper}")


def visualize_comparison(names: Sequence[str], params: Mapping[str, Any], x: torch.Tensor, seed: int, *, key: str,
                         image_id: str) -> pd.DataFrame:
    """Outputs and masks of ``names`` side by side on the same input and seed, then a table (CSV download)."""
    results = cached_draw_all(tuple(names), _frozen(params), f"{image_id}:{tuple(x.shape)}", seed, x)
    for label, result in results.items():
        if isinstance(result, str):
            st.error(f"{label} rejects these settings: {result}", icon=":material/error:")
    # A figure per method, in rows that wrap: four a row beside the sidebar at 1280 px, two at 800, all at 1920.
    with st.container(horizontal=True, gap="small"):
        for label, result in results.items():
            st.plotly_chart(figures.comparison_column(label, result), width=figures.SMALL_FIGURE_WIDTH,
                            key=f"{key}grid_{label}", config=plotly_config(f"dropviz-compare-{label}"))
    if x.shape[1] == 3:
        st.caption(MASK_LEGEND)
    table = pd.DataFrame(explain.comparison_rows(names, results, params))
    st.dataframe(table, hide_index=True, key=f"{key}table")
    st.download_button("Download table (CSV)", data=table.to_csv(index=False).encode(), file_name="dropviz-compare.csv",
                       mime="text/csv", key=f"{key}csv", icon=":material/download:")
    return table


def visualize_drop_rate(drop_prob: float, *, key: str, draws: int = 16, seed: int = 0) -> None:
    """Realised drop fraction vs block size and map size for our DropBlock and its peers."""
    rows = cached_drop_rate_sweep(float(drop_prob), draws, seed)
    st.plotly_chart(droprate.drop_rate_figure(rows), key=f"{key}droprate", config=plotly_config("dropviz-drop-rate"))
    st.download_button("Download measurements (CSV)", data=pd.DataFrame(rows).to_csv(index=False).encode(),
                       file_name="dropviz-drop-rate.csv", mime="text/csv", key=f"{key}droprate_csv",
                       icon=":material/download:")
