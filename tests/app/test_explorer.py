"""AppTest (no browser): the Mask Explorer's controls change the figures as they should; a URL restores a view."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import ROOT
from dropviz.data.images import load_sample, to_feature_map
from dropviz.regularizers import REGISTRY
from dropviz.viz import explain
from dropviz.viz.figures import to_pixels

TIMEOUT_S = 120


@pytest.fixture
def app_env(monkeypatch, tmp_path, cifar10_dir):
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DROPVIZ_DATA_DIR", str(cifar10_dir.parent))


def explorer(**query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "explorer.py"), default_timeout=TIMEOUT_S)
    for name, value in query.items():
        at.query_params[name] = value
    return at.run()


def panels(at: AppTest) -> dict[str, np.ndarray]:
    """The stages' panels in order, title -> pixels, decoded from the plotly specs the page sent (a figure each)."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return {trace["name"]: decode(trace["source"]) for spec in specs for trace in spec["data"]}


def decode(uri: str) -> np.ndarray:
    """A panel's pixels as the browser shows them (1-bit and palette PNGs expanded)."""
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    return np.asarray(image.convert({"1": "L", "P": "RGB"}.get(image.mode, image.mode)))


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def widget(at: AppTest, kind: str, key: str):
    return next(w for w in at.get(kind) if w.key == key)


def test_default_view_shows_dropout_stages_and_numbers(app_env):
    at = explorer()
    assert not at.exception
    assert list(panels(at)) == ["input", "mask (white = kept)", "output"]
    assert metrics(at)["requested drop"] == "0.100"
    assert [s.key for s in at.slider] == ["drop_prob"]  # only the parameters Dropout uses
    assert "Dropout" in [h.value for h in at.subheader] and at.latex  # the explanation and its formula
    # Each panel's camera button downloads it as PNG, named after the method and the stage's place.
    configs = [json.loads(chart.proto.config)["toImageButtonOptions"] for chart in at.get("plotly_chart")]
    assert configs == [{"format": "png", "scale": 2, "filename": f"dropviz-dropout-stage{i}"} for i in (1, 2, 3)]


def test_drop_prob_zero_keeps_every_unit(app_env):
    at = explorer()
    widget(at, "slider", "drop_prob").set_value(0.0).run()
    mask = panels(at)["mask (white = kept)"]
    assert (mask == 255).all()
    assert metrics(at)["realised drop"] == "0.000"
    np.testing.assert_array_equal(panels(at)["output"], panels(at)["input"])


def test_method_choice_shows_only_its_parameters(app_env):
    at = explorer()
    widget(at, "selectbox", "method").set_value("dropblock").run()
    assert [s.key for s in at.slider] == ["drop_prob", "block_size"]
    assert [t.key for t in at.toggle if t.key == "share_channels"] == ["share_channels"]
    assert "block seeds (white = seed)" in panels(at) and "blocks dropped" in metrics(at)
    widget(at, "selectbox", "method").set_value("dropcluster").run()
    assert [s.key for s in at.slider] == ["drop_prob", "n_clusters"]
    assert "cluster map" in panels(at) and "clusters dropped, all channels" in metrics(at)
    widget(at, "selectbox", "method").set_value("disout").run()
    assert "distortion" in panels(at) and [s.key for s in at.slider] == ["drop_prob", "block_size", "alpha"]


def test_block_size_and_seed_change_the_mask_and_resample_draws_a_new_seed(app_env):
    at = explorer(method="DropBlock", drop_prob="0.3")
    first = panels(at)["mask (white = kept)"]
    widget(at, "slider", "block_size").set_value(11).run()
    bigger = panels(at)["mask (white = kept)"]
    assert not np.array_equal(first, bigger)
    widget(at, "number_input", "seed").set_value(1).run()
    assert not np.array_equal(bigger, panels(at)["mask (white = kept)"])
    widget(at, "button", "resample").click().run()
    assert widget(at, "number_input", "seed").value != 1


def test_url_restores_the_exact_view(app_env):
    at = explorer(method="DropBlock", drop_prob="0.3", block_size="9", seed="3", photo="chelsea", side="64")
    assert widget(at, "selectbox", "method").value == "dropblock"
    assert widget(at, "slider", "drop_prob").value == pytest.approx(0.3)
    assert widget(at, "slider", "block_size").value == 9 and widget(at, "number_input", "seed").value == 3
    # The same mask as the library draws for those values: the link reproduces the picture anywhere.
    x = to_feature_map(load_sample("chelsea"), 64)
    stages = explain.draw(REGISTRY["dropblock"], {"drop_prob": 0.3, "block_size": 9}, x, seed=3)
    np.testing.assert_array_equal(panels(at)["mask (white = kept)"], to_pixels(stages["mask"], "mask"))


def test_share_link_carries_the_url_state(app_env):
    at = explorer(method="DropBlock", seed="3")
    link = at.code[0].value
    assert "method=DropBlock" in link and "seed=3" in link


def test_image_side_gray_and_cifar_source(app_env):
    at = explorer(side="32")
    assert panels(at)["input"].shape == (32, 32, 3)
    at.toggle(key="gray").set_value(True).run()
    assert panels(at)["input"].shape == (32, 32)
    at.radio(key="image").set_value("CIFAR-10").run()
    assert not at.exception
    cifar_input = panels(at)["input"]
    assert any("CIFAR-10 test image 0: airplane" in c.value for c in at.caption)  # the first of the sorted classes
    widget(at, "number_input", "cifar").set_value(5000).run()
    assert not np.array_equal(cifar_input, panels(at)["input"])


def test_missing_cifar_copy_is_explained_and_a_photo_shown(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DROPVIZ_DATA_DIR", str(tmp_path))
    at = explorer(image="CIFAR-10")
    assert not at.exception
    assert "No CIFAR-10 copy" in at.sidebar.info[0].value
    assert panels(at)["input"].shape == (128, 128, 3)


def _rejecting_page():
    import torch

    from dropviz.regularizers import REGISTRY
    from dropviz.ui.panels import visualize_stages

    visualize_stages(REGISTRY["dropout"], {"drop_prob": 1.5}, torch.rand(1, 3, 8, 8), 0, key="t_", image_id="rand")


def test_rejected_parameters_show_the_ops_message_inline():
    at = AppTest.from_function(_rejecting_page, default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert "drop_prob must be in [0, 1), got 1.5" in at.error[0].value


def changed_value(param):
    """A value of ``param`` other than its default, at the far end of its range."""
    choices = getattr(param, "choices", None)
    if choices:
        return next(c for c in choices if c != param.default)
    if param.kind is bool:
        return not param.default
    return param.max if param.default != param.max else param.min


@pytest.mark.parametrize("name, param", [(name, p.name) for name, spec in REGISTRY.items() for p in spec.params])
def test_every_parameter_control_changes_the_figure(app_env, name, param):
    spec = REGISTRY[name]
    at = explorer(method=spec.display_name, drop_prob="0.3", side="64")
    before = panels(at)
    target = next(p for p in spec.params if p.name == param)
    control = next(w for kind in ("slider", "toggle", "selectbox") for w in at.get(kind) if w.key == param)
    control.set_value(changed_value(target)).run()
    assert not at.exception and not at.error
    after = panels(at)
    changed = before.keys() != after.keys() or any(not np.array_equal(before[t], after[t]) for t in before)
    # The Explorer shows one image (N = 1): DropPath's one draw per row and one per batch are then the same.
    assert changed == ((name, param) != ("droppath", "mode")), f"{name}: moving {param} to {changed_value(target)}"


def test_photo_choice_changes_the_input(app_env):
    at = explorer()
    first = panels(at)["input"]
    at.selectbox(key="photo").set_value("coffee").run()
    assert not np.array_equal(first, panels(at)["input"])


def border_patterns(cluster_map: np.ndarray) -> set[tuple[int, ...]]:
    """The distinct sets of columns where a row of a cluster map changes colour."""
    return {tuple(np.flatnonzero(np.any(np.diff(row.astype(int), axis=0) != 0, axis=-1))) for row in cluster_map}


def test_dropcluster_fitted_to_the_image_follows_its_content(app_env):
    at = explorer(method="DropCluster", side="32", photo="coins")
    grid = panels(at)["cluster map"]
    assert len(border_patterns(grid)) == 1  # a regular grid: every row has its borders at the same columns
    at.toggle(key="fit").set_value(True).run()
    assert not at.exception
    fitted = panels(at)["cluster map"]
    assert len(border_patterns(fitted)) > 4  # clusters that follow the coins: borders move from row to row


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(3000, 8), (700, 2), (8, 3000)])
def test_a_thin_strip_upload_is_refused_and_the_last_good_upload_stays(app_env, size):
    at = explorer(image="upload")
    at.file_uploader[0].set_value(("good.png", png(64, 48), "image/png")).run()
    at.file_uploader[0].set_value(("strip.png", png(*size), "image/png")).run()
    assert not at.exception
    assert any(f"{size[0]} x {size[1]} pixels" in error.value for error in at.error)
    assert "Showing the last good upload, good.png (PNG)." in [caption.value for caption in at.caption]
    assert at.session_state["last_upload"].pixels.shape == (48, 64, 3)


def test_unusable_link_values_are_named_in_warnings_and_the_defaults_shown(app_env):
    at = explorer(method="nonsense", drop_prob="7", seed="-5", side="33", gray="maybe")
    assert not at.exception
    warnings = " ".join(warning.value for warning in at.warning)
    for named in ("method must be one of", "'nonsense'", "drop_prob must be in", "seed must be in",
                  "side must be one of", "gray must be true or false"):
        assert named in warnings
    assert widget(at, "selectbox", "method").value == "dropout"
    assert widget(at, "slider", "drop_prob").value == pytest.approx(REGISTRY["dropout"].defaults()["drop_prob"])


def test_a_link_may_name_a_method_by_its_registry_key(app_env):
    at = explorer(method="dropblock", block_size="5")
    assert not at.exception and not at.warning
    assert widget(at, "selectbox", "method").value == "dropblock"
    assert widget(at, "slider", "block_size").value == 5


@pytest.mark.parametrize("method, seeds", [("dropout", False), ("dropblock", True), ("disout", True)])
def test_the_legend_explains_the_seeds_panel_only_where_there_is_one(app_env, method, seeds):
    at = explorer(method=method)
    legend = next(caption.value for caption in at.caption if caption.value.startswith("Masks:"))
    assert ("Block seeds: white = a seed in every channel, black = no seed" in legend) == seeds
