"""Widgets built from REGISTRY specs, mirrored in the URL so a link restores the exact view.

Every widget is keyed ``f"{key}{name}"``: with ``bind_url`` the key is also the query parameter
(``?drop_prob=0.3&block_size=5&seed=7``), so pass ``key=""`` on a page for short links or a prefix such as
``key="left_"`` when two panels share a page. A link value a widget cannot take is named in a warning
(:func:`warn_unusable_url_value`) instead of being dropped without a word.
"""
from __future__ import annotations

import secrets
from typing import Any, Iterable, Sequence
from urllib.parse import urlencode

import streamlit as st

from dropviz.lecture.model import parse_control
from dropviz.regularizers import REGISTRY, MethodSpec, Param
from dropviz.viz.figures import SMALL_FIGURE_WIDTH

SEED_MAX = 2**31 - 1
SHOWN_OPTIONS = 8  # a warning lists at most this many of the allowed values
# Width in px of the controls in a wrapping row: the small figures' (four a row beside the sidebar at 1280 px,
# two at 800), so controls and figures line up.
CONTROL_WIDTH = SMALL_FIGURE_WIDTH
# One method's few sliders: three a row at 1280 px, and long enough to set a value on a projector.
METHOD_CONTROL_WIDTH = 240
SEED_WIDTH = 100


def _bind(bind_url: bool) -> str | None:
    return "query-params" if bind_url else None


def unusable_url_value_note(key: str, values: Sequence[str], *, options: Sequence[str] = (),
                            param: Param | None = None) -> str | None:
    """Why the link's ``values`` for widget ``key`` cannot be used, or None if they can.

    ``param`` checks a number (its kind and range, worded as the Lecture words it) or a flag; otherwise the
    values must be among ``options``, the labels the widget shows (what a bound widget's URL holds)."""
    if not values:
        return None
    if param is not None and param.kind is bool:
        bad = [value for value in values[-1:] if value.lower() not in ("true", "false")]
        return f"{key} must be true or false, got {bad[0]!r}." if bad else None
    if param is not None:
        return parse_control({key: values[-1]}, param)[1]
    bad = [value for value in values if value not in options]
    if not bad:
        return None
    shown = ", ".join(map(str, options[:SHOWN_OPTIONS])) + (", ..." if len(options) > SHOWN_OPTIONS else "")
    return f"{key} must be one of {shown}; got {', '.join(map(repr, bad))}."


def warn_unusable_url_value(key: str, *, options: Sequence[str] = (), param: Param | None = None,
                            container=st) -> None:
    """Call before a URL-bound widget: Streamlit resets a value it cannot take to the default silently, so
    say which value of the link was ignored (see :func:`unusable_url_value_note`)."""
    note = unusable_url_value_note(key, st.query_params.get_all(key), options=options, param=param)
    if note:
        container.warning(f"Ignored from the link: {note} Showing the default.", icon=":material/link_off:")


def param_widget(param: Param, *, key: str, bind_url: bool = True, container=st,
                 width: int | str = "stretch") -> Any:
    """The widget for one :class:`Param`: a slider for numbers, a toggle for flags, a choice for strings;
    ``width`` in px or "stretch" (a toggle is as wide as its label)."""
    widget_key = f"{key}{param.name}"
    common = dict(key=widget_key, help=param.help or None, bind=_bind(bind_url))
    choices = getattr(param, "choices", None)
    if bind_url:
        warn_unusable_url_value(widget_key, options=choices, param=None if choices else param, container=container)
    if choices:
        return container.selectbox(param.label, list(choices), index=list(choices).index(param.default),
                                   width=width, **common)
    if param.kind is bool:
        return container.toggle(param.label, value=bool(param.default), **common)
    if param.kind is int:
        return container.slider(param.label, int(param.min), int(param.max), int(param.default),
                                int(param.step or 1), width=width, **common)
    if param.kind is float:
        return container.slider(param.label, float(param.min), float(param.max), float(param.default),
                                float(param.step or 0.01), width=width, **common)
    return container.text_input(param.label, value=str(param.default), width=width, **common)


def method_select(*, key: str, bind_url: bool = True, names: Iterable[str] | None = None,
                  label: str = "Method", container=st) -> MethodSpec:
    """A choice among REGISTRY methods (by display name); returns the chosen spec."""
    options = list(names or REGISTRY)
    widget_key = f"{key}method"
    if bind_url:
        link_value = st.query_params.get(widget_key)
        if link_value in options and widget_key not in st.session_state:
            # The URL holds the label shown (DropBlock); a link may also name the REGISTRY key (dropblock).
            st.session_state[widget_key] = link_value
        else:
            warn_unusable_url_value(widget_key, options=[REGISTRY[n].display_name for n in options],
                                    container=container)
    name = container.selectbox(label, options, format_func=lambda n: REGISTRY[n].display_name,
                               key=widget_key, bind=_bind(bind_url))
    return REGISTRY[name]


def method_controls(spec: MethodSpec, *, key: str, bind_url: bool = True, wrap: bool = False) -> dict[str, Any]:
    """A widget per parameter ``spec`` uses (only those), in a row that wraps if ``wrap``, else one under another.

    Parameters with the same name share their widget across methods, so switching method keeps e.g.
    ``drop_prob``.
    """
    return shared_controls([spec], key=key, bind_url=bind_url, wrap=wrap, width=METHOD_CONTROL_WIDTH)


def shared_controls(specs: Iterable[MethodSpec], *, key: str, bind_url: bool = True, wrap: bool = False,
                    width: int = CONTROL_WIDTH) -> dict[str, Any]:
    """One widget per parameter name used by any of ``specs`` (the first spec's range wins); with ``wrap``,
    side by side at ``width`` px and onto a new row when the page is too narrow (columns would squeeze them
    instead, cutting their labels)."""
    params: dict[str, Param] = {}
    for spec in specs:
        for param in spec.params:
            params.setdefault(param.name, param)
    if not wrap:
        return {name: param_widget(param, key=key, bind_url=bind_url) for name, param in params.items()}
    with st.container(horizontal=True):
        return {name: param_widget(param, key=key, bind_url=bind_url, width=width)
                for name, param in params.items()}


def wrapping_columns(spec: int | Sequence[float], *, key: str, min_width: str, **options) -> list:
    """``st.columns(spec, **options)`` whose columns go under one another, each the full width, rather than
    shrink below ``min_width`` (a CSS length such as ``"18rem"``): Streamlit stacks columns only in a window
    narrower than 640 px, and beside the sidebar at 800 px they squeeze formulas, labels and buttons. ``key``
    names their container (unique on the page)."""
    st.html(f'<style>.st-key-{key} [data-testid="stColumn"] {{ min-width: min(100%, {min_width}); }}</style>')
    return st.container(key=key).columns(spec, **options)


def seed_control(*, key: str, bind_url: bool = True, default: int = 0) -> int:
    """The random seed of the draw (same seed, same mask on any machine) and a button drawing a new one."""
    widget_key = f"{key}seed"

    def resample() -> None:
        st.session_state[widget_key] = secrets.randbelow(10_000)

    if bind_url:
        warn_unusable_url_value(widget_key, param=Param(widget_key, "seed", int, default, 0, SEED_MAX))
    # Kept together, and as wide as they need: in a narrow column the button goes under the box, never cut.
    with st.container(horizontal=True, vertical_alignment="bottom", width="content"):
        seed = st.number_input("seed", 0, SEED_MAX, default, 1, key=widget_key, bind=_bind(bind_url),
                               width=SEED_WIDTH, help="The same seed gives the same mask, on every machine.")
        st.button("Resample", key=f"{key}resample", on_click=resample, icon=":material/casino:",
                  help="Draw a new random seed.")
    return int(seed)


def share_link(*, label: str = "Share") -> str:
    """A popover with a copyable link to this page with every URL-bound control as it is now."""
    query = urlencode([(name, value) for name in st.query_params
                       for value in st.query_params.get_all(name)])
    link = f"{st.context.url or ''}" + (f"?{query}" if query else "")
    with st.popover(label, icon=":material/link:"):
        st.caption("Copy it with the button at the right of the box. It restores every control, the seed "
                   "included, so it shows the same picture on any machine (an uploaded image is not part of it).")
        st.code(link, language=None, wrap_lines=True)
    return link
