"""AppTest (no browser): every chapter and step of the Lecture page renders, links restore views, hide flags hide."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from app import ROOT
from dropviz.lecture import CHAPTERS

TIMEOUT_S = 120  # the first figures import timm and fit clusters: seconds on a busy 2-core machine


@pytest.fixture
def lecture_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("DROPVIZ_READONLY", raising=False)


def open_lecture(**query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "lecture.py"), default_timeout=TIMEOUT_S)
    for name, value in query.items():
        at.query_params[name] = value
    return at.run()


def figure_title(at: AppTest) -> str:
    charts = at.get("plotly_chart")
    assert len(charts) == 1, "every step shows exactly one figure"
    return json.loads(charts[0].proto.spec)["layout"]["title"]["text"]


def where(at: AppTest) -> tuple[str, str]:
    return at.header[0].value, at.subheader[0].value


def test_next_walks_every_step_of_every_chapter_without_an_exception(lecture_env):
    at = open_lecture()
    seen = []
    while True:
        assert not at.exception, f"{where(at)}: {at.exception[0].message}"
        assert not at.error, f"{where(at)}: {at.error[0].value}"
        assert figure_title(at) and at.latex[0].value
        seen.append(where(at))
        if at.button(key="next").disabled:
            break
        at.button(key="next").click().run()
    expected = [(f"{number}. {chapter.title}", f"Step {index} of {len(chapter.steps)}: {step.title}")
                for number, chapter in enumerate(CHAPTERS, start=1)
                for index, step in enumerate(chapter.steps, start=1)]
    assert seen == expected
    assert dict(at.query_params) == {"chapter": CHAPTERS[-1].key, "step": str(len(CHAPTERS[-1].steps))}


def test_a_link_restores_chapter_step_and_parameters(lecture_env):
    at = open_lecture(chapter="disout", step="2", alpha="2.5", block_size="5", seed="7")
    assert where(at) == ("4. Disout: distort instead of dropping", "Step 2 of 3: Distortion in the blocks")
    sliders = {slider.key: slider.value for slider in at.slider}
    assert sliders == {"drop_prob": 0.2, "block_size": 5, "alpha": 2.5}
    assert at.number_input(key="seed").value == 7
    assert figure_title(at).startswith("alpha = 2.5:")


def test_previous_from_a_first_step_goes_to_the_previous_chapters_last(lecture_env):
    at = open_lecture(chapter="dropblock", step="1")
    at.button(key="previous").click().run()
    first = CHAPTERS[0]
    assert (at.query_params["chapter"], at.query_params["step"]) == (first.key, str(len(first.steps)))
    assert at.subheader[0].value.startswith(f"Step {len(first.steps)} of")


def test_the_table_of_contents_opens_a_chapter_at_its_first_step(lecture_env):
    at = open_lecture(chapter="spatial", step="3")
    at.sidebar.radio(key="toc").set_value("pitfalls").run()
    assert (at.query_params["chapter"], at.query_params["step"]) == ("pitfalls", "1")
    assert at.header[0].value.endswith("Pitfalls: is p what you get?")


def test_hide_sidebar_hides_the_table_of_contents_and_link_builder(lecture_env):
    shown = open_lecture(chapter="dropblock")
    assert shown.sidebar.radio and shown.sidebar.code
    hidden = open_lecture(chapter="dropblock", hide="sidebar")
    assert not hidden.sidebar.radio and not hidden.sidebar.code
    assert any('[data-testid="stSidebar"]' in md.value and "display: none" in md.value for md in hidden.markdown)


def test_hide_controls_removes_the_sliders_but_keeps_the_links_values(lecture_env):
    at = open_lecture(chapter="dropblock", step="1", block_size="5", hide="controls")
    assert not at.slider and not at.number_input
    assert figure_title(at).startswith("b = 5:")
    at.button(key="next").click().run()  # stepping keeps the link's values and flags
    assert dict(at.query_params) == {"chapter": "dropblock", "step": "2", "block_size": "5", "hide": "controls"}
    assert not at.slider and figure_title(at).endswith("seeds drawn")


def test_hide_nav_removes_the_step_buttons(lecture_env):
    at = open_lecture(chapter="dropblock", step="2", hide="nav,sidebar")
    assert {button.key for button in at.button} == {"resample"}  # the seed's, among the controls
    assert at.slider and where(at)[1].startswith("Step 2 of")


def test_a_broken_link_says_what_was_wrong_and_shows_the_first_chapter(lecture_env):
    at = open_lecture(chapter="nope", step="x", drop_prob="7", hide="everything")
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    for fragment in ("Unknown chapter 'nope'", "step must be a whole number", "drop_prob must be in",
                     "Unknown hide flag 'everything'"):
        assert fragment in warnings
    assert where(at)[0] == f"1. {CHAPTERS[0].title}"


def test_the_link_builder_writes_only_what_differs_from_the_defaults(lecture_env):
    at = open_lecture(chapter="dropblock", step="3", block_size="5")
    at.sidebar.checkbox(key="link-hide-sidebar").check().run()
    assert at.sidebar.code[0].value == "lecture?chapter=dropblock&step=3&block_size=5&hide=sidebar"


def test_results_show_our_runs_from_the_runs_database_labelled_as_ours(lecture_env, tmp_path):
    from dropviz.train.config import RunConfig
    from dropviz.train.db import RunsDB

    db = RunsDB(tmp_path / "runs")
    run = db.create_run(RunConfig(model="resnet20", regularizer="dropblock"), status="finished")
    for epoch, accuracy in enumerate((0.41, 0.58, 0.66), start=1):
        db.log_epoch(run, epoch, 100 * epoch, test_acc=accuracy)
    db.close()
    at = open_lecture(chapter="results", step="2")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [trace["name"] for trace in spec["data"]] == [f"ours: resnet20 + dropblock (finished, {run[-6:]})"]
    assert "measured here" in spec["layout"]["title"]["text"]
    assert any("paper" in a["text"] for a in spec["layout"]["annotations"])  # the papers' levels beside ours
