"""Element-wise dropout in the shared API (the baseline)."""
from __future__ import annotations

import torch

from . import functional as F_
from ._checks import check_drop_prob
from .base import Regularizer


class Dropout(Regularizer):
    """Inverted dropout (Srivastava et al. 2014): each unit kept with probability ``1 - drop_prob``,
    kept units scaled by ``1 / (1 - drop_prob)`` so the expectation is unchanged."""

    def __init__(self, drop_prob: float = 0.1):
        super().__init__()
        self.drop_prob = check_drop_prob(drop_prob)

    def stages(self, x, generator, explain):
        if self.drop_prob == 0.0:
            return {"input": x, "mask": torch.ones_like(x), "output": x} if explain else {"output": x}
        mask = F_.dropout_mask(x, self.drop_prob, generator=generator)
        scale = 1.0 / (1.0 - self.drop_prob)
        out = x * (mask * scale)
        return {"input": x, "mask": mask, "output": out} if explain else {"output": out}
