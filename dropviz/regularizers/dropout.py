"""Element-wise dropout in the shared API (the baseline)."""
from __future__ import annotations

import torch

from . import _blocks
from . import functional as F_
from ._checks import check_drop_prob
from .base import Regularizer


def dropout_stages(x: torch.Tensor, drop_prob: float, generator: torch.Generator | None,
                   explain: bool) -> dict[str, torch.Tensor]:
    """One inverted-dropout application: ``{"output"}``, with ``explain`` also ``"input"`` and ``"mask"``.

    On CPU the dropped units are drawn sparsely and the output is ``x * scale`` with them zeroed, forward
    and backward, without a mask tensor (see :func:`~dropviz.regularizers.functional.dropout_draw`)."""
    draw = F_.dropout_draw(x, drop_prob, generator)
    scale = 1.0 / (1.0 - drop_prob)
    if draw.dropped is not None:
        out = _blocks.drop_units(x, draw.dropped, scale)
    else:
        out = x * (draw.keep.to(x.dtype) * scale)
    if not explain:
        return {"output": out}
    return {"input": x, "mask": _blocks.keep_mask(draw, x), "output": out}


class Dropout(Regularizer):
    """Inverted dropout (Srivastava et al. 2014): each unit kept with probability ``1 - drop_prob``,
    kept units scaled by ``1 / (1 - drop_prob)`` so the expectation is unchanged. Any input shape."""

    cuda_graphs = True

    def __init__(self, drop_prob: float = 0.1):
        super().__init__()
        self.drop_prob = check_drop_prob(drop_prob)

    def stages(self, x, generator, explain):
        return dropout_stages(x, self.drop_prob, generator, explain)
