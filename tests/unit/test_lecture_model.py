"""The lecture's URL grammar: a prepared link names exactly one view, and a bad link degrades politely."""
from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from dropviz.lecture import CHAPTERS, CONTROLS, HIDE_FLAGS, parse_control, parse_view, view_query


def test_empty_url_is_the_first_step_of_the_first_chapter():
    view, notes = parse_view({}, CHAPTERS)
    assert (view.chapter, view.step, view.hide, notes) == (CHAPTERS[0], 1, frozenset(), [])


def test_a_prepared_link_round_trips():
    chapter = CHAPTERS[-1]
    query = {key: values[-1] for key, values in parse_qs(
        view_query(chapter.key, len(chapter.steps), {"seed": 3}, ("controls", "sidebar"))).items()}
    view, notes = parse_view(query, CHAPTERS)
    assert notes == []
    assert (view.chapter.key, view.step, view.hide) == (chapter.key, len(chapter.steps),
                                                        frozenset({"sidebar", "controls"}))
    assert parse_control(query, CONTROLS["seed"]) == (3, None)


def test_hide_flags_keep_their_canonical_order_in_links():
    assert view_query("spatial", 1, hide=("nav", "sidebar")).endswith("hide=sidebar,nav")
    with pytest.raises(ValueError, match="hide flags"):
        view_query("spatial", 1, hide=("everything",))


@pytest.mark.parametrize("query, note", [
    ({"chapter": "nope"}, "Unknown chapter 'nope'"),
    ({"step": "two"}, "step must be a whole number"),
    ({"step": "999"}, "has steps 1 to"),
    ({"hide": "sidebar,toolbar"}, "Unknown hide flag 'toolbar'"),
])
def test_bad_links_fall_back_and_say_why(query, note):
    view, notes = parse_view(query, CHAPTERS)
    assert any(note in n for n in notes), notes
    assert 1 <= view.step <= len(view.chapter.steps)


def test_out_of_range_step_is_clamped_to_the_last():
    view, _ = parse_view({"chapter": CHAPTERS[0].key, "step": "999"}, CHAPTERS)
    assert view.step == len(CHAPTERS[0].steps)
    view, _ = parse_view({"chapter": CHAPTERS[0].key, "step": "-2"}, CHAPTERS)
    assert view.step == 1


@pytest.mark.parametrize("raw, expected_ok", [("0.35", True), ("0.9", False), ("abc", False), ("nan", False)])
def test_control_values_are_checked_against_the_slider_range(raw, expected_ok):
    value, note = parse_control({"drop_prob": raw}, CONTROLS["drop_prob"])
    assert (note is None) == expected_ok
    assert value == (float(raw) if expected_ok else CONTROLS["drop_prob"].default)


def test_integer_controls_reject_fractions():
    assert parse_control({"block_size": "5"}, CONTROLS["block_size"]) == (5, None)
    value, note = parse_control({"block_size": "5.5"}, CONTROLS["block_size"])
    assert value == CONTROLS["block_size"].default and "int" in note


def test_chapter_keys_are_unique_and_every_step_is_complete():
    assert len({c.key for c in CHAPTERS}) == len(CHAPTERS)
    assert set(HIDE_FLAGS) == {"sidebar", "controls", "nav"}
    for chapter in CHAPTERS:
        assert chapter.steps and set(chapter.controls) <= set(CONTROLS)
        for step in chapter.steps:
            assert step.title and step.formula and callable(step.figure)
            assert 1 <= step.text.count(". ") + 1 <= 3, f"{chapter.key}/{step.title}: one or two sentences"
