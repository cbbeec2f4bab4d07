"""Argument checks shared by every regularizer: one message format, naming the parameter and its range."""
from __future__ import annotations

import torch


def check_drop_prob(drop_prob: float, name: str = "drop_prob") -> float:
    drop_prob = float(drop_prob)
    if not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {drop_prob}")
    return drop_prob


def check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_rank(x: torch.Tensor, ranks: tuple[int, ...], layout: str) -> None:
    if x.dim() not in ranks:
        raise ValueError(f"input must be a {layout} tensor ({' or '.join(map(str, ranks))}-D), "
                         f"got shape {tuple(x.shape)}")


def check_block_size(block_size: int) -> int:
    return check_positive_int(block_size, "block_size")


def check_nonnegative(value: float, name: str) -> float:
    value = float(value)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value
