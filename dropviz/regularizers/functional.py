"""Functional forms of the mask ops. Each takes an optional ``torch.Generator`` for reproducible draws."""
from __future__ import annotations

import torch

from ._checks import check_drop_prob


def dropout_mask(x: torch.Tensor, drop_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli keep-mask (1 = kept) of ``x``'s shape, dtype and memory format."""
    drop_prob = check_drop_prob(drop_prob)
    noise = torch.empty_like(x).uniform_(generator=generator)
    return (noise >= drop_prob).to(x.dtype)
