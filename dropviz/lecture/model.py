"""The lecture's content model (chapters of ordered steps) and the URL that names one view of it.

A view is ``?chapter=<key>&step=<1-based>&hide=<flags>`` plus one parameter per control, e.g.
``?chapter=dropblock&step=2&block_size=5&hide=sidebar,controls``. Parsing never raises: anything
unknown or out of range falls back to the default and comes back as a note the page can show.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

import plotly.graph_objects as go

from dropviz.regularizers.registry import Param

# What a prepared link can hide: the sidebar (navigation and table of contents), the parameter
# controls, and the Previous/Next step bar.
HIDE_FLAGS: tuple[str, ...] = ("sidebar", "controls", "nav")


@dataclass(frozen=True)
class Step:
    """One slide: a figure, its formula (LaTeX for ``st.latex``) and one or two sentences.

    ``live`` figures read data that changes while the app runs (the runs database): never cache them.
    """

    title: str
    text: str
    formula: str
    figure: Callable[[Mapping[str, Any]], go.Figure]
    live: bool = False


@dataclass(frozen=True)
class Chapter:
    """One idea, told in ``steps``; ``controls`` names the entries of CONTROLS its figures read;
    ``source`` (markdown) is the paper or code the chapter follows."""

    key: str
    title: str
    summary: str
    steps: tuple[Step, ...]
    controls: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class View:
    chapter: Chapter
    step: int  # 1-based, as in the URL
    hide: frozenset[str]

    @property
    def current(self) -> Step:
        return self.chapter.steps[self.step - 1]


def first_value(query: Mapping[str, Any], name: str) -> str | None:
    """A query parameter as one string (Streamlit gives the last value; lists come from repeated keys)."""
    value = query.get(name)
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else None
    return None if value is None else str(value)


def parse_view(query: Mapping[str, Any], chapters: tuple[Chapter, ...]) -> tuple[View, list[str]]:
    """The view a URL names, and a note for each part of it that was not understood."""
    notes = []
    by_key = {chapter.key: chapter for chapter in chapters}
    chapter_key = first_value(query, "chapter")
    chapter = by_key.get(chapter_key or chapters[0].key)
    if chapter is None:
        notes.append(f"Unknown chapter {chapter_key!r}; chapters are {', '.join(by_key)}.")
        chapter = chapters[0]

    step = 1
    raw_step = first_value(query, "step")
    if raw_step is not None:
        try:
            step = int(raw_step)
        except ValueError:
            notes.append(f"step must be a whole number, got {raw_step!r}.")
        if not 1 <= step <= len(chapter.steps):
            notes.append(f"{chapter.title} has steps 1 to {len(chapter.steps)}, got {raw_step}.")
            step = min(max(step, 1), len(chapter.steps))

    hide = set()
    for flag in filter(None, (first_value(query, "hide") or "").split(",")):
        if flag.strip() in HIDE_FLAGS:
            hide.add(flag.strip())
        else:
            notes.append(f"Unknown hide flag {flag.strip()!r}; flags are {', '.join(HIDE_FLAGS)}.")
    return View(chapter, step, frozenset(hide)), notes


def parse_control(query: Mapping[str, Any], control: Param) -> tuple[Any, str | None]:
    """A control's value from the URL, or its default and a note when the URL's value is unusable."""
    raw = first_value(query, control.name)
    if raw is None:
        return control.default, None
    try:
        value = control.kind(float(raw)) if control.kind is int else control.kind(raw)
        if control.kind is int and float(raw) != value:
            raise ValueError
    except ValueError:
        return control.default, f"{control.name} must be a {control.kind.__name__}, got {raw!r}."
    if not control.min <= value <= control.max:
        return control.default, f"{control.name} must be in [{control.min}, {control.max}], got {raw}."
    return value, None


def view_query(chapter: str, step: int, params: Mapping[str, Any] | None = None,
               hide: tuple[str, ...] | frozenset[str] = ()) -> str:
    """The query string of a prepared link, e.g. ``chapter=dropblock&step=2&block_size=5&hide=sidebar``."""
    unknown = set(hide) - set(HIDE_FLAGS)
    if unknown:
        raise ValueError(f"hide flags must be among {HIDE_FLAGS}, got {sorted(unknown)}")
    pairs: list[tuple[str, Any]] = [("chapter", chapter), ("step", step), *(params or {}).items()]
    if hide:
        pairs.append(("hide", ",".join(flag for flag in HIDE_FLAGS if flag in hide)))
    return urlencode(pairs, safe=",")
