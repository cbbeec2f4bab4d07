"""Compare page in headless chromium: a link with chosen methods renders the grid, table and drop-rate plot."""
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
