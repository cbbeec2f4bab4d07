"""The two-command set-up: the run script refuses a taken port, make lists its targets, CI runs `make test`."""
from __future__ import annotations

import socket
import subprocess
import sys

from app import PAGES, ROOT, available_pages


def test_run_script_refuses_a_taken_port_and_names_a_free_one():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(["bash", "scripts/run_app.sh", sys.executable, "127.0.0.1", str(port)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    suggested = int(result.stderr.split("make run PORT=")[1].split()[0])
    assert suggested != port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", suggested))  # the suggestion really is free
    assert "streamlit" not in result.stdout.lower()  # it stopped before starting anything


def test_make_help_lists_the_targets():
    listing = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    for target in ("venv", "chromium", "run", "test", "bench", "clean"):
        assert f"make {target} " in listing


def test_ci_runs_the_readme_test_command():
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    make_calls = [line.split()[:2] for line in ci_script.splitlines() if line.startswith("make ")]
    assert make_calls == [["make", "test"]]


def test_pages_missing_on_disk_are_left_out(monkeypatch):
    monkeypatch.setattr("app.PAGES", [*PAGES, ("pages/not_written_yet.py", "Later", ":material/hourglass:", "")])
    assert [entry[0] for entry in available_pages()] == [entry[0] for entry in PAGES
                                                         if (ROOT / entry[0]).is_file()]
    assert available_pages()[0][0] == "pages/home.py"
