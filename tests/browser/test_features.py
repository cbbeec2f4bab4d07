"""Feature Maps in headless chromium: pick a layer and a method and see the grid change; load the checkpoint
of a short training run; a corrupt upload shows a message and the page keeps the model it had."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

EXCEPTION = '[data-testid="stException"]'
GRID_IMAGES = ".st-key-features_grid image"  # the clean and the regularized mosaic, in that order
TALL = {"width": 1280, "height": 1900}


def grid(page) -> list[str]:
    page.wait_for_selector(GRID_IMAGES)
    return [image.get_attribute("href") for image in page.locator(GRID_IMAGES).all()]


def grid_changed(page, before: list[str]) -> list[str]:
    """The grid once its regularized mosaic differs from ``before``'s: on a loaded machine a rerun may start
    after ``wait_for_app`` has already seen the old run finished, so wait for the new content itself."""
    page.wait_for_function("([selector, old]) => { const images = document.querySelectorAll(selector); "
                           "return images.length > 1 && images[1].getAttribute('href') !== old; }",
                           arg=[GRID_IMAGES, before[1]])
    return grid(page)


def choose(page, wait_for_app, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_for_app(page)


def assert_no_exception(page) -> None:
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).all_inner_texts()


def test_layer_and_method_change_the_grid(app_server, page, screenshot, wait_for_app):
    page.set_viewport_size(TALL)  # the whole page in each screenshot
    app_server.open(page, "features?layer=stage2.block1")
    clean, dropout = grid(page)
    assert_no_exception(page)
    assert page.get_by_text("UNTRAINED").first.is_visible()
    # Hovering a tile of the one-image mosaic names its channel.
    box = page.locator(GRID_IMAGES).nth(1).bounding_box()  # plotly's drag layer covers it: move the mouse
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.wait_for_selector(".st-key-features_grid .hoverlayer .hovertext")
    assert "channel" in page.locator(".st-key-features_grid .hoverlayer").nth(1).text_content()
    screenshot(page, "features-dropout-stage2")

    choose(page, wait_for_app, "Method", "DropBlock")
    clean_again, dropblock = grid_changed(page, [clean, dropout])
    assert clean_again == clean
    page.wait_for_url(re.compile(r"[?&]method=DropBlock(&|$)"))

    choose(page, wait_for_app, "Layer", "stage3.block1")
    assert grid_changed(page, [clean, dropblock])[0] != clean
    page.wait_for_url(re.compile(r"[?&]layer=stage3\.block1(&|$)"))
    assert page.get_by_text("64 x 8 x 8").first.is_visible()
    assert_no_exception(page)
    screenshot(page, "features-dropblock-stage3")

    choose(page, wait_for_app, "Method", "DropCluster")
    page.wait_for_selector(".st-key-features_clusters image")
    assert_no_exception(page)
    screenshot(page, "features-dropcluster-stage3")


def test_trained_checkpoint_then_a_corrupt_upload(app_server, page, screenshot, wait_for_app, train_tiny_run):
    page.set_viewport_size(TALL)
    run_id = train_tiny_run(app_server.runs_dir)
    app_server.open(page, f"features?weights=run:{run_id}")
    grid(page)
    banner = page.locator('[data-testid="stAlertContentSuccess"]').inner_text()
    assert f"checkpoint {run_id}" in banner and "digits" in banner
    assert_no_exception(page)
    screenshot(page, "features-trained-checkpoint")

    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": "broken.pt", "mimeType": "application/octet-stream", "buffer": b"\x80\x04 not weights"}])
    wait_for_app(page)
    page.get_by_text("is not a readable PyTorch checkpoint").wait_for()
    assert f"checkpoint {run_id}" in page.locator('[data-testid="stAlertContentSuccess"]').inner_text()
    assert len(grid(page)) == 2
    assert_no_exception(page)
    screenshot(page, "features-corrupt-upload")
