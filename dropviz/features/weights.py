"""Which network and which weights the feature-map page looks at, loaded safely.

Weights come from a checkpoint in the runs directory (``torch.load(weights_only=True)``: a file holding
anything but tensors is refused), from torchvision's ImageNet ResNet-18 weights when they are already in
the local torch cache (nothing is downloaded: the lookup is a file check and never waits on a network),
or from random initialisation. Every failure is a :class:`WeightsError` whose message is meant for the user.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights

from dropviz.data.datasets import DatasetError, channel_stats, load_split
from dropviz.data.images import CIFAR10_CLASSES
from dropviz.models import DROPCLUSTER_DEFAULT, MODELS, ResNet, build_model
from dropviz.regularizers import DropCluster
from dropviz.train.config import RunConfig
from dropviz.train.db import DB_NAME, RunsDB, run_dir
from dropviz.train.engine import CHECKPOINT

from .extract import FeatureModel

IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
# torchvision's class names ship inside the package: no download needed for the labels.
IMAGENET_CLASSES: tuple[str, ...] = tuple(IMAGENET_WEIGHTS.meta["categories"])
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10 = (CIFAR10_CLASSES, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # classes, mean, std


class WeightsError(ValueError):
    """Weights that cannot be used; the message says why, for the person who picked them."""


@dataclass(frozen=True)
class Architecture:
    """A network the page offers: how to build it, its input side and its classes."""

    name: str
    label: str
    input_size: int
    build: Callable[[], ResNet]
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def imagenet_resnet18() -> ResNet:
    """torchvision's ResNet-18 (7x7 stride-2 stem and max-pool, 1000 classes) as a :class:`ResNet`, so
    its feature layers are named like the CIFAR models'. :func:`imagenet_state_dict` maps its weights."""
    tv = torchvision.models.resnet18()
    model = ResNet(nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool), [tv.layer1, tv.layer2, tv.layer3, tv.layer4],
                   512, 1000)
    model.head[1] = tv.fc
    return model


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("resnet20", "ResNet-20 (CIFAR, 32x32)", 32, MODELS["resnet20"], *CIFAR10),
        Architecture("resnet56", "ResNet-56 (CIFAR, 32x32)", 32, MODELS["resnet56"], *CIFAR10),
        Architecture("resnet18", "ResNet-18 (CIFAR stem, 32x32)", 32, MODELS["resnet18"], *CIFAR10),
        Architecture("resnet18-imagenet", "ResNet-18 (ImageNet, 224x224)", 224, imagenet_resnet18,
                     IMAGENET_CLASSES, IMAGENET_MEAN, IMAGENET_STD),
    )
}


def imagenet_weights_path() -> Path:
    """Where torchvision keeps the ResNet-18 ImageNet weights once downloaded (``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(IMAGENET_WEIGHTS.url)


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 weights from the local cache, renamed for :func:`imagenet_resnet18`."""
    path = imagenet_weights_path()
    if not path.is_file():
        raise WeightsError(f"The ImageNet weights for ResNet-18 are not in the local torch cache ({path}), and "
                           f"this app does not download them. Copy {IMAGENET_WEIGHTS.url} there, or pick "
                           "another choice of weights.")
    renames = {"conv1.": "stem.0.", "bn1.": "stem.1.", "fc.": "head.1."}
    renames.update({f"layer{i}.": f"stages.stage{i}." for i in range(1, 5)})
    state = {}
    for key, value in read_weights(path).items():
        prefix = next((p for p in renames if key.startswith(p)), "")
        state[renames.get(prefix, "") + key[len(prefix):]] = value
    return state


def read_checkpoint(path: str | os.PathLike | BinaryIO, name: str | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict in ``path`` (a file name or an open binary file) and what else it holds (e.g. the
    trainer's ``config``, ``epoch``), loaded with ``weights_only=True``. Accepts a bare state dict or a dict
    holding one under ``"model"`` / ``"state_dict"``; anything else raises :class:`WeightsError` whose
    message calls the file ``name``."""
    name = name or Path(path).name
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{name}: no such file.") from None
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError... for bad files
        if "allowed global" in str(err) or "Unsupported global" in str(err):
            raise WeightsError(f"{name} is refused: it holds Python objects, not just weights (tensors), "
                               "and loading it could run code.") from None
        raise WeightsError(f"{name} is not a readable PyTorch checkpoint: it is truncated or damaged, or a "
                           "plain pickle, which is never loaded since that could run code.") from None
    state = _find_state_dict(obj)
    if state is None:
        raise WeightsError(f"{name} holds no model weights (expected a state dict of tensors).")
    extra = {k: v for k, v in obj.items() if not isinstance(v, (Mapping, torch.Tensor))}
    return state, extra


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of :func:`read_checkpoint`."""
    return read_checkpoint(path)[0]


def _find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in obj.items()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj:
                return _find_state_dict(obj[key])
    return None


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], what: str, arch: str) -> None:
    """``model.load_state_dict(state)``, strictly; a mismatch raises :class:`WeightsError` saying how."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        details = "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                            for label, keys in (("missing", missing), ("unexpected", unexpected),
                                                ("wrong shape", mismatched)) if keys)
        raise WeightsError(f"{what} does not fit {arch} ({details}).")
    model.load_state_dict(state)


RANDOM, IMAGENET = "random", "imagenet"


def load_feature_model(arch: str, weights: str = RANDOM, seed: int = 0) -> FeatureModel:
    """``ARCHITECTURES[arch]`` with ``weights``: ``"random"`` (initialised from ``seed``) or ``"imagenet"``
    (ResNet-18 ImageNet only, from the local cache). Checkpoints: :func:`load_checkpoint_model`."""
    if arch not in ARCHITECTURES:
        raise WeightsError(f"model must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    spec = ARCHITECTURES[arch]
    if weights == RANDOM:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = spec.build()
        return _feature_model(model, spec, f"random initialisation (seed {seed}): UNTRAINED, the "
                                           "predictions mean nothing", trained=False)
    if weights == IMAGENET:
        if arch != "resnet18-imagenet":
            raise WeightsError(f"ImageNet weights exist only for resnet18-imagenet, not {arch}.")
        model = spec.build()
        load_state(model, imagenet_state_dict(), "The ImageNet weights", spec.label)
        return _feature_model(model, spec, "torchvision ImageNet weights (IMAGENET1K_V1)", trained=True)
    raise WeightsError(f"unknown weights {weights!r}")


def load_checkpoint_model(path: str | os.PathLike | BinaryIO, arch: str | None = None,
                          name: str | None = None) -> FeatureModel:
    """The model saved at ``path``: a trainer checkpoint (its ``config`` names the model, dataset,
    regularizer and DropCluster's place; the input is normalised with statistics of that dataset's training
    images) or a bare state dict for ``arch`` (CIFAR-10 statistics). Refuses, with :class:`WeightsError`, files that are
    not weights and weights that do not fit. ``name`` is how messages call the file (default: its name)."""
    name = name or Path(path).name
    state, extra = read_checkpoint(path, name)
    config = _run_config(extra.get("config"), name)
    arch = config.model if config else arch
    if arch not in ARCHITECTURES or arch == "resnet18-imagenet":
        raise WeightsError(f"{name}: pick the model it was trained as (one of resnet20, resnet56, resnet18).")
    spec = ARCHITECTURES[arch]
    n_classes = _classifier_outputs(state)
    if config:
        try:
            model = build_model(config.model, num_classes=n_classes, regularizer=config.regularizer,
                                params=config.params, dropcluster_after=config.dropcluster_after)
        except ValueError as err:
            raise WeightsError(f"{name}: its run settings cannot be rebuilt here ({err}).") from None
        _adopt_fitted_clusters(model, state, name)
    else:
        model = MODELS[arch](num_classes=n_classes)
    load_state(model, state, name, spec.label)
    classes, mean, std, where = _data_description(config, n_classes)
    epochs = f", after {extra['epoch']} epoch(s)" if "epoch" in extra else ""
    what = f"{_method(config.regularizer, config.dropcluster_after)} on {config.dataset}" if config else \
        "bare state dict"
    return FeatureModel(model, model.feature_layers(blocks=True), classes, spec.input_size, mean, std,
                        f"checkpoint {name} ({spec.label}, {what}{epochs}; input normalised with {where})",
                        trained=True)


def _method(regularizer: str | None, dropcluster_after: str | None) -> str:
    """``dropcluster after stage2``: the run's regularizer, and DropCluster's place when it is not the stem."""
    if dropcluster_after in (None, DROPCLUSTER_DEFAULT):  # None: stored before the setting existed
        return str(regularizer)
    return f"{regularizer} after {dropcluster_after}"


def _run_config(raw: Any, name: str) -> RunConfig | None:
    if raw is None:
        return None
    try:
        return RunConfig.from_dict(json.loads(raw) if isinstance(raw, str) else dict(raw))
    except (ValueError, TypeError) as err:
        raise WeightsError(f"{name}: its run settings cannot be read ({err}).") from None


def _classifier_outputs(state: Mapping[str, torch.Tensor]) -> int:
    """Classes of the last linear layer (the last 2-D weight in the state dict)."""
    matrices = [t for k, t in state.items() if k.endswith("weight") and t.dim() == 2]
    if not matrices:
        raise WeightsError("the weights hold no classifier (no linear layer).")
    return matrices[-1].shape[0]


def _adopt_fitted_clusters(model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    """Hand each DropCluster of a fresh ``model`` the clusters ``state`` holds for it. ``load_state_dict``
    alone would load them (DropCluster creates its lazy label map from a state dict), but
    :func:`load_state` first compares keys with ``model.state_dict()``, which lacks a label map not yet
    created, and would refuse the checkpoint."""
    for path, module in model.named_modules():
        labels = state.get(f"{path}.labels")
        if isinstance(module, DropCluster) and labels is not None:
            try:
                module.set_clusters(labels)
            except ValueError as err:
                raise WeightsError(f"{name}: its DropCluster clusters at {path} are not valid ({err}).") from None


def _data_description(config: RunConfig | None, n_classes: int) -> tuple[tuple[str, ...], tuple, tuple, str]:
    """Class names and normalisation of a run's dataset: for local datasets measured on up to 2,000 of its
    training images (the trainer uses all of them: the difference is a fraction of a percent), otherwise
    CIFAR-10's published statistics (what the trainer measures on CIFAR-10)."""
    if config is not None and config.dataset in ("digits", "imagefolder"):  # local data only: never a download
        try:
            data = load_split(config.dataset, "train", config.data_dir, limit=2000, seed=0)
        except (DatasetError, OSError, ValueError):  # missing or unreadable data: the weights are still worth a look
            data = None
        if data is not None and len(data.classes) == n_classes:
            mean, std = channel_stats(data)
            return (tuple(data.classes), tuple(mean.tolist()), tuple(std.tolist()),
                    f"statistics of {len(data)} {config.dataset} training images")
    classes = CIFAR10[0] if n_classes == 10 else tuple(f"class {i}" for i in range(n_classes))
    return classes, CIFAR10[1], CIFAR10[2], "CIFAR-10 statistics"


def _feature_model(model: ResNet, spec: Architecture, weights: str, trained: bool) -> FeatureModel:
    return FeatureModel(model, model.feature_layers(blocks=True), spec.class_names, spec.input_size, spec.mean,
                        spec.std, weights, trained)


@dataclass(frozen=True)
class RunCheckpoint:
    """A training run's checkpoint in the runs directory, described for a picker."""

    run_id: str
    path: Path
    model: str
    label: str


def run_checkpoints(runs_dir: str | os.PathLike) -> list[RunCheckpoint]:
    """Checkpoints of the runs in ``runs_dir`` (newest first); runs without one yet are left out."""
    if not (Path(runs_dir) / DB_NAME).is_file():
        return []
    db = RunsDB(runs_dir)
    try:
        found = []
        for run in db.runs():
            path = run_dir(runs_dir, run["id"]) / CHECKPOINT
            if not path.is_file():
                continue
            config = json.loads(run["config"])
            accuracy = [e["test_acc"] for e in db.epochs(run["id"]) if e.get("test_acc") is not None]
            score = f", test acc {accuracy[-1]:.1%}" if accuracy else ""
            found.append(RunCheckpoint(run["id"], path, config.get("model", "?"),
                                       f"run {run['id']}: {config.get('model')} + "
                                       f"{_method(config.get('regularizer'), config.get('dropcluster_after'))} on "
                                       f"{config.get('dataset')}, epoch {run['epoch']}{score} ({run['status']})"))
        return found
    finally:
        db.close()
