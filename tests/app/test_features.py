"""AppTest (no browser): the Feature Maps page follows its controls, loads trained checkpoints and refuses
broken ones while it keeps working."""
from __future__ import annotations

import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app import ROOT
from dropviz.train import RunConfig, RunsDB, run_dir

TIMEOUT_S = 180


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, train_tiny_run):
    """A runs folder with a trained run and a run whose checkpoint is cut in half."""
    folder = tmp_path_factory.mktemp("runs")
    good = train_tiny_run(folder)
    db = RunsDB(folder)
    broken = db.create_run(RunConfig(model="resnet20", dataset="digits", epochs=1))
    db.update_run(broken, status="failed", epoch=1)
    db.close()
    data = (run_dir(folder, good) / "checkpoint.pt").read_bytes()
    (run_dir(folder, broken) / "checkpoint.pt").parent.mkdir(parents=True, exist_ok=True)
    (run_dir(folder, broken) / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    return folder, good, broken


@pytest.fixture
def app_env(monkeypatch, runs_dir):
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(runs_dir[0]))


def features(**query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "features.py"), default_timeout=TIMEOUT_S)
    for name, value in query.items():
        at.query_params[name] = value
    return at.run()


def chart(at: AppTest, key: str) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id and key in c.proto.id)


def grid_images(at: AppTest) -> list[str]:
    """The PNG sources of the before/after mosaics (clean, regularized), a figure each."""
    return [t["source"] for side in ("clean", "after") for t in chart(at, f"features_grid_{side}")["data"]
            if t["type"] == "image"]


def test_default_view_says_the_weights_are_untrained(app_env):
    at = features()
    assert not at.exception
    assert any("UNTRAINED" in w.value for w in at.warning)
    assert len(grid_images(at)) == 2
    topk = chart(at, "features_topk")
    assert [bar["name"].split(":")[0] for bar in topk["data"]] == ["clean", "regularized"]
    assert "airplane" in str(topk) or "truck" in str(topk)  # CIFAR-10 class names label the bars


def test_method_and_layer_change_the_grid(app_env):
    at = features(layer="stage2.block1")
    clean, dropout = grid_images(at)
    at.selectbox(key="method").set_value("dropblock").run()
    assert not at.exception
    clean_again, dropblock = grid_images(at)
    assert clean_again == clean and dropblock != dropout  # only the regularized side changes
    at.selectbox(key="layer").set_value("stage3.block2").run()
    assert grid_images(at)[0] != clean
    assert any("64 x 8 x 8" in c.value for c in at.caption)


def test_dropcluster_refits_when_n_clusters_changes(app_env):
    at = features(method="DropCluster", layer="stage3.block3", n_clusters="16", channels="8")
    assert not at.exception
    assert "16 cluster ids" in chart(at, "features_clusters")["data"][0]["name"]
    at.slider(key="n_clusters").set_value(3).run()
    assert "3 cluster ids" in chart(at, "features_clusters")["data"][0]["name"]


def test_a_trained_checkpoint_is_loaded_and_named(app_env, runs_dir):
    _, good, _ = runs_dir
    at = features(weights=f"run:{good}")
    assert not at.exception and not at.error
    banner = " ".join(s.value for s in at.success)
    assert f"checkpoint {good}" in banner and "digits" in banner and "1 epoch" in banner
    labels = chart(at, "features_topk")["data"][0]["y"]
    assert set(labels) <= {str(d) for d in range(10)}  # the digits' class names


def test_a_truncated_checkpoint_shows_a_message_and_the_page_keeps_working(app_env, runs_dir):
    _, good, broken = runs_dir
    at = features(weights=f"run:{good}")
    at.selectbox(key="weights").set_value(f"run:{broken}").run()
    assert not at.exception
    assert any("not a readable PyTorch checkpoint" in e.value for e in at.error)
    assert any(f"checkpoint {good}" in s.value for s in at.success), "the previous model stays"
    assert len(grid_images(at)) == 2


def test_unusable_link_values_are_named_in_warnings(app_env):
    at = features(model="nope", weights="run:../../etc/passwd", channels="500", draws="0")
    assert not at.exception
    warnings = " ".join(warning.value for warning in at.warning)
    for named in ("model must be one of", "'nope'", "weights must be one of", "'run:../../etc/passwd'",
                  "channels must be in", "draws must be in"):
        assert named in warnings
