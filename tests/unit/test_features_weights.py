"""Weights for the feature-map page: bad files are refused with a message, ImageNet only from the cache."""
from __future__ import annotations

import io
import json
import pickle
import socket

import pytest
import torch
import torchvision

from dropviz.features import IMAGENET, WeightsError, load_checkpoint_model, load_feature_model, read_weights
from dropviz.features.weights import imagenet_weights_path, load_state, run_checkpoints
from dropviz.models import MODELS, build_model
from dropviz.regularizers import DropCluster
from dropviz.train import RunConfig, RunsDB
from dropviz.train.db import run_dir
from dropviz.train.engine import CHECKPOINT


class NotWeights:
    """A class pickled into a file: loading it would need arbitrary code."""


def test_a_state_dict_or_a_dict_holding_one_is_read(tmp_path):
    state = MODELS["resnet20"]().state_dict()
    torch.save(state, tmp_path / "bare.pt")
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("bare.pt", "wrapped.pt"):
        read = read_weights(tmp_path / name)
        assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)


def test_a_truncated_checkpoint_is_refused(tmp_path):
    torch.save(MODELS["resnet20"]().state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.pt is not a readable PyTorch checkpoint"):
        read_weights(tmp_path / "cut.pt")


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        read_weights(tmp_path / "notes.pt")


def test_a_pickle_of_python_objects_is_refused_without_running_it(tmp_path):
    torch.save({"model": NotWeights()}, tmp_path / "objects.pt")
    with pytest.raises(WeightsError, match="holds Python objects"):
        read_weights(tmp_path / "objects.pt")
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"weights": NotWeights()}, f)
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint.*plain pickle"):
        read_weights(tmp_path / "plain.pkl")


def test_a_checkpoint_without_weights_is_refused(tmp_path):
    torch.save({"epoch": 3, "accuracy": 0.5}, tmp_path / "metrics.pt")
    with pytest.raises(WeightsError, match="holds no model weights"):
        read_weights(tmp_path / "metrics.pt")


def test_weights_of_another_architecture_are_refused():
    model = MODELS["resnet20"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=r"does not fit ResNet-20.*unexpected: stages\.stage1\.3\."):
        load_state(model, MODELS["resnet56"]().state_dict(), "resnet56.pt", "ResNet-20")
    with pytest.raises(WeightsError, match="wrong shape: head.1.weight"):
        load_state(model, MODELS["resnet20"](num_classes=100).state_dict(), "c100.pt", "ResNet-20")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "a refused load changes nothing"


def test_missing_imagenet_weights_fail_fast_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    attempts = []

    def connect(sock, address):
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    with pytest.raises(WeightsError, match="not in the local torch cache.*does not download"):
        load_feature_model("resnet18-imagenet", IMAGENET)
    assert attempts == []  # a file check, not a download that waits for a network
    with pytest.raises(WeightsError, match="only for resnet18-imagenet"):
        load_feature_model("resnet20", IMAGENET)


def test_cached_imagenet_weights_give_torchvisions_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrongly mapped buffer would show
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    imagenet_weights_path().parent.mkdir(parents=True)
    torch.save(reference.state_dict(), imagenet_weights_path())
    model = load_feature_model("resnet18-imagenet", IMAGENET)
    assert model.trained and "ImageNet" in model.weights
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    _, logits = model.capture(x, [])
    with torch.no_grad():
        torch.testing.assert_close(logits, reference(x))
    assert model.class_names[0] == "tench" and len(model.class_names) == 1000


def _trainer_checkpoint(path, model, config) -> None:
    """What the trainer writes: weights, run settings as JSON, progress numbers."""
    torch.save({"model": model.state_dict(), "config": config.to_json(), "epoch": 2, "step": 10}, path)


def test_a_trainer_checkpoint_rebuilds_its_regularizer_and_fitted_buffers(tmp_path):
    config = RunConfig(model="resnet20", dataset="digits", regularizer="dropcluster")
    model = build_model("resnet20", regularizer="dropcluster").train()
    model(torch.randn(2, 3, 32, 32))  # DropCluster creates its cluster labels (a buffer) while training
    assert any(k.endswith("labels") for k in model.state_dict())
    _trainer_checkpoint(tmp_path / "checkpoint.pt", model, config)
    loaded = load_checkpoint_model(tmp_path / "checkpoint.pt", name="run A")
    assert loaded.trained and "run A" in loaded.weights and "dropcluster on digits" in loaded.weights
    assert loaded.class_names == tuple(str(d) for d in range(10))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.capture(x, [])[1], model.eval()(x))


def test_a_trainer_checkpoint_rebuilds_dropcluster_after_its_stage_with_the_fitted_clusters(tmp_path):
    config = RunConfig(model="resnet20", dataset="digits", regularizer="dropcluster", dropcluster_after="stage2")
    model = build_model("resnet20", regularizer="dropcluster", dropcluster_after="stage2").train()
    model(torch.randn(2, 3, 32, 32))
    trained = model.stages.stage2[-1]
    trained.set_clusters(torch.randint(0, trained.n_clusters, (32, 16, 16), generator=torch.Generator().manual_seed(0)))
    _trainer_checkpoint(tmp_path / "checkpoint.pt", model, config)
    loaded = load_checkpoint_model(tmp_path / "checkpoint.pt", name="run B")
    assert "dropcluster after stage2 on digits" in loaded.weights  # the banner names the place
    [rebuilt] = [m for m in loaded.model.modules() if isinstance(m, DropCluster)]
    assert rebuilt is loaded.model.stages.stage2[-1] and rebuilt.fitted
    assert torch.equal(rebuilt.labels, trained.labels)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.capture(x, [])[1], model.eval()(x))


def test_a_checkpoint_stored_before_dropcluster_had_a_place_loads_it_at_the_stem(tmp_path):
    model = build_model("resnet20", regularizer="dropcluster").train()
    model(torch.randn(2, 3, 32, 32))
    old_config = json.loads(RunConfig(model="resnet20", regularizer="dropcluster").to_json())
    del old_config["dropcluster_after"]
    torch.save({"model": model.state_dict(), "config": json.dumps(old_config)}, tmp_path / "checkpoint.pt")
    loaded = load_checkpoint_model(tmp_path / "checkpoint.pt")
    assert isinstance(loaded.model.stem[-1], DropCluster) and loaded.model.stem[-1].fitted


def test_a_trainer_checkpoint_with_invalid_clusters_is_refused(tmp_path):
    model = build_model("resnet20", regularizer="dropcluster").train()
    model(torch.randn(2, 3, 32, 32))
    state = {k: v.float() if k.endswith("labels") else v for k, v in model.state_dict().items()}
    torch.save({"model": state, "config": RunConfig(model="resnet20", regularizer="dropcluster").to_json()},
               tmp_path / "checkpoint.pt")
    with pytest.raises(WeightsError, match="clusters .* are not valid"):
        load_checkpoint_model(tmp_path / "checkpoint.pt")


def test_a_trainer_checkpoint_whose_weights_do_not_match_its_settings_is_refused(tmp_path):
    _trainer_checkpoint(tmp_path / "checkpoint.pt", build_model("resnet56"), RunConfig(model="resnet20"))
    with pytest.raises(WeightsError, match="does not fit ResNet-20"):
        load_checkpoint_model(tmp_path / "checkpoint.pt")


def test_an_uploaded_state_dict_is_read_from_memory_for_the_chosen_architecture():
    source = MODELS["resnet20"]().eval()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    loaded = load_checkpoint_model(io.BytesIO(buffer.getvalue()), arch="resnet20", name="The uploaded file")
    assert "The uploaded file" in loaded.weights and "bare state dict" in loaded.weights
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.capture(x, [])[1], source(x))
    with pytest.raises(WeightsError, match="The uploaded file does not fit ResNet-56"):
        load_checkpoint_model(io.BytesIO(buffer.getvalue()), arch="resnet56", name="The uploaded file")


def test_the_checkpoint_picker_names_dropclusters_place(tmp_path):
    db = RunsDB(tmp_path)
    placed = db.create_run(RunConfig(model="resnet20", dataset="digits", regularizer="dropcluster",
                                     dropcluster_after="stage2"))
    at_stem = db.create_run(RunConfig(model="resnet20", dataset="digits", regularizer="dropcluster"))
    db.close()
    for run_id in (placed, at_stem):
        run_dir(tmp_path, run_id).mkdir(parents=True, exist_ok=True)
        (run_dir(tmp_path, run_id) / CHECKPOINT).write_bytes(b"weights")
    labels = {c.run_id: c.label for c in run_checkpoints(tmp_path)}
    assert "resnet20 + dropcluster after stage2 on digits" in labels[placed]
    assert "resnet20 + dropcluster on digits" in labels[at_stem]
