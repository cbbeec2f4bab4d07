"""Models for 32x32 images with a regularizer inserted where its paper puts it."""
from __future__ import annotations

from typing import Any

from .placement import PLACEMENT, insert_regularizer, regularizers
from .resnet import MODELS, Block, ResNet, ShortcutA, cifar_resnet, resnet18


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, regularizer: str | None = None,
                params: dict[str, Any] | None = None) -> ResNet:
    """``MODELS[name]`` with ``regularizer`` (a REGISTRY name, or None for none) built from ``params``."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    model = MODELS[name](num_classes=num_classes, in_channels=in_channels)
    if regularizer not in (None, "none"):
        insert_regularizer(model, regularizer, params)
    return model


__all__ = ["MODELS", "PLACEMENT", "Block", "ResNet", "ShortcutA", "build_model", "cifar_resnet", "insert_regularizer",
           "regularizers", "resnet18"]
