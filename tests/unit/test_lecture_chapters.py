"""Lecture content: the story's claims hold on a real feature map, geometry agrees with the library, runs are ours."""
from __future__ import annotations

import re

import pytest
import torch

from dropviz.lecture import CHAPTERS, CONTROLS, defaults
from dropviz.lecture.chapters import (MAP_SIDE, PAPER_RESULTS, explain, our_curves, plane, stem_map,
                                      valid_seed_region)
from dropviz.lecture.measure import recovered_fraction, spatial_autocorrelation
from dropviz.regularizers import REGISTRY
from dropviz.train.config import RunConfig
from dropviz.train.db import DB_NAME, RunsDB


def test_every_formula_is_clean_latex():
    for chapter in CHAPTERS:
        for step in chapter.steps:
            assert not re.search(r"[\x00-\x08\x0b-\x1f]", step.formula), f"{chapter.key}: control character"
            assert step.formula.count("{") == step.formula.count("}"), f"{chapter.key}/{step.title}"


def test_controls_fit_every_method_they_feed():
    for name in ("drop_prob", "block_size", "alpha", "n_clusters", "n_samples"):
        control = CONTROLS[name]
        fed = [p for spec in REGISTRY.values() for p in spec.params if p.name == name]
        assert fed, f"the lecture's {name} control feeds no registered method's parameter"
        for param in fed:  # the lecture never offers a value the method would refuse
            assert param.min <= control.min and control.max <= param.max, name


@pytest.mark.parametrize("block_size", [1, 2, 5, 7, 8])
def test_seeds_fall_inside_the_valid_region_the_lecture_draws(block_size):
    row0, col0, row1, col1 = valid_seed_region(MAP_SIDE, block_size)
    x = torch.ones(8, 4, MAP_SIDE, MAP_SIDE)
    seeds = REGISTRY["dropblock"].make(drop_prob=0.5, block_size=block_size).explain(
        x, torch.Generator().manual_seed(0))["seeds"]
    rows, cols = seeds.nonzero()[:, 2], seeds.nonzero()[:, 3]
    assert len(rows) > 0
    assert rows.min() >= row0 and rows.max() <= row1 and cols.min() >= col0 and cols.max() <= col1
    # ...and the region is tight: seeds reach all four edges of it over 32 maps at p = 0.5.
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (row0, row1, col0, col1)


def test_the_story_holds_on_the_real_feature_map_neighbours_leak_dropout_but_not_blocks():
    x, channel = stem_map()
    # A channel of the ResNet-20 stem (16 channels), shown at the other chapters' side, scaled to [0, 1].
    assert x.shape == (1, 1, MAP_SIDE, MAP_SIDE) and 0 <= channel < 16
    assert float(x.min()) >= 0.0 and float(x.max()) == pytest.approx(1.0)
    assert float(spatial_autocorrelation(plane(x), 1)[0]) > 0.5  # neighbours share most of their inputs
    params = defaults()
    element = explain("dropout", params, x)
    blocks = explain("dropblock", params, x)
    leak_element = recovered_fraction(plane(element["input"]), plane(element["mask"]))
    leak_blocks = recovered_fraction(plane(blocks["input"]), plane(blocks["mask"]))
    # "much higher": the neighbours give back at least twice as much after Dropout as after DropBlock
    assert leak_element > 0.5 and leak_element > 2 * leak_blocks


def test_paper_numbers_are_the_published_ones():
    table = {(row["setting"], row["method"]): row["top1"] for row in PAPER_RESULTS}
    assert table == {("ResNet-50, ImageNet", "baseline"): 76.51, ("ResNet-50, ImageNet", "DropBlock"): 78.13,
                     ("ResNet-50, ImageNet", "Disout"): 78.76, ("ResNet-56, CIFAR-10", "baseline"): 93.95,
                     ("ResNet-56, CIFAR-10", "DropBlock"): 94.18, ("ResNet-56, CIFAR-10", "Disout"): 94.50}
    assert all(row["source"] for row in PAPER_RESULTS)


def test_our_curves_are_empty_without_a_database_and_create_none(monkeypatch, tmp_path):
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(tmp_path / "runs"))
    assert our_curves() == {}
    assert not (tmp_path / "runs").exists()


def test_our_curves_read_evaluated_epochs_labelled_as_ours(monkeypatch, tmp_path):
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(tmp_path))
    db = RunsDB(tmp_path)
    trained = db.create_run(RunConfig(model="resnet20", regularizer="dropblock"), status="running")
    db.log_epoch(trained, 1, 100, test_acc=0.42)
    db.log_epoch(trained, 2, 200, test_acc=0.55)
    db.create_run(RunConfig(), status="queued")  # no epoch yet: not drawn
    db.close()
    assert (tmp_path / DB_NAME).is_file()
    curves = our_curves()
    assert list(curves) == [f"ours: resnet20 + dropblock (running, {trained[-6:]})"]
    epochs, accuracy = curves[next(iter(curves))]
    assert epochs == [1, 2] and accuracy == pytest.approx([42.0, 55.0])


def test_the_dropcluster_chapter_drops_clusters_in_its_default_view():
    dropcluster = next(chapter for chapter in CHAPTERS if chapter.key == "dropcluster")
    title = dropcluster.steps[1].figure(defaults()).layout.title.text
    dropped = int(re.match(r"(\d+) of 8 clusters dropped", title).group(1))
    assert dropped > 0, title


def test_our_curves_show_only_runs_on_the_dataset_asked_for(monkeypatch, tmp_path):
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(tmp_path))
    db = RunsDB(tmp_path)
    on_cifar = db.create_run(RunConfig(model="resnet20", regularizer="disout"), status="finished")
    on_digits = db.create_run(RunConfig(model="resnet20", regularizer="dropout", dataset="digits"), status="finished")
    for run in (on_cifar, on_digits):
        db.log_epoch(run, 1, 100, test_acc=0.5)
    db.close()
    assert list(our_curves("cifar10")) == [f"ours: resnet20 + disout (finished, {on_cifar[-6:]})"]
    assert list(our_curves("digits")) == [f"ours: resnet20 + dropout (finished, {on_digits[-6:]})"]
