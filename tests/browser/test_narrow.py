"""At 800 x 900 (a laptop with the sidebar open, a split screen) the pages wrap instead of overflowing: nothing
in the main area reaches past its right edge, where it would be cut off, and no page link is truncated."""
from __future__ import annotations

import pytest

from dropviz.lecture import CHAPTERS

pytestmark = pytest.mark.browser

NARROW = {"width": 800, "height": 900}
EXCEPTION = '[data-testid="stException"]'

# Visible elements of the main block whose right edge passes the block's own right edge (its padding
# included): the main block clips them. Invisible parts are skipped: KaTeX's MathML copy, plotly's drag handles
# (20 px squares at a plot's corners, past its edge); the inside of a table (it scrolls sideways in its box) is
# its own to clip, by Streamlit's design.
OVERFLOWING = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    const edge = main.getBoundingClientRect().right + 1;
    return [...main.querySelectorAll('*')]
        .filter(element => !element.closest('.katex-mathml, .draglayer'))
        .filter(element => !element.parentElement.closest('[data-testid="stDataFrame"]'))
        .filter(element => {
            const box = element.getBoundingClientRect();
            return box.width > 0 && box.height > 0 && box.right > edge;
        })
        .map(element => `${element.closest('[data-testid]')?.dataset.testid} ${element.tagName} `
                        + `${element.textContent.slice(0, 40)}`)
        .slice(0, 10);
}"""
# Chosen values of a multiselect that lie outside its box: in a one-line box they scroll out of sight.
HIDDEN_CHIPS = """() => [...document.querySelectorAll('[data-testid="stMultiSelectTagsContainer"] [data-tag]')]
    .filter(chip => {
        const box = chip.closest('[data-testid="stMultiSelectTagsContainer"]').getBoundingClientRect();
        const own = chip.getBoundingClientRect();
        return own.left < box.left - 1 || own.right > box.right + 1 || own.bottom > box.bottom + 1;
    }).map(chip => chip.getAttribute('aria-label'))"""
# Titles inside a figure (plotly's annotations and figure titles) that run into each other or past the figure:
# plotly neither wraps nor shrinks them when a figure is narrower than it was laid out for.
FIGURE_TEXT_CLASHES = """() => {
    const box = e => e.getBoundingClientRect();
    const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    return [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stPlotlyChart"]')].flatMap(chart => {
        const svg = box(chart.querySelector('.main-svg'));
        const texts = [...chart.querySelectorAll('.gtitle, .annotation-text')];
        return texts.filter(t => box(t).right > svg.right + 1 || box(t).left < svg.left - 1
                                 || texts.some(o => o !== t && meet(box(t), box(o))));
    }).map(t => t.textContent.slice(0, 40));
}"""
# Page links and metric labels that Streamlit cuts short with an ellipsis.
TRUNCATED_LABELS = """() => [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stPageLink"] span, '
    + '[data-testid="stMain"] [data-testid="stMetricLabel"] [data-testid="stMarkdownContainer"]')]
    .filter(label => label.scrollWidth > label.clientWidth + 1).map(label => label.textContent)"""
# Formulas wider than the block they sit in: KaTeX's display box then scrolls them sideways.
FORMULAS_TOO_WIDE = """() => [...document.querySelectorAll('[data-testid="stMain"] .katex-display')]
    .filter(k => k.scrollWidth > k.closest('[data-testid="stVerticalBlock"]').clientWidth + 1)
    .map(k => k.textContent.slice(0, 60))"""
# Buttons that run past the block they sit in, which cuts them off: a segmented control's last options in a
# column too narrow for it.
CLIPPED_BUTTONS = """() => [...document.querySelectorAll('[data-testid="stMain"] button')].filter(button => {
    const own = button.getBoundingClientRect();
    const block = button.closest('[data-testid="stColumn"], [data-testid="stVerticalBlock"]').getBoundingClientRect();
    return own.width > 0 && own.right > block.right + 1;
}).map(button => button.textContent)"""
# Image figures with an empty band under their images: a figure laid out for a wider page, whose images plotly
# shrank to the width it got while the figure kept its height.
EMPTY_UNDER_IMAGES = """() => [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stPlotlyChart"]')]
    .filter(chart => chart.querySelector('image'))
    .filter(chart => {
        const bottom = Math.max(...[...chart.querySelectorAll('image')].map(i => i.getBoundingClientRect().bottom));
        return chart.querySelector('.main-svg').getBoundingClientRect().bottom - bottom > 40;
    }).map(chart => chart.querySelector('.gtitle, .annotation-text')?.textContent.slice(0, 40))"""

PAGE_CHECKS = (OVERFLOWING, CLIPPED_BUTTONS, HIDDEN_CHIPS, FIGURE_TEXT_CLASHES, EMPTY_UNDER_IMAGES, FORMULAS_TOO_WIDE,
               TRUNCATED_LABELS)


def assert_page_fits(page) -> None:
    """No exception, no sideways scroll of the page, and none of :data:`PAGE_CHECKS` finds anything."""
    assert page.locator(EXCEPTION).count() == 0
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    for check in PAGE_CHECKS:
        assert page.evaluate(check) == []


@pytest.fixture
def narrow_page(browser):
    context = browser.new_context(viewport=NARROW)
    page = context.new_page()
    page.set_default_timeout(120_000)  # 2 shared CPUs: the Feature Maps page's first run is slow
    yield page
    context.close()


# The Explorer with DropBlock: the most stages, the longest panel title and the widest formula.
@pytest.mark.parametrize("path", ["", "explorer?method=dropblock", "compare", "features"])
def test_nothing_overflows_at_800_px(app_server, narrow_page, screenshot, path):
    app_server.open(narrow_page, "")  # the home page first, as a visitor would arrive
    app_server.open(narrow_page, path)
    narrow_page.wait_for_timeout(1000)  # plotly lays its figures out after the script run has finished
    screenshot(narrow_page, f"narrow-{path.split('?')[0] or 'home'}")
    assert_page_fits(narrow_page)


# On the Lecture page beside the sidebar a figure is about 430 px wide: its titles must end inside the figure
# (plotly cuts them at the edge), and no subplot title or legend may overlap another title or an axis title.
LECTURE_CLIPPED = """() => {
    const box = e => e.getBoundingClientRect();
    const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    const chart = document.querySelector('[data-testid="stPlotlyChart"]');
    const svg = box(chart.querySelector('.main-svg'));
    const cut = [...chart.querySelectorAll('.gtitle, .annotation-text')].filter(t => box(t).right > svg.right + 1);
    const covering = [...chart.querySelectorAll('.annotation-text, .legend')];
    const others = [...chart.querySelectorAll('.gtitle, .xtitle, .ytitle, .annotation-text')];
    const overlapping = covering.filter(a => others.some(o => o !== a && meet(box(a), box(o))));
    return [...cut, ...overlapping].map(e => e.textContent.slice(0, 60));
}"""
# A chapter heading squeezed beside the step buttons to a word a line.
SQUEEZED_HEADINGS = """() => [...document.querySelectorAll('[data-testid="stMain"] h2')]
    .filter(h => h.getBoundingClientRect().height > 2.5 * parseFloat(getComputedStyle(h).lineHeight))
    .map(h => h.textContent)"""


@pytest.mark.parametrize("key, number", [(c.key, number) for c in CHAPTERS for number in range(1, len(c.steps) + 1)])
def test_lecture_figures_fit_beside_the_sidebar_at_800_px(app_server, narrow_page, screenshot, key, number):
    app_server.open(narrow_page, f"lecture?chapter={key}&step={number}")
    narrow_page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg')
    narrow_page.wait_for_timeout(1000)  # plotly lays its figures out after the script run has finished
    assert narrow_page.locator(EXCEPTION).count() == 0
    assert narrow_page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    assert narrow_page.evaluate(LECTURE_CLIPPED) == []
    assert narrow_page.evaluate(SQUEEZED_HEADINGS) == []
    assert narrow_page.evaluate(FORMULAS_TOO_WIDE) == []
    screenshot(narrow_page, f"narrow-lecture-{key}-{number}")


def test_training_page_with_runs_fits_at_800_px(app_server_factory, train_tiny_run, narrow_page, screenshot):
    server = app_server_factory()  # its own runs folder: a run in the shared one would change other tests' pages
    train_tiny_run(server.runs_dir)
    server.open(narrow_page, "training")
    narrow_page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg')  # the run's curves
    narrow_page.get_by_text("Launch a run").click()  # the form is folded away once there are runs
    narrow_page.wait_for_timeout(1000)
    screenshot(narrow_page, "narrow-training")
    assert_page_fits(narrow_page)
