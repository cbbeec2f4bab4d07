"""Block-mask machinery shared by DropBlock 2D/3D, Disout and ProbDropBlock.

Geometry (Ghiasi et al. 2018 and their TF code): the block edge is clipped per spatial dimension,
``k_d = min(block_size, size_d)``; seeds may only sit at *valid centres* ``s`` with
``k_d // 2 <= s_d < size_d - (k_d - 1) // 2``, and a seed at ``s`` drops ``[s - k_d // 2, s - k_d // 2 + k_d - 1]``
(for even ``k`` that is ``[s - k/2, s + k/2 - 1]`` as TF's SAME max-pool gives). Every block therefore lies
inside the map. Internally a seed is stored by its block's first index ``v = s - k // 2`` in the
"valid grid" of ``size_d - k_d + 1`` positions per dimension.

Two samplers give the same distribution (i.i.d. Bernoulli(gamma) seeds on the valid grid):
- ``dense``: one Bernoulli draw per valid position, blocks by a max-pool. Pure tensor ops, so it is the one
  used under ``torch.compile`` and on accelerators (no host synchronisation).
- ``sparse``: seeds are rare (about ``p / k^2`` of the positions), so draw the seed *count*
  ``M ~ Binomial(T, gamma)`` and then a uniform ``M``-subset of the ``T`` positions; conditioned on its size a
  Bernoulli(gamma) vector is exactly a uniform subset, so the law is identical. Blocks are written with one
  scatter of ``M * k^2`` indices instead of pooling the whole tensor.
"""
from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

# Above this seed rate the dense sampler is cheaper than sorting the drawn positions (measured on CPU).
SPARSE_MAX_SEED_RATE = 0.05


def clip_block(spatial: tuple[int, ...], block_size: int) -> tuple[int, ...]:
    """Block edge per spatial dimension, clipped to the map as in the paper's code."""
    return tuple(min(block_size, size) for size in spatial)


def coverage_counts(size: int, k: int) -> list[int]:
    """How many valid block positions cover index ``i`` of a dimension of length ``size``."""
    last = size - k
    return [min(i, last) - max(0, i - k + 1) + 1 for i in range(size)]


@torch.compiler.assume_constant_result  # a pure function of Python numbers: a constant to torch.compile
def seed_rate(drop_prob: float, spatial: tuple[int, ...], block: tuple[int, ...], exact: bool = True) -> float:
    """Seed probability gamma on the valid grid.

    The paper's rate, ``p / prod(k) * prod(size) / prod(size - k + 1)``, counts a unit covered by two blocks
    twice (the paper calls it an approximation), so the realised drop fraction falls short of ``p``: by 5-15%
    at p=0.1 for k=3..7 on 14..56 maps, and far more at large p. With ``exact`` (our default) we solve
    ``E[dropped fraction] = 1 - mean_u (1 - gamma)^c(u) = p`` for gamma, where ``c(u)`` is the number of valid
    blocks covering unit ``u``; to first order in gamma it is the paper's formula.
    """
    return _seed_rate(float(drop_prob), tuple(spatial), tuple(block), bool(exact))


@lru_cache(maxsize=512)
def _seed_rate(drop_prob: float, spatial: tuple[int, ...], block: tuple[int, ...], exact: bool) -> float:
    n_valid = math.prod(s - k + 1 for s, k in zip(spatial, block))
    numel = math.prod(spatial)
    paper = drop_prob * numel / (math.prod(block) * n_valid)
    if not exact or drop_prob == 0.0:
        return paper
    # Histogram of coverage counts: c(u) is the product of the per-dimension counts.
    histogram = Counter({1: 1})
    for size, k in zip(spatial, block):
        per_dim = Counter(coverage_counts(size, k))
        combined = Counter()
        for a, m in histogram.items():
            for b, n in per_dim.items():
                combined[a * b] += m * n
        histogram = combined

    def expected_drop(gamma: float) -> float:
        return sum(m * -math.expm1(c * math.log1p(-gamma)) for c, m in histogram.items()) / numel if gamma < 1 else 1.0

    low, high = paper, 1.0  # expected_drop(paper) <= p <= expected_drop(1) = 1
    for _ in range(100):
        mid = 0.5 * (low + high)
        if expected_drop(mid) < drop_prob:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * high:
            break
    return 0.5 * (low + high)


def uniform_subset(total: int, count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """A uniformly random ``count``-subset of ``range(total)`` (sorted), for ``count`` much smaller than ``total``.

    Draw the missing number of i.i.d. uniform indices and keep the distinct ones until there are ``count``.
    The stopping rule only looks at how many are distinct, which is invariant under relabelling, so the
    result is uniform over all subsets of that size; it can never overshoot.
    """
    picked = torch.empty(0, dtype=torch.long, device=device)
    while picked.numel() < count:
        extra = torch.randint(total, (count - picked.numel(),), generator=generator, device=device)
        picked = torch.cat([picked, extra]).unique()
    return picked


class BlockDraw(NamedTuple):
    """One block-mask draw. ``mask`` is 1 = kept, shape ``(N, C or 1, *spatial)``, ``x``'s dtype and layout;
    ``seeds`` (only when asked) marks the seed centres; ``sparse`` tells which sampler drew it."""

    mask: torch.Tensor
    seeds: torch.Tensor | None
    sparse: bool


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def _valid_shape(spatial: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s - k + 1 for s, k in zip(spatial, block))


def draw_block_mask(x: torch.Tensor, gamma: float | torch.Tensor, block: tuple[int, ...], share_channels: bool,
                    generator: torch.Generator | None, sampler: str, with_seeds: bool) -> BlockDraw:
    """Draw seeds with rate ``gamma`` (a float, or a per-valid-position tensor for ProbDropBlock) and expand
    them into blocks. ``sampler`` is ``"sparse"``, ``"dense"`` or ``"auto"``."""
    n, c = x.shape[:2]
    spatial = tuple(x.shape[2:])
    mask_shape = (n, 1 if share_channels else c, *spatial)
    valid = _valid_shape(spatial, block)
    if sampler == "auto":
        sparse_ok = (x.device.type == "cpu" and not torch.compiler.is_compiling()
                     and isinstance(gamma, float) and gamma <= SPARSE_MAX_SEED_RATE)
        sampler = "sparse" if sparse_ok else "dense"
    if sampler == "sparse":
        if not isinstance(gamma, float):
            raise ValueError("the sparse sampler needs one seed rate for every position")
        return _sparse(x, gamma, block, mask_shape, valid, generator, with_seeds)
    if sampler != "dense":
        raise ValueError(f"sampler must be 'auto', 'sparse' or 'dense', got {sampler!r}")
    return _dense(x, gamma, block, mask_shape, valid, generator, with_seeds)


def _dense(x, gamma, block, mask_shape, valid, generator, with_seeds) -> BlockDraw:
    seed_shape = (*mask_shape[:2], *valid)
    work_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    if isinstance(gamma, torch.Tensor):
        seeds = torch.bernoulli(gamma.to(work_dtype).expand(seed_shape), generator=generator)
    else:
        seeds = torch.empty(seed_shape, dtype=work_dtype, device=x.device).bernoulli_(gamma, generator=generator)
    mask, seed_map = expand_seed_map(seeds, block, x, with_seeds)
    return BlockDraw(mask, seed_map, sparse=False)


def expand_seed_map(seeds: torch.Tensor, block: tuple[int, ...], x: torch.Tensor,
                    with_seeds: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep-mask from a 0/1 map of block starts on the valid grid (N, C, *valid), by max-pooling."""
    # Output index i is dropped iff a seed sits at a block start v with i - k + 1 <= v <= i.
    pad = [p for k in reversed(block) for p in (k - 1, k - 1)]
    pool = F.max_pool2d if len(block) == 2 else F.max_pool3d
    dropped = pool(F.pad(seeds, pad), kernel_size=block, stride=1)
    mask = (1 - dropped).to(x.dtype).contiguous(memory_format=_memory_format(x))
    if not with_seeds:
        return mask, None
    # Block start v -> centre v + k // 2; the remaining (k - 1) // 2 rows/cols after the last centre.
    centre_pad = [p for k in reversed(block) for p in (k // 2, (k - 1) // 2)]
    return mask, F.pad(seeds, centre_pad).to(x.dtype).contiguous(memory_format=_memory_format(x))


def _sparse(x, gamma, block, mask_shape, valid, generator, with_seeds) -> BlockDraw:
    total = mask_shape[0] * mask_shape[1] * math.prod(valid)
    count = int(torch.binomial(torch.tensor([float(total)], dtype=torch.float64),
                               torch.tensor([gamma], dtype=torch.float64), generator=generator).item())
    seeds = uniform_subset(total, count, generator, x.device)
    mask, seed_map = expand_seed_index(seeds, mask_shape, block, x, with_seeds)
    return BlockDraw(mask, seed_map, sparse=True)


def expand_seed_index(seeds: torch.Tensor, mask_shape: tuple[int, ...], block: tuple[int, ...], x: torch.Tensor,
                      with_seeds: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep-mask from the flat indices of block starts on the valid grid (N, C, *valid), by one scatter."""
    mask = torch.empty(mask_shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x)).fill_(1)
    valid = _valid_shape(tuple(mask_shape[2:]), block)
    # Storage offset of each block's first unit, then of every unit of the block.
    strides = mask.stride()
    offset = torch.zeros_like(seeds)
    rest = seeds
    for size, stride in zip(reversed(valid), reversed(strides[2:])):
        offset += (rest % size) * stride
        rest = rest // size
    offset += (rest % mask_shape[1]) * strides[1] + (rest // mask_shape[1]) * strides[0]
    template = torch.zeros((), dtype=torch.long, device=x.device)
    for k, stride in zip(block, strides[2:]):
        template = template.unsqueeze(-1) + torch.arange(k, device=x.device) * stride
    dropped = (offset.unsqueeze(-1) + template.reshape(1, -1)).reshape(-1)
    mask.as_strided((mask.numel(),), (1,))[dropped] = 0
    if not with_seeds:
        return mask, None
    seed_map = torch.zeros_like(mask)
    centre = sum((k // 2) * stride for k, stride in zip(block, strides[2:]))
    seed_map.as_strided((mask.numel(),), (1,))[offset + centre] = 1
    return mask, seed_map


def scale_in_place(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a 0/1 keep-mask into ``mask / kept_fraction`` in place and return it with that scale.

    Renormalising by the kept fraction of the whole tensor is the paper's rule; when nothing is kept the
    mask stays 0 (the scale is guarded against division by zero). No host synchronisation.
    """
    kept = torch.count_nonzero(mask).clamp_min(1)
    scale = mask.numel() / kept
    return mask.mul_(scale), scale
