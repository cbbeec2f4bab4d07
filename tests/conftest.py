"""Shared fixtures: real CIFAR-10, the running dashboard, and a headless Debian chromium to drive it.

Browser tests (``@pytest.mark.browser``) use ``app_server`` (the app started exactly as ``make run`` starts
it, on a free loopback port), ``page`` (a fresh Playwright page) and ``screenshot(page, name)``.
Tests that need a finished run with a checkpoint call the ``train_tiny_run`` fixture: ``train_tiny_run(runs_dir)``.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_DIR = ROOT / "test-artifacts" / "screenshots"
CIFAR10_TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
DATA_CACHE = Path.home() / ".cache" / "dropviz" / "data"

CHROMIUM = "/usr/bin/chromium"
# Flags that work as root with no network (see ../shared/BROWSER.md); Playwright adds --headless and
# a fresh profile directory itself.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 720}
APP_START_TIMEOUT_S = 90
SCRIPT_RUN_TIMEOUT_MS = 60_000

_screenshots_taken: list[Path] = []


def pytest_configure(config):
    """torch on one thread for the whole suite, whichever tests are selected: the two cores are shared with the
    app servers and training workers the tests start. Tests of the threaded paths set their own count and put
    this one back."""
    import torch
    torch.set_num_threads(1)


# ---------------------------------------------------------------- data

@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """Real CIFAR-10 as ImageFolder (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), extracted once per machine."""
    target = DATA_CACHE / "cifar10-jpeg"
    if target.is_dir():
        return target
    if not CIFAR10_TARBALL.is_file():
        pytest.fail(f"CIFAR-10 is needed but {CIFAR10_TARBALL} is missing and {target} was never extracted. "
                    f"Put cifar10-jpeg.tar.gz there (see ../shared/README.md).", pytrace=False)
    DATA_CACHE.mkdir(parents=True, exist_ok=True)
    # Extract beside the target, then rename: a crash or a concurrent run never leaves a half-extracted folder.
    staging = Path(tempfile.mkdtemp(prefix=".cifar10-", dir=DATA_CACHE))
    try:
        with tarfile.open(CIFAR10_TARBALL) as archive:
            archive.extractall(staging, filter="data")
        try:
            (staging / "cifar10-jpeg").rename(target)
        except OSError:
            if not target.is_dir():  # lost the race to another run: its copy is just as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------- training runs

def _train_tiny_run(runs_dir) -> str:
    """One epoch of ResNet-20 on 64 digits through the trainer's Python API (a few seconds on a CPU), in
    ``runs_dir``; returns the finished run's id (its checkpoint is in the run's folder)."""
    from dropviz.train import RunConfig, RunsDB, train_run  # here: every test loads conftest, few train

    config = RunConfig(model="resnet20", dataset="digits", epochs=1, limit_train=64, limit_test=32, batch_size=32,
                       device="cpu").validate()
    db = RunsDB(runs_dir)
    run_id = db.create_run(config)
    db.close()
    assert train_run(runs_dir, run_id, progress=False) == "finished"
    return run_id


@pytest.fixture(scope="session")
def train_tiny_run():
    """``train_tiny_run(runs_dir) -> run_id``: a finished one-epoch run with a checkpoint (see above)."""
    return _train_tiny_run


# ---------------------------------------------------------------- the running app

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class AppServer:
    """A dashboard process started by ``scripts/run_app.sh`` (what ``make run`` calls)."""

    url: str
    runs_dir: Path
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def open(self, page, path: str = ""):
        """Load ``path`` (e.g. ``"explorer?seed=3"``) and wait until its script run has finished."""
        page.goto(f"{self.url}/{path.lstrip('/')}")
        wait_for_app_run(page)
        return page

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """Terminate the whole process group (streamlit and anything it spawned), then make sure it is gone."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            pass


def start_app_server(work_dir: Path, data_dir: Path, **env_overrides: str) -> AppServer:
    """Start the app on a free loopback port with its own runs folder and wait until it is healthy."""
    runs_dir = work_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "streamlit.log"
    inherited = {name: value for name, value in os.environ.items() if name != "DROPVIZ_READONLY"}
    env = {**inherited, "DROPVIZ_RUNS_DIR": str(runs_dir), "DROPVIZ_DATA_DIR": str(data_dir),
           "PYTHONPATH": str(ROOT), **env_overrides}
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "run_app.sh"), sys.executable, "127.0.0.1", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = AppServer("", runs_dir, Path(data_dir), log_path, process)
    deadline = time.monotonic() + APP_START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited with code {process.returncode} before it was healthy")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app was not healthy after {APP_START_TIMEOUT_S} s")
            printed = re.search(r"dropviz dashboard: (http://\S+)", server.log_tail(10_000))
            if printed and _answers_ok(f"{printed.group(1)}/_stcore/health"):
                server.url = printed.group(1)
                return server
            time.sleep(0.25)
    except RuntimeError as error:
        server.stop()
        pytest.fail(f"{error}; its log ({log_path}) ends with:\n{server.log_tail()}", pytrace=False)


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


@pytest.fixture(scope="session")
def app_server_factory(tmp_path_factory, cifar10_dir):
    """``factory(**env)`` starts another app (e.g. ``DROPVIZ_READONLY="1"``); all are stopped at session end."""
    servers: list[AppServer] = []

    def factory(**env_overrides: str) -> AppServer:
        server = start_app_server(tmp_path_factory.mktemp("app"), cifar10_dir.parent, **env_overrides)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def app_server(app_server_factory) -> AppServer:
    """The dashboard, shared by the session: ``.url``, ``.runs_dir`` (empty temp folder), ``.open(page, path)``."""
    return app_server_factory()


# ---------------------------------------------------------------- the browser

def wait_for_app_run(page, timeout_ms: int = SCRIPT_RUN_TIMEOUT_MS) -> None:
    """Wait until the app is connected and its script run has finished (as Streamlit's own e2e tests do)."""
    page.wait_for_timeout(200)  # a rerun triggered just now may not have flipped the state to "running" yet
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]',
                           state="attached", timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                           state="attached", timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)


@pytest.fixture
def wait_for_app():
    """``wait_for_app(page)``: call after every interaction that reruns the script."""
    return wait_for_app_run


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium. "
                    f"Run `make chromium` (or `make test`, which installs it).", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    """A fresh page (own cookies and storage) at 1280x720; on failure its last state is saved as a screenshot."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(SCRIPT_RUN_TIMEOUT_MS)
    yield page
    call_report = getattr(request.node, "report_call", None)
    if call_report is not None and call_report.failed:
        _save_screenshot(page, f"FAILED-{request.node.name}")
    context.close()


def _save_screenshot(page, name: str) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    page.screenshot(path=str(path))
    _screenshots_taken.append(path)
    return path


@pytest.fixture
def screenshot():
    """``screenshot(page, name) -> Path``: saves ``test-artifacts/screenshots/<name>.png``. Look at it."""
    return _save_screenshot


# ---------------------------------------------------------------- hooks

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)  # lets the `page` fixture see whether the test failed
    return report


def pytest_terminal_summary(terminalreporter):
    if _screenshots_taken:
        count = len(_screenshots_taken)
        terminalreporter.write_sep("-", f"{count} screenshot{'s' * (count != 1)} in {SCREENSHOT_DIR}")
