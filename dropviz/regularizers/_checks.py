"""Argument checks shared by every regularizer: one message format, naming the parameter and its range."""
from __future__ import annotations

import math

import torch


def _number(value, name: str) -> float:
    if isinstance(value, (float, torch.SymFloat)):  # float() of a traced rate would bake it into the graph
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def check_drop_prob(drop_prob: float, name: str = "drop_prob") -> float:
    drop_prob = _number(drop_prob, name)
    if not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {drop_prob}")
    return drop_prob


def check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not math.isfinite(_number(value, name)) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_int(value: int, name: str) -> int:
    return check_int(value, name, 1)


def check_rank(x: torch.Tensor, ranks: tuple[int, ...], layout: str) -> None:
    if x.dim() not in ranks:
        raise ValueError(f"input must be a {layout} tensor ({' or '.join(map(str, ranks))}-D), "
                         f"got shape {tuple(x.shape)}")


def check_floating(x: torch.Tensor) -> None:
    """Masks are renormalised by a fractional scale, which integer and bool tensors cannot hold."""
    if not x.is_floating_point():
        raise ValueError(f"input must be a floating-point tensor, got {x.dtype}")


def check_block_size(block_size: int) -> int:
    return check_positive_int(block_size, "block_size")


def check_nonnegative(value: float, name: str) -> float:
    value = _number(value, name)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value
