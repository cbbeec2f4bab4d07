"""AppTest (no browser): the Compare page's grid, table and drop-rate plot follow the controls and the URL."""
from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import ROOT
from dropviz.regularizers import REGISTRY

TIMEOUT_S = 120


@pytest.fixture
def app_env(monkeypatch, tmp_path, cifar10_dir):
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DROPVIZ_DATA_DIR", str(cifar10_dir.parent))


def compare(**query) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "compare.py"), default_timeout=TIMEOUT_S)
    for name, value in query.items():
        at.query_params[name] = value
    return at.run()


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def grid_titles(at: AppTest) -> list[str]:
    """The methods' figures by their titles; the drop-rate plot, last, has none of its own."""
    return [spec["layout"]["title"]["text"] for spec in chart_specs(at)[:-1]]


def test_all_methods_side_by_side_with_a_table(app_env):
    at = compare(drop_prob="0.2")
    assert not at.exception and not at.error
    names = [spec.display_name for spec in REGISTRY.values()]
    assert grid_titles(at) == names  # a figure per method: its output over its mask
    assert all([trace["name"] for trace in spec["data"]] == ["output", "mask"] for spec in chart_specs(at)[:-1])
    table = at.dataframe[0].value
    assert list(table["method"]) == names
    assert (table["requested drop"] == 0.2).all()
    # Every method's realised rate is near 0.2 on a 128x128x3 map; DropPath and DropCluster decide for the
    # whole sample or a few clusters at once, so only the unit-wise ones are held to a tolerance here.
    unitwise = table.set_index("method").loc[["Dropout", "Multi-Sample Dropout"], "realised drop"]
    assert np.all(np.abs(unitwise - 0.2) < 0.02)  # 49k units: sd 0.0018, so 0.02 is > 10 sd
    assert at.get("download_button")


def test_the_controls_are_the_union_of_the_chosen_methods_parameters(app_env):
    at = compare(methods=["Dropout", "DropBlock"])
    assert [s.key for s in at.slider] == ["drop_prob", "block_size"]
    assert len(at.dataframe[0].value) == 2
    at.pills(key="methods").set_value(["dropout", "dropcluster"]).run()
    assert [s.key for s in at.slider] == ["drop_prob", "n_clusters"]


def test_drop_prob_zero_gives_white_masks_and_zero_realised_rates(app_env):
    at = compare(methods=["Dropout", "DropBlock", "Disout"])
    at.slider(key="drop_prob").set_value(0.0).run()
    assert (at.dataframe[0].value["realised drop"] == 0).all()


def test_drop_rate_plot_measures_our_dropblock_and_its_peers(app_env):
    at = compare(methods=["DropBlock"], drop_prob="0.1")
    rate = chart_specs(at)[1]
    implementations = {trace["name"] for trace in rate["data"]}
    assert {"dropviz", "torchvision", "timm"} <= implementations
    assert "torchvision refused" in implementations  # it rejects even block sizes; marked, not hidden


def test_choosing_no_method_says_so(app_env):
    at = compare()
    at.pills(key="methods").set_value([]).run()
    assert not at.exception and "Choose at least one method" in at.info[0].value


def test_unusable_link_values_are_named_in_warnings(app_env):
    at = compare(methods="Nope", image="CIFAR-10", cifar="99999")
    assert not at.exception
    warnings = " ".join(warning.value for warning in at.warning)
    assert "methods must be one of" in warnings and "'Nope'" in warnings
    assert "cifar must be in [0, " in warnings and "got 99999" in warnings
