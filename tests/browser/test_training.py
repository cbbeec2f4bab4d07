"""The Training page in headless chromium: launch a tiny run and watch its curve appear and grow."""
from __future__ import annotations

import os
import signal
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from dropviz.train import RunsDB

pytestmark = pytest.mark.browser

EXCEPTION = '[data-testid="stException"]'
# Points drawn in the traces whose name contains `tag` (the run id's tail is in its label), read from the
# plotly graph div the chart renders into. Other tests may leave runs of their own in the shared app.
POINTS = """tag => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot'))
    .flatMap(div => (div.data || []).filter(t => (t.name || '').includes(tag)).map(t => (t.x || []).length))
    .reduce((a, b) => a + b, 0)"""


ENDED = ("finished", "failed", "cancelled")


def wait_for_run(db: RunsDB, run_id: str, condition, timeout_s: float = 300.0) -> dict:
    """The run's row once ``condition(row)`` holds, polled every 50 ms (or the last row read, after ``timeout_s``:
    the caller's assertion then says what it was)."""
    deadline = time.monotonic() + timeout_s
    while not condition(run := db.run(run_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return run


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the select box ``label``. A dropdown opened while the form's expander is still
    unfolding can close again as the layout settles, so open it again when its option does not show."""
    for _ in range(3):
        page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=5_000)
            return
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    raise AssertionError(f"the select box {label!r} never offered {option!r}")


def set_number(page, label: str, value: int) -> None:
    box = page.locator('[data-testid="stNumberInput"]').filter(has_text=label).locator("input")
    box.fill(str(value))
    box.press("Enter")


def test_launch_a_tiny_run_and_watch_its_curve_grow(app_server, page, screenshot, wait_for_app):
    app_server.open(page, "training")
    form = page.locator('[data-testid="stExpander"] details').filter(has_text="Launch a run").first
    form.wait_for()
    if form.get_attribute("open") is None:  # collapsed when other tests left runs behind
        form.locator("summary").click()
    choose(page, "Dataset", "digits")
    wait_for_app(page)
    choose(page, "Regularizer", "DropBlock")
    wait_for_app(page)
    set_number(page, "Epochs", 3)
    wait_for_app(page)
    set_number(page, "Training images", 0)  # all 1,438 digits: 11 steps of 128 per epoch, a few seconds each
    wait_for_app(page)
    screenshot(page, "training-form")
    db = RunsDB(app_server.runs_dir)
    earlier = {r["id"] for r in db.runs()}  # other tests' runs share this folder
    page.get_by_role("button", name="Launch run").click()
    wait_for_app(page)
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).all_inner_texts()

    # On a loaded machine the script run the click starts can begin after wait_for_app has returned: wait for
    # the run to appear rather than read the folder once.
    for _ in range(120):
        launched = [r for r in db.runs() if r["id"] not in earlier]
        if launched:
            break
        page.wait_for_timeout(500)
    assert len(launched) == 1, app_server.log_tail()
    run = launched[0]
    assert "dropblock" in run["config"]
    tag = run["id"][-6:]
    # Pause the worker (SIGSTOP) once it has logged its first rows, so the page is seen drawing part of the
    # curve however fast the machine trains; then let it finish and see the curve grow to every logged row.
    run = wait_for_run(db, run["id"], lambda run: db.steps(run["id"]) or run["status"] in ENDED)
    assert run["status"] == "running" and run["pid"], (run["status"], run["error"], app_server.log_tail())
    os.kill(run["pid"], signal.SIGSTOP)
    try:
        partial = len(db.steps(run["id"])) + len(db.epochs(run["id"]))
        # each train step row and each test epoch row is one point; the page refreshes every 2 s
        page.wait_for_function(f"tag => ({POINTS})(tag) === {partial}", arg=tag, timeout=30_000)
        page.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
        screenshot(page, "training-running")
    finally:
        os.kill(run["pid"], signal.SIGCONT)
    run = wait_for_run(db, run["id"], lambda run: run["status"] in ENDED)
    assert run["status"] == "finished", (run["error"], app_server.log_tail())
    logged = len(db.steps(run["id"])) + len(db.epochs(run["id"]))
    assert 0 < partial < logged
    page.wait_for_function(f"tag => ({POINTS})(tag) === {logged}", arg=tag, timeout=30_000)  # it grew
    assert "DropBlock" in page.locator('[data-testid="stMain"]').inner_text() or "dropblock" in \
        page.locator('[data-testid="stMain"]').inner_text()
    assert page.locator(EXCEPTION).count() == 0
    page.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
    screenshot(page, "training-finished")
