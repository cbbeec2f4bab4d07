"""Lecture: the story of structured dropout, step by step, for a projector and for a shared link.

The URL holds the whole view: ``?chapter=dropblock&step=2&block_size=5&seed=3&hide=sidebar,controls``.
"""
from __future__ import annotations

import streamlit as st

from dropviz.lecture import CHAPTERS, CONTROLS, HIDE_FLAGS, parse_control, parse_view, view_query
from dropviz.ui.controls import param_widget, seed_control, wrapping_columns

PRESENTER_CSS = """
<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.6rem; padding-bottom: 1rem; max-width: 100%; }
[data-testid="stMainBlockContainer"] h2 { font-size: 2.1rem; padding: 0 0 0.1rem 0; }
[data-testid="stMainBlockContainer"] h3 { font-size: 1.5rem; padding: 0; }
[data-testid="stMarkdownContainer"] p { font-size: 1.3rem; line-height: 1.45; }
[data-testid="stBaseButton-secondary"] p, [data-testid="stBaseButton-primary"] p { font-size: 1.2rem; }
.katex { font-size: 1.3em; }
/* Beside the sidebar on a laptop (800 px) a figure is about 430 px wide and plotly cannot wrap its titles: below
   800 px of figure (a projector's is wider) their fonts shrink with its width (cqi: 1% of it). */
[data-testid="stPlotlyChart"] { container-type: inline-size; }
@container (max-width: 800px) {
  .gtitle { font-size: min(24px, 3.4cqi) !important; }
  .annotation-text { font-size: min(20px, 3cqi) !important; }
  .xtitle, .ytitle { font-size: min(18px, 3.4cqi) !important; }
}
/* Too narrow for the title beside the step buttons: the buttons go below the title instead of squeezing it. */
[data-testid="stLayoutWrapper"]:has(> .st-key-lecture-heading) { min-width: min(100%, 24rem); }
</style>
"""
HIDE_SIDEBAR_CSS = """
<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stExpandSidebarButton"],
[data-testid="stSidebarNav"] { display: none; }
</style>
"""

query = st.query_params.to_dict()
view, notes = parse_view(query, CHAPTERS)
chapter, step = view.chapter, view.step
chapter_index = CHAPTERS.index(chapter)


def go_to(chapter_key: str, step_number: int) -> None:
    st.query_params["chapter"] = chapter_key
    st.query_params["step"] = str(step_number)
    st.session_state["toc"] = chapter_key


def previous_view() -> tuple[str, int] | None:
    if step > 1:
        return chapter.key, step - 1
    if chapter_index > 0:
        earlier = CHAPTERS[chapter_index - 1]
        return earlier.key, len(earlier.steps)
    return None


def next_view() -> tuple[str, int] | None:
    if step < len(chapter.steps):
        return chapter.key, step + 1
    if chapter_index + 1 < len(CHAPTERS):
        return CHAPTERS[chapter_index + 1].key, 1
    return None


@st.cache_data(max_entries=64, show_spinner="Computing the figure…")
def step_figure(chapter_key: str, step_number: int, params: tuple[tuple[str, object], ...]):
    wanted = next(c for c in CHAPTERS if c.key == chapter_key)
    return wanted.steps[step_number - 1].figure(dict(params))


st.markdown(PRESENTER_CSS, unsafe_allow_html=True)
if "sidebar" in view.hide:
    st.markdown(HIDE_SIDEBAR_CSS, unsafe_allow_html=True)
else:
    with st.sidebar:
        st.session_state["toc"] = chapter.key
        titles = {c.key: f"{number}. {c.title}" for number, c in enumerate(CHAPTERS, start=1)}
        st.radio("Chapters", list(titles), key="toc", format_func=titles.get,
                 on_change=lambda: go_to(st.session_state["toc"], 1))

for note in notes:
    st.warning(note)

# Header: where we are, and the step buttons beside it, as wide as their labels (a share of the row cut
# "← Previous" short beside the sidebar at 1280 px); the title takes the rest.
header = st.container(horizontal=True, vertical_alignment="center", gap="medium")
with header.container(width="stretch", key="lecture-heading"):
    st.header(f"{chapter_index + 1}. {chapter.title}", anchor=False, help=chapter.summary)
    st.subheader(f"Step {step} of {len(chapter.steps)}: {view.current.title}", anchor=False)
    if chapter.source:
        st.caption(f"Source: {chapter.source}")
if "nav" not in view.hide:
    earlier, later = previous_view(), next_view()
    nav = header.container(horizontal=True, width="content", gap="small")
    nav.button("← Previous", key="previous", disabled=earlier is None, on_click=go_to,
               args=earlier or (chapter.key, step))
    nav.button("Next →", key="next", type="primary", disabled=later is None,
               help=None if step < len(chapter.steps) or later is None else "Next chapter",
               on_click=go_to, args=later or (chapter.key, step))

figure_area = st.container()
# Beside the sidebar at 800 px the text goes under its formula, and a control under the others.
formula_column, text_column = wrapping_columns([6, 5], key="lecture-body", min_width="18rem",
                                               vertical_alignment="center")
formula_column.latex(view.current.formula)
text_column.markdown(view.current.text)

# Parameters: the URL's values, overridden by the sliders when they are shown.
params = {}
for name, control in CONTROLS.items():
    params[name], note = parse_control(query, control)
    if note and name in chapter.controls:
        st.warning(note)
if "controls" not in view.hide and chapter.controls:
    controls = wrapping_columns(len(chapter.controls), key="lecture-controls", min_width="11rem")
    for column, name in zip(controls, chapter.controls):
        with column:
            if name == "seed":
                params[name] = seed_control(key="", default=CONTROLS["seed"].default)
            else:
                params[name] = param_widget(CONTROLS[name], key="")

with figure_area:
    used = tuple((name, params[name]) for name in chapter.controls)
    try:
        figure = view.current.figure(dict(used)) if view.current.live else step_figure(chapter.key, step, used)
    except ValueError as error:  # a combination the method rejects: say why, keep the app running
        st.error(f"This setting cannot be shown: {error}")
    else:
        st.plotly_chart(figure, width="stretch", key=f"figure-{chapter.key}-{step}",
                        config={"displaylogo": False})

if "sidebar" not in view.hide:
    with st.sidebar:
        st.divider()
        st.markdown("**Prepare a link** to this view")
        hide = [flag for flag in HIDE_FLAGS if st.checkbox(f"hide {flag}", key=f"link-hide-{flag}")]
        changed = {name: value for name, value in params.items() if value != CONTROLS[name].default}
        st.code(f"lecture?{view_query(chapter.key, step, changed, hide)}", language=None, wrap_lines=True)
        st.caption("Append it to the app's address. hide=sidebar hides this panel, hide=controls the "
                   "sliders, hide=nav the step buttons.")
