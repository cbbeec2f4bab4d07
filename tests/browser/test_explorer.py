"""Mask Explorer in headless chromium: a shared link restores the view, a slider changes the figure, a bad
upload shows its message and the app keeps running."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EXCEPTION = '[data-testid="stException"]'
FIGURE = '[data-testid="stPlotlyChart"]'
STAGES = ".st-key-explorer_stages"  # the row of stage figures
LINK = "explorer?method=DropBlock&drop_prob=0.3&block_size=9&seed=3&photo=chelsea"


def slider(page, label: str):
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).locator('input[type="range"]')


def figure_png(page) -> bytes:
    stages = page.locator(STAGES)
    stages.locator(FIGURE).last.locator(".main-svg").first.wait_for()
    page.wait_for_timeout(300)  # let plotly finish drawing the PNG panels
    return stages.screenshot()


def open_link(app_server, page, wait_for_app) -> None:
    """Open LINK and wait until the controls show its values (retried: a control can show its default for a
    moment before the value bound to the URL reaches it, which once failed a read right after the first run)
    and any rerun that started has finished."""
    app_server.open(page, LINK)
    expect(slider(page, "block_size")).to_have_value("9")
    expect(page.locator('[data-testid="stNumberInput"]').filter(has_text="seed").locator("input")).to_have_value("3")
    wait_for_app(page)


def test_link_restores_the_view_and_a_slider_changes_the_figure(app_server, page, screenshot, wait_for_app):
    open_link(app_server, page, wait_for_app)
    assert float(slider(page, "drop_prob").input_value()) == pytest.approx(0.3)
    assert page.locator(EXCEPTION).count() == 0
    before = figure_png(page)
    screenshot(page, "explorer-from-link")

    again = page.context.new_page()  # the same link in another tab: the very same picture
    open_link(app_server, again, wait_for_app)
    assert figure_png(again) == before
    again.close()

    slider(page, "block_size").focus()
    page.keyboard.press("ArrowRight")
    wait_for_app(page)
    page.wait_for_url(re.compile(r"[?&]block_size=10(&|$)"))  # the URL follows the control, ready to share
    after = figure_png(page)
    assert after != before
    assert page.locator(EXCEPTION).count() == 0
    screenshot(page, "explorer-after-slider")


def png_bytes(size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def upload(page, wait_for_app, name: str, data: bytes, expect: str) -> None:
    """Upload ``data`` as ``name`` and wait until the rerun it starts shows ``expect`` (the upload itself
    takes a moment before the rerun begins, so waiting for the script state alone can be too early)."""
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": name, "mimeType": "image/png", "buffer": data}])
    page.get_by_text(expect).first.wait_for()
    wait_for_app(page)


def test_bad_uploads_show_a_message_and_keep_the_previous_image(app_server, page, screenshot, wait_for_app):
    app_server.open(page, "explorer?image=upload")
    errors = page.locator('[data-testid="stAlertContentError"]')

    upload(page, wait_for_app, "good.png", png_bytes(), expect="good.png (PNG)")  # the thumbnail's caption
    assert errors.count() == 0

    upload(page, wait_for_app, "notes.png", b"these are my lecture notes, not a picture", expect="not an image")
    assert "notes.png" in errors.first.inner_text()
    assert page.locator(EXCEPTION).count() == 0
    assert page.get_by_text("Showing the last good upload, good.png (PNG).").count() == 1
    screenshot(page, "explorer-upload-not-an-image")

    truncated = png_bytes((200, 200))
    upload(page, wait_for_app, "cut.png", truncated[: len(truncated) // 2], expect="truncated")
    assert "cut.png" in errors.first.inner_text()
    assert page.locator(EXCEPTION).count() == 0
    assert page.locator(STAGES).locator(FIGURE).count() == 3  # Dropout's stages, of the last good upload
    assert page.get_by_text("Showing the last good upload, good.png (PNG).").count() == 1
    screenshot(page, "explorer-upload-truncated")
