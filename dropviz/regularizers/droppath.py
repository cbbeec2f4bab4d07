"""DropPath / stochastic depth (Larsson et al., FractalNet 2017; Huang et al., Stochastic Depth 2016)."""
from __future__ import annotations

from . import functional as F_
from ._checks import check_drop_prob
from .base import Regularizer


class DropPath(Regularizer):
    """Drops a whole residual branch: per sample (``mode="row"``, the usual stochastic-depth form) or for
    the whole batch at once (``mode="batch"``, as in the papers' original per-mini-batch draw). Kept
    branches are scaled by ``1 / (1 - drop_prob)`` so the expectation is unchanged. Accepts any tensor with
    a leading batch dimension; ``explain``'s ``"mask"`` is broadcast to the input's shape."""

    cuda_graphs = True

    def __init__(self, drop_prob: float = 0.1, mode: str = "row"):
        super().__init__()
        self.drop_prob = check_drop_prob(drop_prob)
        if mode not in ("row", "batch"):
            raise ValueError(f"mode must be 'row' or 'batch', got {mode!r}")
        self.mode = mode

    def stages(self, x, generator, explain):
        mask = F_.drop_path_mask(x, self.drop_prob, self.mode, generator)
        out = x * (mask / (1.0 - self.drop_prob))
        if not explain:
            return {"output": out}
        return {"input": x, "mask": mask.expand_as(x), "output": out}

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, mode={self.mode!r}"
