"""Models for 32x32 images with a regularizer inserted where its paper puts it."""
from __future__ import annotations

from functools import cache
from typing import Any

import torch

from .placement import DROPCLUSTER_DEFAULT, PLACEMENT, check_dropcluster_after, insert_regularizer, regularizers
from .resnet import MODELS, Block, ResNet, ShortcutA, cifar_resnet, resnet18


@cache
def feature_layer_names(name: str) -> tuple[str, ...]:
    """``stem``, ``stage1``, ... of ``MODELS[name]`` (the places DropCluster may sit after), read off a model
    built on the meta device (no memory, no initialisation cost)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    with torch.device("meta"):
        return tuple(MODELS[name]().feature_layers())


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, regularizer: str | None = None,
                params: dict[str, Any] | None = None, dropcluster_after: str = DROPCLUSTER_DEFAULT) -> ResNet:
    """``MODELS[name]`` with ``regularizer`` (a REGISTRY name, or None for none) built from ``params``;
    DropCluster sits after the feature layer ``dropcluster_after`` (``stem``, ``stage1``, ...)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    model = MODELS[name](num_classes=num_classes, in_channels=in_channels)
    if regularizer in (None, "none"):
        check_dropcluster_after(model.feature_layers(), None, dropcluster_after)
    else:
        insert_regularizer(model, regularizer, params, dropcluster_after)
    return model


__all__ = ["DROPCLUSTER_DEFAULT", "MODELS", "PLACEMENT", "Block", "ResNet", "ShortcutA", "build_model",
           "cifar_resnet", "feature_layer_names", "insert_regularizer", "regularizers", "resnet18"]
