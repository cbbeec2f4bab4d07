"""Disout: feature map distortion (Tang et al., "Beyond Dropout: Feature Map Distortion to Regularize
Deep Neural Networks", AAAI 2020)."""
from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange
from torch import nn

from . import _blocks
from . import functional as F_
from ._checks import check_block_size, check_drop_prob, check_nonnegative, check_rank
from .base import Regularizer, SparseDrop


def _in_storage_order(x: torch.Tensor) -> torch.Tensor | None:
    """A channels-last 4-D ``x`` (by :func:`~dropviz.regularizers._blocks.memory_format`) as the (N, H, W, C)
    view its storage order is, else None. Reductions over the first dimension or the whole tensor run several
    times faster on that view."""
    return x.permute(0, 2, 3, 1) if _blocks.memory_format(x) == torch.channels_last else None


def _std(x: torch.Tensor) -> torch.Tensor | float:
    """Unbiased standard deviation of all of ``x`` from its sum and sum of squares, taken in one compiled pass
    (:func:`_sum_and_squares`, on torch's threads), far cheaper on CPU than Welford's ``torch.std`` and half the
    reading of a sum and a dot product; finished in Python floats. Falls back to ``torch.std`` when the mean
    dominates and the difference of moments would lose precision. 0 for a single value (no spread to scale the
    distortion by). A float on the CPU; elsewhere, and under ``torch.compile``, a 0-dim tensor."""
    nhwc = _in_storage_order(x)  # the same values, so the reshape below stays a view
    flat = (x if nhwc is None else nhwc).reshape(-1).float()
    n = flat.numel()
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return flat.std(correction=int(n > 1))  # the host must not wait for a GPU; a graph takes no data branch
    if n < 2:
        return 0.0
    total, squares = _blocks.launch_parallel(_sum_and_squares, flat.detach().numpy())
    mean, mean_square = total / n, squares / n
    if mean * mean > 1e3 * (mean_square - mean * mean):
        return flat.std().item()
    return math.sqrt((mean_square - mean * mean) * n / (n - 1))


_MOMENTS_PIECE = 1 << 14


@njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc"})
def _sum_and_squares(values):
    """Sum and sum of squares of ``values`` in float64, piece by piece on numba's threads and then over the
    pieces in order: the same result on any number of threads. Within a piece the additions may be reordered,
    so the loop vectorises."""
    pieces = -(-values.shape[0] // _MOMENTS_PIECE)
    sums, squares = np.zeros(pieces), np.zeros(pieces)
    for piece in prange(pieces):
        part = values[piece * _MOMENTS_PIECE:min((piece + 1) * _MOMENTS_PIECE, values.shape[0])]
        total = square_total = 0.0
        for i in range(part.shape[0]):
            value = np.float64(part[i])
            total += value
            square_total += value * value
        sums[piece], squares[piece] = total, square_total
    total = square_total = 0.0
    for piece in range(pieces):
        total += sums[piece]
        square_total += squares[piece]
    return total, square_total


@njit(cache=True, nogil=True)
def _scale_by_channel(values, offsets, sigma, channel_stride, channels):
    """``values[i] *= sigma[c]`` for ``c = (offsets[i] // channel_stride) % channels``, the channel of the unit at
    that storage offset: with a shift and a mask where both are powers of two (as in every model here), since
    an integer division costs as much as the rest of the loop several times over."""
    if channel_stride & (channel_stride - 1) == 0 and channels & (channels - 1) == 0:
        shift = 0
        while (1 << shift) < channel_stride:
            shift += 1
        for i in range(values.shape[0]):
            values[i] *= sigma[(offsets[i] >> shift) & (channels - 1)]
    else:
        for i in range(values.shape[0]):
            values[i] *= sigma[(offsets[i] // channel_stride) % channels]


@njit(cache=True, nogil=True)
def _signed_mean_of_strongest(filters, channels_last, sign, factor):
    """Disout's per-channel factor ``factor * mean_kernel(+-max_o weight[o, c, i, j])`` from the conv weight as
    stored, ``filters`` (out, in, kh, kw), or (out, kh, kw, in) for ``channels_last``, and ``sign`` (in, kh, kw),
    1 for +. The max over filters runs along the storage; each channel's terms are summed in (i, j) order
    in either layout, so both give the same float32 result."""
    flat = filters.reshape(filters.shape[0], -1)
    strongest = flat[0].copy()
    for o in range(1, flat.shape[0]):
        for k in range(flat.shape[1]):
            strongest[k] = max(strongest[k], flat[o, k])
    channels, kernel = sign.shape[0], sign.shape[1] * sign.shape[2]
    flat_sign = sign.reshape(-1)
    total = np.zeros(channels, np.float32)
    for k in range(strongest.shape[0]):
        channel = k % channels if channels_last else k // kernel
        position = k // channels if channels_last else k % kernel
        term = strongest[k]
        total[channel] += term if flat_sign[channel * kernel + position] > 0.5 else -term
    return total * np.float32(factor / kernel)


class Disout(Regularizer):
    """Disout (Tang et al., AAAI 2020, following the official code): DropBlock's mask, but dropped units
    are *distorted* instead of zeroed.

    - Mask: :class:`DropBlock2d`'s per-sample-and-channel mask with ``drop_prob`` (the paper's dist_prob) as
      the expected distorted fraction; our geometry keeps even-``k`` blocks inside the map (the official
      code is off by one there) and our exact seed rate (``exact_rate=False``: the paper's formula).
    - Distortion: ``alpha * w * std(x) * N(0, 1)`` with ``std`` over the whole tensor (unbiased, detached).
      ``w`` comes from the weight of the conv the output feeds (``weight_behind``, or the conv named with
      :meth:`feeds`, as the official code attaches the next conv's weight in its ResNets): max over output
      filters, a random sign per weight, mean over the kernel (one ``w`` per input channel), x0.1 for 1x1
      convs; 0.01 when nothing is attached.
    - Output ``(x * mask + distortion * (1 - mask)) / kept_fraction``; the gradient is ``mask / kept_fraction``.

    ``explain`` adds ``"seeds"`` and ``"distortion"`` (the distortion where it is applied, 0 elsewhere).
    """

    distorts = True

    def __init__(self, drop_prob: float = 0.1, block_size: int = 6, alpha: float = 1.0, exact_rate: bool = True):
        super().__init__()
        self.drop_prob = check_drop_prob(drop_prob)
        self.block_size = check_block_size(block_size)
        self.alpha = check_nonnegative(alpha, "alpha")
        self.exact_rate = bool(exact_rate)
        self.weight_behind: torch.Tensor | None = None
        self.feeds(None)

    def feeds(self, conv: nn.Conv2d | None) -> None:
        """Name the conv this module's output feeds; its weight, read afresh at every call, then serves as
        ``weight_behind`` (one assigned there comes first). Read afresh, it follows the optimizer's updates and
        any move of the model, as the official code's re-reading of the weight at every training step does.
        Kept outside the submodules: the conv stays the model's, and no parameter or state-dict key is added."""
        self.__dict__["_conv_behind"] = conv

    def distortion_std(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Standard deviation of the distortion, float32: per channel ``(C,)`` with ``weight_behind``, else
        one value ``(1,)``."""
        std = _std(x.detach())
        weight = self.weight_behind
        if weight is None and self._conv_behind is not None:
            weight = self._conv_behind.weight
        if weight is None or weight.numel() == 0:
            return (self.alpha * 0.01 * std) * torch.ones(1, device=x.device)
        weight = weight.detach().float()
        if weight.dim() != 4 or weight.shape[1] != x.shape[1]:
            raise ValueError(f"weight_behind must be a conv weight (out, {x.shape[1]}, kh, kw), "
                             f"got shape {tuple(weight.shape)}")
        sign = torch.empty((weight.shape[1], *weight.shape[2:]), device=weight.device)
        sign.bernoulli_(0.5, generator=generator)  # 1 for +, 0 for -; drawn in (in, kh, kw) order in any layout
        per_filter = 0.1 if weight.shape[2:] == (1, 1) else 1.0  # the official code's factor for 1x1 convs
        factor = self.alpha * per_filter * std
        in_storage_order = _in_storage_order(weight)  # a channels-last model's: 50x faster for 512 channels
        if _blocks.sparse_ok(weight) and (in_storage_order is not None or weight.is_contiguous()):
            # One compiled pass: inside a training step the half-dozen small tensor ops cost several times more.
            filters = weight if in_storage_order is None else in_storage_order
            w = _signed_mean_of_strongest(filters.numpy(), in_storage_order is not None, sign.numpy(), factor)
            return torch.from_numpy(w).to(x.device)
        strongest = weight.amax(dim=0) if in_storage_order is None else in_storage_order.amax(dim=0).permute(2, 0, 1)
        return sign.mul_(2).sub_(1).mul_(strongest).mean(dim=(1, 2)).to(x.device).mul_(factor)

    def stages(self, x, generator, explain):
        check_rank(x, (4,), "(N, C, H, W)")
        draw = F_.drop_block_draw(x, self.drop_prob, self.block_size, False, generator, self.exact_rate,
                                  with_seeds=explain, list_units=True)
        sigma = self.distortion_std(x, generator)
        if draw.dropped is not None:
            drop = self._distort_units(x, draw, sigma, generator)
            out = _blocks.drop_units(x, drop.dropped, drop.scale, drop.values * drop.scale)
            scale = torch.tensor(drop.scale)
        else:
            scaled, scale = _blocks.scaled_mask(draw, x)
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            distortion = (noise * sigma.view(1, -1, 1, 1).expand(1, x.shape[1], 1, 1)).to(x.dtype) \
                * draw.keep.logical_not()
            out = x * scaled + distortion * scale.to(x.dtype)
        if not explain:
            return {"output": out}
        keep = _blocks.keep_mask(draw, x)
        distortion = (out.detach() / scale.to(x.dtype)) * (1 - keep)
        return {"input": x, "seeds": draw.seeds, "mask": keep, "distortion": distortion, "output": out}

    @staticmethod
    def _distort_units(x, draw, sigma, generator) -> SparseDrop:
        """A sparse draw's distortion: noise only at the dropped units (each listed once)."""
        dropped = draw.dropped  # listed each once (list_units)
        if x.device.type == "cpu":  # our streams' normals: on torch's threads, where torch.randn uses one
            values = torch.from_numpy(F_.standard_normals(dropped.shape[0], generator))
        else:
            values = torch.randn(dropped.shape, generator=generator, device=x.device)
        if sigma.numel() == 1:
            values *= sigma.item()
        else:
            channel_stride = _blocks.mask_strides(x.shape, x)[1]
            if values.device.type == "cpu":
                _scale_by_channel(values.numpy(), dropped.numpy(), sigma.numpy(), channel_stride, x.shape[1])
            else:
                values *= sigma[(dropped // channel_stride) % x.shape[1]]
        return SparseDrop(dropped, values.to(x.dtype), _blocks.sparse_scale(draw))

    def has_sparse_draw(self, x: torch.Tensor) -> bool:
        """In training mode on the CPU where the blocks cover little (the sparse sampler), for an ``x`` the fused
        ops can write into (:func:`~dropviz.regularizers._blocks.fusable`)."""
        return (self.training and self.drop_prob > 0.0 and x.dim() == 4 and _blocks.fusable(x)
                and F_.draws_blocks_sparsely(x, self.drop_prob, self.block_size, self.exact_rate))

    def sparse_draw(self, x, generator=None) -> SparseDrop:
        if not self.has_sparse_draw(x):
            return super().sparse_draw(x, generator)
        draw = F_.drop_block_draw(x, self.drop_prob, self.block_size, False, generator, self.exact_rate,
                                  list_units=True)
        return self._distort_units(x, draw, self.distortion_std(x, generator), generator)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}, alpha={self.alpha}"
