"""AppTest (no browser): the home page and every page in app.PAGES run without an exception."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import ROOT, available_pages
from dropviz.regularizers import REGISTRY

TIMEOUT_S = 120  # a page that builds a torch model takes several seconds on a busy 2-core machine


@pytest.fixture
def app_env(monkeypatch, tmp_path, cifar10_dir):
    """The environment the app reads, pointed at an empty runs folder and the real CIFAR-10."""
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DROPVIZ_DATA_DIR", str(cifar10_dir.parent))
    monkeypatch.delenv("DROPVIZ_READONLY", raising=False)


def run_app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S).run()


def test_home_describes_every_registered_method(app_env):
    at = run_app()
    assert not at.exception
    assert "dropviz" in at.title[0].value
    table = next(md.value for md in at.markdown if md.value.startswith("| Method"))
    for spec in REGISTRY.values():
        row = next((line for line in table.splitlines() if f"**{spec.display_name}**" in line), None)
        assert row is not None, f"{spec.name} missing from the home page's table"
        assert spec.paper.split(",")[0] in row
    # Every method the page covers is registered, so no "In the library" column of "yes" (it overflowed a
    # narrow page); test_home_names_a_covered_method_not_registered_yet has the other case.
    assert "In the library" not in table and len(table.splitlines()) == 2 + len(REGISTRY)


def test_home_names_a_covered_method_not_registered_yet(app_env, monkeypatch):
    monkeypatch.delitem(REGISTRY, "dropout")  # as before Dropout was added: the page's own line stands in
    table = next(md.value for md in run_app().markdown if md.value.startswith("| Method"))
    header, _, *rows = table.splitlines()
    assert header.endswith("| In the library |") and len(rows) == 1 + len(REGISTRY)
    [not_yet] = [row for row in rows if row.endswith("| not yet |")]
    assert "**Dropout**" in not_yet and "Srivastava" in not_yet
    assert all(row.endswith("| yes |") for row in rows if row != not_yet)


def test_home_links_every_other_page(app_env):
    links = run_app().get("page_link")
    # A file page's URL path is its file name without the extension.
    assert [link.proto.page for link in links] == [Path(path).stem for path, *_ in available_pages()[1:]]


@pytest.mark.parametrize("page_file", [path for path, *_ in available_pages()])
def test_every_page_runs_without_exception(app_env, page_file):
    at = run_app()
    at.switch_page(page_file).run()
    assert not at.exception, f"{page_file}: {[e.value for e in at.exception]}"
    assert len(at.main.children) > 0, f"{page_file} rendered nothing"
