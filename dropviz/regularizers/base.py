"""The one API every dropviz regularizer shares."""
from __future__ import annotations

import torch
from torch import nn


class Regularizer(nn.Module):
    """Base class: in ``train()`` mode the module applies itself, in ``eval()`` mode it is the identity.

    Subclasses implement :meth:`stages`, the single code path behind both :meth:`forward` and
    :meth:`explain`; ``explain`` only asks it to keep the intermediate tensors.
    """

    drop_prob: float

    def stages(self, x: torch.Tensor, generator: torch.Generator | None, explain: bool) -> dict[str, torch.Tensor]:
        """One application. Returns at least ``"output"``; with ``explain`` also ``"mask"`` (1 = kept)
        and the method's own intermediate stages, in the order they happen."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        return self.stages(x, generator, explain=False)["output"]

    def explain(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The ordered stages of one training-mode application (also when the module is in eval mode).

        With the same RNG state, ``explain(x)["output"]`` equals ``forward(x)`` in train mode exactly.
        """
        return self.stages(x, generator, explain=True)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
