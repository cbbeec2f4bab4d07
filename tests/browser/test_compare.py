"""Compare page in headless chromium: a link with chosen methods renders the grid, table and drop-rate plot; the
methods' pills add and remove methods, in the link too."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.browser

EXCEPTION = '[data-testid="stException"]'
FIGURE = '[data-testid="stPlotlyChart"] .main-svg'


def test_link_with_chosen_methods_then_resample(app_server, page, screenshot, wait_for_app):
    app_server.open(page, "compare?methods=Dropout&methods=DropBlock&methods=DropCluster&drop_prob=0.2&seed=4")
    page.wait_for_selector(FIGURE)
    assert page.locator(EXCEPTION).count() == 0
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 4  # a figure per method, the drop-rate plot
    table = page.locator('[data-testid="stDataFrame"]')
    assert table.count() == 1
    screenshot(page, "compare-from-link")
    page.get_by_role("button", name="Resample").click()
    wait_for_app(page)
    seed = parse_qs(urlparse(page.url).query).get("seed")  # a new seed in the link ("seed=4" could prefix it)
    assert seed is not None and seed != ["4"]
    assert page.locator(EXCEPTION).count() == 0
    page.locator('[data-testid="stPlotlyChart"]').last.scroll_into_view_if_needed()
    screenshot(page, "compare-drop-rate")


def test_a_methods_pill_adds_and_removes_its_method_in_the_grid_and_the_link(app_server, page, wait_for_app):
    app_server.open(page, "compare?methods=Dropout&methods=DropBlock")
    page.wait_for_selector(FIGURE)
    figures = page.locator('[data-testid="stPlotlyChart"]')
    assert figures.count() == 3  # two methods and the drop-rate plot
    page.get_by_role("button", name="Disout").click()
    wait_for_app(page)
    assert figures.count() == 4
    assert parse_qs(urlparse(page.url).query)["methods"] == ["Dropout", "DropBlock", "Disout"]
    page.get_by_role("button", name="Dropout", exact=True).click()
    wait_for_app(page)
    assert figures.count() == 3
    assert parse_qs(urlparse(page.url).query)["methods"] == ["DropBlock", "Disout"]
    assert page.locator(EXCEPTION).count() == 0
