"""DropBlock 2D/3D (Ghiasi et al. 2018) and ProbDropBlock (Zhao et al. 2022)."""
from __future__ import annotations

import torch

from . import _blocks
from . import functional as F_
from ._checks import check_block_size, check_drop_prob, check_rank
from .base import Regularizer, SparseDrop


class _DropBlockNd(Regularizer):
    _rank = 4
    _layout = "(N, C, H, W)"

    def __init__(self, drop_prob: float = 0.1, block_size: int = 7, share_channels: bool = False,
                 exact_rate: bool = True):
        super().__init__()
        self.drop_prob = check_drop_prob(drop_prob)
        self.block_size = check_block_size(block_size)
        self.share_channels = bool(share_channels)
        self.exact_rate = bool(exact_rate)

    def _draw(self, x, generator, explain, in_place=False, relu=False) -> _blocks.BlockDraw:
        # relu (the draw for relu(x)) changes nothing here: DropBlock's draw reads no values
        return F_.drop_block_draw(x, self.drop_prob, self.block_size, self.share_channels, generator,
                                  self.exact_rate, with_seeds=explain, in_place=in_place)

    def stages(self, x, generator, explain):
        check_rank(x, (self._rank,), self._layout)
        draw = self._draw(x, generator, explain)
        out = _blocks.apply_draw(x, draw)
        if not explain:
            return {"output": out}
        keep = _blocks.keep_mask(draw, x)
        return {"input": x, "seeds": draw.seeds.expand_as(x), "mask": keep.expand_as(x), "output": out}

    def has_sparse_draw(self, x: torch.Tensor) -> bool:
        """In training mode on the CPU, one mask per channel, where the blocks cover little (the sparse sampler),
        for an ``x`` the fused ops can write into (:func:`~dropviz.regularizers._blocks.fusable`)."""
        return (self.training and self.drop_prob > 0.0 and not self.share_channels and x.dim() == self._rank
                and _blocks.fusable(x) and F_.draws_blocks_sparsely(x, self.drop_prob, self.block_size, self.exact_rate))

    def sparse_draw(self, x, generator=None) -> SparseDrop:
        return self._sparse(x, generator, in_place=False)

    def sparse_drop_(self, x, generator=None, relu=False) -> SparseDrop:
        """The blocks' zeros written in the compiled pass that finds them (ProbDropBlock's, for a float32 or
        float64 ``x``, in the pass that draws the seeds): no second call to write them. With ``relu``, no copy
        of ``relu(x)`` either: ProbDropBlock reads its salience as ``max(x, 0)``."""
        return self._sparse(x, generator, in_place=True, relu=relu)

    def _sparse(self, x, generator, in_place: bool, relu: bool = False) -> SparseDrop:
        if not self.has_sparse_draw(x):
            return super().sparse_draw(x, generator)  # refuses
        draw = self._draw(x, generator, explain=False, in_place=in_place, relu=relu)
        return SparseDrop(draw.dropped, None, _blocks.sparse_scale(draw))

    def extra_repr(self) -> str:
        return (f"drop_prob={self.drop_prob}, block_size={self.block_size}, share_channels={self.share_channels}"
                + ("" if self.exact_rate else ", exact_rate=False"))


class DropBlock2d(_DropBlockNd):
    """DropBlock (Ghiasi et al., NeurIPS 2018, Algorithm 1 and the reference TF code) on ``(N, C, H, W)``.

    Drops ``block_size x block_size`` squares, ``drop_prob`` being the expected fraction of units dropped.

    - The block edge is clipped to the map per dimension (``k_h = min(k, H)``, ``k_w = min(k, W)``), so
      ``k >= H`` still drops ``drop_prob`` of the units (one block covering the whole map, w.p. ``drop_prob``).
    - Seeds sit only at valid centres, so blocks never cross the border; a seed at ``s`` drops rows
      ``[s - k//2, s - k//2 + k - 1]`` (``[s - k/2, s + k/2 - 1]`` for even ``k``, as TF's SAME pooling).
    - Seed rate: the paper's ``gamma = p / k^2 * H*W / ((H-k+1)(W-k+1))`` is a first-order formula that
      double-counts overlapping blocks and under-drops (5-15% at p=0.1); by default we solve for the gamma
      whose *exact* expected drop fraction is ``drop_prob``. ``exact_rate=False`` gives the paper's gamma.
    - One mask per sample and channel (the paper found it better); ``share_channels=True``: one per sample.
    - Output ``x * mask / kept_fraction`` with the kept fraction of the whole mask (guarded: all dropped -> 0).

    ``explain`` adds ``"seeds"`` (1 at seed centres) before ``"mask"``.
    """


class DropBlock3d(_DropBlockNd):
    """DropBlock on volumes ``(N, C, D, H, W)``: cubes of edge ``block_size`` (clipped per dimension), seed rate
    and renormalisation exactly as :class:`DropBlock2d` with three spatial dimensions."""

    _rank = 5
    _layout = "(N, C, D, H, W)"


class ProbDropBlock2d(_DropBlockNd):
    """ProbDropBlock (Zhao et al., "Revisiting Structured Dropout", ACML 2022) on ``(N, C, H, W)``.

    Like :class:`DropBlock2d` but a block's seed probability is proportional to the normalised feature
    salience ``|x|`` at its centre: ``gamma_i = gamma * |x_i| / mean_valid(|x|)`` per sample and channel,
    clipped to 1, where ``gamma`` is DropBlock's seed rate. Before the clip the expected number of seeds is
    DropBlock's, so the drop fraction equals ``drop_prob`` for uniform salience; salient clusters overlap more,
    so it falls slightly below. The clip costs seeds wherever ``gamma * |x_i| / mean`` exceeds 1, which takes
    small blocks and high rates: with ``block_size=1`` on ReLU(N(0, 1)) activations (half of them 0, never
    seeds) ``drop_prob`` 0.5 drops about 35% and 0.8 about 40%; from ``block_size=3`` the drop fraction stays
    close to ``drop_prob``. ``explain`` shows the mask actually drawn. Salience is read from ``x.detach()``;
    masks are per sample and channel.
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 7, exact_rate: bool = True):
        super().__init__(drop_prob, block_size, share_channels=False, exact_rate=exact_rate)

    def _draw(self, x, generator, explain, in_place=False, relu=False) -> _blocks.BlockDraw:
        return F_.prob_drop_block_draw(x, self.drop_prob, self.block_size, generator, self.exact_rate,
                                       with_seeds=explain, in_place=in_place, relu=relu)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"
