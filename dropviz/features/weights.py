"""Which network and which weights the feature-map page looks at, loaded safely.

Weights come from a checkpoint in the runs directory (``torch.load(weights_only=True)``: a file holding
anything but tensors is refused), from torchvision's ImageNet ResNet-18 weights when they are already in
the local torch cache (nothing is downloaded: the lookup is a file check and never waits on a network),
or from random initialisation. Every failure is a :class:`WeightsError` whose message is meant for the user.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights

from dropviz.data.images import CIFAR10_CLASSES
from dropviz.models import MODELS, ResNet

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


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``path``, loaded with ``weights_only=True``. Accepts a bare state dict or a dict
    holding one under ``"model"`` / ``"state_dict"``; anything else raises :class:`WeightsError`."""
    name = Path(path).name
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{name}: no such file.") from None
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError... for bad files
        if "Weights only load failed" in str(err):
            raise WeightsError(f"{name} is refused: it holds Python objects, not just weights (tensors), "
                               "and loading it could run code.") from None
        raise WeightsError(f"{name} is not a readable PyTorch checkpoint (truncated or damaged: "
                           f"{type(err).__name__}).") from None
    state = _find_state_dict(obj)
    if state is None:
        raise WeightsError(f"{name} holds no model weights (expected a state dict of tensors).")
    return state


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
    """``ARCHITECTURES[arch]`` with ``weights``: ``"random"`` (initialised from ``seed``), ``"imagenet"``
    (ResNet-18 ImageNet only, from the local cache) or the path of a checkpoint."""
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


def _feature_model(model: ResNet, spec: Architecture, weights: str, trained: bool) -> FeatureModel:
    return FeatureModel(model, model.feature_layers(blocks=True), spec.class_names, spec.input_size, spec.mean,
                        spec.std, weights, trained)
