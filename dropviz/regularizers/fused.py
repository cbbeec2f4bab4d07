"""A regularizer's sparse draw applied inside the ops around it, drawn and written into the activation by
:meth:`~dropviz.regularizers.Regularizer.sparse_drop_` (for DropBlock and ProbDropBlock in one compiled call).

Any renormalising mask as an op of its own costs two passes over the activation (``x * scale`` forward,
the same on the gradient), a few percent of a ResNet training step on the CPU whatever the mask. Fused:

- after a ReLU (:func:`relu_then_drop`): the dropped units are zeros written before the ReLU (the draw is the
  one for its output), and ReLU's own backward (gradient where the output is positive) gives them no gradient:
  no op of ours in the graph. The scale goes to the caller, who folds it into the next linear op
  (``conv(scale * h, W) == conv(h, scale * W)``). Disout's values, which a ReLU would change, are written
  after it, by an autograd function that also cuts their gradient.
- before a residual addition and ReLU (:func:`drop_add_relu`): the units are written into the branch's output
  and the scale is the addition's ``alpha``; the backward scales the branch's gradient in the one pass it
  needs anyway to differ from the shortcut's.

Both give what the module gives (the same draw from the same random numbers), up to float rounding.
"""
from __future__ import annotations

import torch

from . import _blocks
from .base import Regularizer


class _ReLUThenDistort(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, regularizer, generator):
        h = z.relu_()
        ctx.mark_dirty(z)
        drop = regularizer.sparse_drop_(h, generator)  # after the ReLU: the draw reads its output
        ctx.save_for_backward(h)
        ctx.dropped = drop.dropped  # an index: no autograd state
        return h, drop.scale  # a Python number: no gradient, and multiplying by it is the cheaper op

    @staticmethod
    def backward(ctx, grad, _):
        (h,) = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad, h, 0)
        grad = grad.contiguous(memory_format=_blocks.memory_format(h))
        _blocks.store_at(grad, ctx.dropped, None)  # written values may be positive; they are constants all the same
        return grad, None, None


def relu_then_drop(z: torch.Tensor, regularizer: Regularizer,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """``regularizer(relu(z)) == scale * h``: returns ``h`` (``z``'s storage, ReLU applied in place as
    ``nn.ReLU(inplace=True)`` does) and ``scale`` (a float) for the caller to fold into the next op.
    Needs ``regularizer.has_sparse_draw(z)``."""
    if regularizer.distorts:
        return _ReLUThenDistort.apply(z, regularizer, generator)
    # Zeros written into z behind autograd's back, then torch's ReLU: it saves its output, zeros included (saved-
    # tensor hooks too see them), and its backward gates the gradient on it. Had z's producer saved its output,
    # the in-place ReLU's version check would refuse the backward, as for any in-place op.
    scale = regularizer.sparse_drop_(z.detach(), generator, relu=True).scale
    return z.relu_(), scale


class _DropAddReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, branch, shortcut, regularizer, generator):
        drop = regularizer.sparse_drop_(branch, generator)
        ctx.mark_dirty(branch)
        out = torch.add(shortcut, branch, alpha=drop.scale).relu_()
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(out)
        ctx.dropped, ctx.scale, ctx.layout = drop.dropped, drop.scale, (branch.shape, branch.stride())
        return out, branch

    @staticmethod
    def backward(ctx, grad, _):
        (out,) = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
        grad_branch = torch.empty_strided(*ctx.layout, dtype=grad.dtype, device=grad.device)
        torch.mul(grad, ctx.scale, out=grad_branch)
        _blocks.store_at(grad_branch, ctx.dropped, None)
        return grad_branch, grad, None, None


def drop_add_relu(branch: torch.Tensor, shortcut: torch.Tensor, regularizer: Regularizer,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``relu(regularizer(branch) + shortcut)``. Writes the dropped units into ``branch`` (so its producer must
    not need its output for its backward: a batch norm's is fine; autograd refuses otherwise). Needs
    ``regularizer.has_sparse_draw(branch)``."""
    if not _blocks.fusable(branch):
        raise ValueError(f"branch must be a dense tensor (contiguous or channels-last), as the one drawn for: the "
                         f"draw's units are storage offsets; got shape {tuple(branch.shape)}, "
                         f"strides {branch.stride()}")
    return _DropAddReLU.apply(branch, shortcut, regularizer, generator)[0]
