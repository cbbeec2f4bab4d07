"""The one API every dropviz regularizer shares."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ._blocks import Blocks, store_at
from ._checks import check_floating


class SparseDrop(NamedTuple):
    """One training-mode application written as the units it overwrites: ``forward(x)`` is ``scale * x`` with
    the units ``dropped`` set to ``values``, or to 0 where ``values`` is None. ``dropped`` holds storage
    offsets (``x``'s memory format, each once), or for zeros over blocks :class:`Blocks`."""

    dropped: torch.Tensor | Blocks
    values: torch.Tensor | None
    scale: float


class Regularizer(nn.Module):
    """Base class: in ``train()`` mode the module applies itself, in ``eval()`` mode it is the identity.

    Subclasses implement :meth:`stages`, the single code path behind both :meth:`forward` and
    :meth:`explain`; ``explain`` only asks it to keep the intermediate tensors.
    """

    drop_prob: float
    distorts = False  # whether a sparse draw writes values (Disout's distortion) rather than zeros
    # Whether a compiled step with this method can be replayed as a CUDA graph (torch.compile's mode
    # "reduce-overhead"): True only where that ran. On an H100 DropBlock, ProbDropBlock and Disout failed to
    # record (inductor: "storage data ptrs are not allocated in pool"), and DropCluster, which keeps recent
    # activations to refit its clusters, read a graph output that the next replay had overwritten.
    cuda_graphs = False

    def stages(self, x: torch.Tensor, generator: torch.Generator | None, explain: bool) -> dict[str, torch.Tensor]:
        """One application. Returns at least ``"output"``; with ``explain`` also ``"mask"`` (1 = kept)
        and the method's own intermediate stages, in the order they happen."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_floating(x)
        if not self.training or self.drop_prob == 0.0 or x.numel() == 0:  # an empty batch has nothing to drop
            return x
        return self.stages(x, generator, explain=False)["output"]

    def explain(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The ordered stages of one training-mode application (also when the module is in eval mode).

        With the same RNG state, ``explain(x)["output"]`` equals ``forward(x)`` in train mode exactly.
        """
        check_floating(x)
        if x.numel() == 0:
            raise ValueError(f"input is empty (shape {tuple(x.shape)}): there is nothing to explain")
        return self.stages(x, generator, explain=True)

    def has_sparse_draw(self, x: torch.Tensor) -> bool:
        """Whether :meth:`sparse_draw` can give this application for ``x``; decided by the mode, the rate,
        ``x``'s shape and device only. False unless a method has a sparse draw (on the CPU)."""
        return False

    def sparse_draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> SparseDrop:
        """This application as a :class:`SparseDrop`, for callers that fuse it into neighbouring ops (the
        models fold ``scale`` into the next convolution or addition and write the units into a ReLU's output).
        The same draw, from the same random numbers, as :meth:`forward`. Needs :meth:`has_sparse_draw`."""
        raise ValueError(f"{type(self).__name__} has no sparse draw for this input; call it instead")

    def sparse_drop_(self, x: torch.Tensor, generator: torch.Generator | None = None,
                     relu: bool = False) -> SparseDrop:
        """:meth:`sparse_draw`, its units written into ``x`` in place (0, or ``values``); ``x`` must be dense
        in its layout. Outside autograd: for the fused ops. A method may do both in one pass.

        ``relu=True``: the draw for ``relu(x)``, its zeros written into ``x`` before that ReLU, which keeps them
        (the same draw and the same ``relu(x)`` after, from the same random numbers). Not for a method that
        :attr:`distorts`: a ReLU would change its values."""
        if relu and self.distorts:
            raise ValueError(f"{type(self).__name__} writes values, not zeros, which a ReLU after would change; "
                             f"draw on the ReLU's output")
        drop = self.sparse_draw(x.relu() if relu else x, generator)
        store_at(x, drop.dropped, drop.values)
        return drop

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
