"""The dashboard in headless chromium: started like `make run`, home renders, every page is reachable."""
from __future__ import annotations

from pathlib import Path

import pytest

from app import available_pages
from dropviz.regularizers import REGISTRY

pytestmark = pytest.mark.browser

EXCEPTION = '[data-testid="stException"]'
NAV_LINK = '[data-testid="stSidebarNavLink"]'


def test_home_renders_at_the_printed_url(app_server, page, screenshot):
    assert app_server.url.startswith("http://127.0.0.1:")
    app_server.open(page)
    assert "dropviz" in page.locator("h1").first.inner_text()
    table = page.locator('[data-testid="stMarkdown"] table').first
    for spec in REGISTRY.values():
        assert spec.display_name in table.inner_text()
    assert page.locator(EXCEPTION).count() == 0
    screenshot(page, "home")


def test_navigation_reaches_every_page(app_server, page, screenshot, wait_for_app):
    app_server.open(page)
    pages = available_pages()
    labels = [label.get_attribute("label") for label in page.locator(f"{NAV_LINK} span[label]").all()]
    # Streamlit shows the menu only when there is more than one page.
    assert labels == ([title for _, title, *_ in pages] if len(pages) > 1 else [])
    for index, (path, title, *_) in enumerate(pages):
        # The first page is the default one, served at the app's root; the others at their file's name.
        url = f"{app_server.url}/" if index == 0 else f"{app_server.url}/{Path(path).stem}"
        if labels:
            page.locator(f'{NAV_LINK}[href="{url}"]').click()
            page.wait_for_url(url)
            wait_for_app(page)
        assert page.locator(EXCEPTION).count() == 0, f"{title}: {page.locator(EXCEPTION).all_inner_texts()}"
        assert page.locator('[data-testid="stMain"] [data-testid="stElementContainer"]').count() > 0, \
            f"{title} rendered nothing"
        screenshot(page, f"page-{Path(path).stem}")


def test_a_deep_link_is_the_first_visit_of_a_fresh_server(app_server_factory, page, screenshot):
    """A shared link opened before anyone visited the home page still gets app.py's navigation and logo
    (Streamlit would otherwise run the page file alone, as a legacy folder-based app)."""
    server = app_server_factory()
    server.open(page, "lecture?chapter=dropblock&step=2")
    labels = [label.get_attribute("label") for label in page.locator(f"{NAV_LINK} span[label]").all()]
    assert labels == [title for _, title, *_ in available_pages()]
    assert page.locator('[data-testid="stSidebarLogo"], [data-testid="stLogo"]').count() > 0
    assert page.locator(EXCEPTION).count() == 0
    screenshot(page, "deep-link-fresh-server")
