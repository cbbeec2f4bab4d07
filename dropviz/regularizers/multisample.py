"""Multi-Sample Dropout (Inoue, "Multi-Sample Dropout for Accelerated Training and Better
Generalization", 2019)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ._checks import check_drop_prob, check_floating, check_positive_int
from .base import Regularizer
from .dropout import dropout_stages


class MultiSampleDropout(Regularizer):
    """``n_samples`` dropout masks of the same features, each passed through the one shared ``head``.

    ``forward(x)`` returns the mean of the per-sample logits ``head(dropout_i(x))``; :meth:`loss` returns the
    mean of the per-sample losses ``loss_fn(head(dropout_i(x)), y)`` as in the paper (the loss is taken on the
    head's output, not on the dropped features as in a popular blog version). In ``eval()`` mode all samples
    coincide and the module is ``head(x)``. Samples are drawn one after another from the same generator.

    ``explain`` gives ``"input"``, ``"mask"`` (sample 1), ``"mask_2"`` ... ``"mask_n"`` and ``"output"``.
    """

    cuda_graphs = True

    def __init__(self, head: nn.Module, n_samples: int = 8, drop_prob: float = 0.5):
        super().__init__()
        self.head = head
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.drop_prob = check_drop_prob(drop_prob)

    def _samples(self, x, generator, explain=False):
        for _ in range(self.n_samples):
            stages = dropout_stages(x, self.drop_prob, generator, explain)
            yield stages.get("mask"), self.head(stages["output"])

    def stages(self, x, generator, explain):
        masks, outputs = zip(*self._samples(x, generator, explain))
        out = sum(outputs[1:], outputs[0]) / self.n_samples  # a sum keeps the head's memory format
        if not explain:
            return {"output": out}
        named = {("mask" if i == 0 else f"mask_{i + 1}"): m for i, m in enumerate(masks)}
        return {"input": x, **named, "output": out}

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_floating(x)
        if not self.training or self.drop_prob == 0.0 or x.numel() == 0:
            return self.head(x)
        return self.stages(x, generator, explain=False)["output"]

    def loss(self, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean over samples of ``loss_fn(head(dropout_i(x)), y)`` (in eval mode: ``loss_fn(head(x), y)``)."""
        check_floating(x)
        if not self.training or self.drop_prob == 0.0 or x.numel() == 0:
            return loss_fn(self.head(x), y)
        return torch.stack([loss_fn(logits, y) for _, logits in self._samples(x, generator)]).mean()

    def extra_repr(self) -> str:
        return f"n_samples={self.n_samples}, drop_prob={self.drop_prob}"
