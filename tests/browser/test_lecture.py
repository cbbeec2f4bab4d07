"""Lecture mode in headless chromium at projector size: a prepared link, then Next through one chapter."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from dropviz.lecture import CHAPTERS

pytestmark = pytest.mark.browser

EXCEPTION = '[data-testid="stException"]'
FIGURE = '[data-testid="stPlotlyChart"] .main-svg'


def chapter(key):
    return next(c for c in CHAPTERS if c.key == key)


def test_prepared_link_then_next_through_dropblock(app_server, page, screenshot, wait_for_app):
    dropblock = chapter("dropblock")
    app_server.open(page, "lecture?chapter=dropblock&step=1&block_size=5&seed=3&hide=sidebar")
    page.wait_for_selector(FIGURE)
    assert not page.locator('[data-testid="stSidebar"]').is_visible()
    assert page.locator(f"{FIGURE} .gtitle").text_content().startswith("b = 5:")  # the link's block size
    for number, step in enumerate(dropblock.steps, start=1):
        # Auto-retrying assertion: on a busy machine the rerun after a click may start late.
        expect(page.locator("h3").first).to_have_text(f"Step {number} of {len(dropblock.steps)}: {step.title}",
                                                      timeout=60_000)
        wait_for_app(page)
        page.wait_for_selector(FIGURE)
        assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).all_inner_texts()
        assert page.locator(".katex").count() >= 1  # the step's formula is typeset
        # The link's values survive every step.
        assert "block_size=5" in page.url and "seed=3" in page.url and "hide=sidebar" in page.url
        screenshot(page, f"lecture-dropblock-step{number}")
        if number < len(dropblock.steps):
            page.get_by_role("button", name="Next →").click()
            page.wait_for_url(re.compile(f"step={number + 1}"))
    assert page.get_by_role("button", name="Next →").is_enabled()  # on to the next chapter


def test_default_view_tells_the_story_with_the_table_of_contents(app_server, page, screenshot):
    app_server.open(page, "lecture")
    page.wait_for_selector(FIGURE)
    sidebar = page.locator('[data-testid="stSidebar"]')
    for number, c in enumerate(CHAPTERS, start=1):
        assert f"{number}. {c.title}" in sidebar.inner_text()
    assert page.locator(EXCEPTION).count() == 0
    for key in ("previous", "next"):  # at 1280 x 720 beside the sidebar, no label is cut to "← Previo..."
        label = page.locator(f'.st-key-{key} button [data-testid="stMarkdownContainer"]')
        assert label.evaluate("e => e.scrollWidth <= e.clientWidth"), label.inner_text()
    screenshot(page, "lecture-default")


def test_play_runs_the_sweep_in_the_browser_without_the_server(app_server, page, screenshot):
    app_server.open(page, "lecture?chapter=dropblock&step=5&hide=sidebar,controls")
    page.wait_for_selector(FIGURE)
    first = page.locator(f"{FIGURE} .gtitle").text_content()  # SVG text: text_content, not inner_text
    assert first.startswith("b = 7:")  # the still view shows the slider's setting
    page.locator(".updatemenu-button").first.click()  # ▶ Play
    page.wait_for_function(
        "first => document.querySelector('[data-testid=\"stPlotlyChart\"] .gtitle').textContent !== first",
        arg=first, timeout=10_000)
    # plotly.js played the frames: Streamlit never started a script run for it.
    assert page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').count() == 1
    assert page.locator('[data-testid="stStatusWidget"]').count() == 0
    screenshot(page, "lecture-dropblock-playing")


# What ends past the box that holds it: a formula past its box, a figure title past the figure, the link
# box's text past the box (each of those boxes cuts what overflows it), or anything past the window.
CLIPPED_JS = """() => {
    const past = (e, box) => box && e.getBoundingClientRect().right > box.getBoundingClientRect().right + 1;
    const clipped = [
        // A formula box scrolls what it cannot show; KaTeX's struts add a pixel or two of rounding.
        ...[...document.querySelectorAll('.katex-display')].filter(e => e.scrollWidth > e.clientWidth + 3),
        ...[...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
            .filter(e => past(e, e.closest('.main-svg'))),
        ...[...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stCode"] pre')]
            .filter(e => e.scrollWidth > e.clientWidth + 1),
        ...[...document.querySelectorAll('.katex, .gtitle, h2, h3, button')]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1),
    ];
    return clipped.map(e => (e.textContent || '').slice(0, 60));
}"""
# Rectangles of each plotly axis title and of the Play/Pause buttons, which must not overlap.
COVERED_JS = """() => {
    const boxes = s => [...document.querySelectorAll(s)].map(e => e.getBoundingClientRect());
    const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    const titles = boxes('[data-testid="stPlotlyChart"] .xtitle');
    return boxes('.updatemenu-button').some(button => titles.some(title => meet(button, title)));
}"""


@pytest.mark.parametrize("key, number", [(c.key, number) for c in CHAPTERS for number in range(1, len(c.steps) + 1)])
def test_nothing_is_clipped_or_covered_at_projector_size(app_server, page, screenshot, key, number):
    app_server.open(page, f"lecture?chapter={key}&step={number}")
    page.wait_for_selector(FIGURE)
    assert page.locator(EXCEPTION).count() == 0
    page.evaluate("document.fonts.ready.then(() => true)")  # measured in KaTeX's fonts, not a fallback
    assert page.evaluate(CLIPPED_JS) == []
    assert not page.evaluate(COVERED_JS)
    screenshot(page, f"lecture-1280x720-{key}-{number}")
