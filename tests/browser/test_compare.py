"""Compare page in headless chromium: a link with chosen methods renders the grid, table and drop-rate plot; the
methods' pills add and remove methods, in the link too."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EXCEPTION = '[data-testid="stException"]'
FIGURE = '[data-testid="stPlotlyChart"] .main-svg'


def query(url: str, key: str) -> list[str] | None:
    """The values of ``key`` in ``url``'s query (the app rewrites its URL after a script run: wait for it)."""
    return parse_qs(urlparse(url).query).get(key)


def test_link_with_chosen_methods_then_resample(app_server, page, screenshot, wait_for_app):
    app_server.open(page, "compare?methods=Dropout&methods=DropBlock&methods=DropCluster&drop_prob=0.2&seed=4")
    page.wait_for_selector(FIGURE)
    assert page.locator(EXCEPTION).count() == 0
    expect(page.locator('[data-testid="stPlotlyChart"]')).to_have_count(4)  # a figure per method, the drop-rate plot
    expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(1)
    screenshot(page, "compare-from-link")
    page.get_by_role("button", name="Resample").click()
    wait_for_app(page)
    page.wait_for_url(lambda url: query(url, "seed") not in (None, ["4"]))  # a new seed in the link
    assert page.locator(EXCEPTION).count() == 0
    page.locator('[data-testid="stPlotlyChart"]').last.scroll_into_view_if_needed()
    screenshot(page, "compare-drop-rate")


def test_a_methods_pill_adds_and_removes_its_method_in_the_grid_and_the_link(app_server, page, wait_for_app):
    app_server.open(page, "compare?methods=Dropout&methods=DropBlock")
    page.wait_for_selector(FIGURE)
    figures = page.locator('[data-testid="stPlotlyChart"]')
    expect(figures).to_have_count(3)  # two methods and the drop-rate plot
    page.get_by_role("button", name="Disout").click()
    wait_for_app(page)
    expect(figures).to_have_count(4)
    page.wait_for_url(lambda url: query(url, "methods") == ["Dropout", "DropBlock", "Disout"])
    page.get_by_role("button", name="Dropout", exact=True).click()
    wait_for_app(page)
    expect(figures).to_have_count(3)
    page.wait_for_url(lambda url: query(url, "methods") == ["DropBlock", "Disout"])
    assert page.locator(EXCEPTION).count() == 0
