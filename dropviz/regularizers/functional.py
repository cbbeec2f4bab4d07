"""Functional forms of the mask ops. Each takes an optional ``torch.Generator`` (on the input's device) for
reproducible draws and returns a keep-mask (1 = kept) in the input's dtype; the modules add the scaling."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from numba import njit

from . import _blocks
from ._checks import check_block_size, check_drop_prob, check_rank


def dropout_mask(x: torch.Tensor, drop_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli keep-mask (1 = kept) of ``x``'s shape, dtype and memory format."""
    return _blocks.keep_mask(dropout_draw(x, drop_prob, generator), x)


def dropout_draw(x: torch.Tensor, drop_prob: float, generator: torch.Generator | None = None,
                 sampler: str = "auto") -> _blocks.BlockDraw:
    """One dropout draw: i.i.d. Bernoulli(``drop_prob``) drops of ``x``'s units, as a block draw with
    blocks of one unit. ``"sparse"`` (the default on CPU for ``drop_prob <= 0.25``) draws only the dropped
    units' positions (:func:`~dropviz.regularizers._blocks.bernoulli_positions`; all units are alike, so
    they serve directly as storage offsets); ``"dense"`` draws one float32 uniform per unit (a float16 or
    bfloat16 uniform would be too coarse to hit ``drop_prob`` exactly). Same law either way."""
    drop_prob = check_drop_prob(drop_prob)
    if _blocks.resolve_sampler(sampler, _blocks.sparse_units_ok(x, drop_prob)) == "sparse":
        positions = _blocks.bernoulli_positions(x.numel(), drop_prob, generator, x.device)
        return _blocks.BlockDraw(tuple(x.shape), None, torch.from_numpy(positions).to(x.device), None)
    noise = torch.empty_like(x, dtype=torch.float32).uniform_(generator=generator)
    return _blocks.BlockDraw(tuple(x.shape), noise >= drop_prob, None, None)


def drop_path_mask(x: torch.Tensor, drop_prob: float, mode: str = "row",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep-mask of stochastic depth: one Bernoulli per sample (``"row"``, shape ``(N, 1, ..., 1)``) or one for
    the whole batch (``"batch"``, shape ``(1, ..., 1)``); it broadcasts against ``x``."""
    drop_prob = check_drop_prob(drop_prob)
    if mode not in ("row", "batch"):
        raise ValueError(f"mode must be 'row' or 'batch', got {mode!r}")
    if x.dim() < 1:
        raise ValueError("input must have a batch dimension, got a 0-D tensor")
    shape = (x.shape[0] if mode == "row" else 1,) + (1,) * (x.dim() - 1)
    noise = torch.empty(shape, dtype=torch.float32, device=x.device).uniform_(generator=generator)
    return (noise >= drop_prob).to(x.dtype)


def drop_block_mask(x: torch.Tensor, drop_prob: float, block_size: int, share_channels: bool = False,
                    generator: torch.Generator | None = None, exact_rate: bool = True,
                    sampler: str = "auto") -> torch.Tensor:
    """DropBlock keep-mask (Ghiasi et al. 2018) for ``(N, C, H, W)`` or ``(N, C, D, H, W)`` input.

    Shape ``(N, C, *spatial)``, or ``(N, 1, *spatial)`` with ``share_channels``. Geometry and seed rate are
    documented in :mod:`dropviz.regularizers._blocks`; ``exact_rate=False`` uses the paper's seed rate
    formula (which under-drops where blocks overlap). ``sampler`` picks ``"sparse"`` or ``"dense"`` seed
    drawing (same distribution; ``"auto"`` picks the faster one).
    """
    return _blocks.keep_mask(drop_block_draw(x, drop_prob, block_size, share_channels, generator, exact_rate,
                                             sampler), x)


def drop_block_draw(x: torch.Tensor, drop_prob: float, block_size: int, share_channels: bool = False,
                    generator: torch.Generator | None = None, exact_rate: bool = True, sampler: str = "auto",
                    with_seeds: bool = False) -> _blocks.BlockDraw:
    """:func:`drop_block_mask` with the sampler's extras (dropped offsets, seed map); used by the modules."""
    check_rank(x, (4, 5), "(N, C, H, W) or (N, C, D, H, W)")
    block, gamma = block_seed_rate(x, drop_prob, block_size, exact_rate)
    return _blocks.draw_block_mask(x, gamma, block, share_channels, generator, sampler, with_seeds)


def block_seed_rate(x: torch.Tensor, drop_prob: float, block_size: int,
                    exact_rate: bool = True) -> tuple[tuple[int, ...], float]:
    """DropBlock's block edge per spatial dimension of ``x`` (clipped to the map) and its seed rate gamma."""
    return _spatial_seed_rate(tuple(x.shape[2:]), drop_prob, block_size, exact_rate)


def _spatial_seed_rate(spatial: tuple[int, ...], drop_prob: float, block_size: int,
                       exact_rate: bool) -> tuple[tuple[int, ...], float]:
    block = _blocks.clip_block(spatial, check_block_size(block_size))
    return block, _blocks.seed_rate(check_drop_prob(drop_prob), spatial, block, exact_rate)


def draws_blocks_sparsely(x: torch.Tensor, drop_prob: float, block_size: int, exact_rate: bool = True) -> bool:
    """Whether the ``"auto"`` sampler draws DropBlock's (and ProbDropBlock's, Disout's) seeds for ``x``
    sparsely: on the CPU where the blocks cover little (:func:`~dropviz.regularizers._blocks.sparse_blocks_ok`)."""
    return _blocks.sparse_ok(x) and _blocks_cover_little(tuple(x.shape[2:]), drop_prob, block_size, exact_rate)


@lru_cache(maxsize=512)
def _blocks_cover_little(spatial: tuple[int, ...], drop_prob: float, block_size: int, exact_rate: bool) -> bool:
    """Cached: a training step asks for every regularizer, twice for a fused one."""
    block, gamma = _spatial_seed_rate(spatial, drop_prob, block_size, exact_rate)
    return _blocks.blocks_cover_little(gamma, block)


def salience_seed_rate(x: torch.Tensor, drop_prob: float, block_size: int, exact_rate: bool = True) -> torch.Tensor:
    """ProbDropBlock's per-position seed probability on the valid grid, shape ``(N, C, H-k+1, W-k+1)``.

    The salience ``|x|`` at each valid block centre is normalised to mean 1 over the sample's channel map,
    so the expected number of seeds is DropBlock's; probabilities are clipped to 1 (and a map that is all
    zero falls back to uniform).
    """
    check_rank(x, (4,), "(N, C, H, W)")
    block, gamma = block_seed_rate(x, drop_prob, block_size, exact_rate)
    salience = _valid_salience(x, block)
    mean = salience.mean(dim=(2, 3), keepdim=True)
    all_zero = mean == 0
    per_unit = gamma / mean.masked_fill(all_zero, math.inf)  # 0 for an all-zero map
    return torch.addcmul(all_zero * gamma, salience, per_unit).clamp_(max=1.0)


def _valid_salience(x: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """``|x|`` (float32, detached) at the valid block centres, ``(N, C, H-k+1, W-k+1)`` in ``x``'s layout."""
    (kh, kw), (h, w) = block, tuple(x.shape[2:])
    return x.detach()[:, :, kh // 2: h - (kh - 1) // 2, kw // 2: w - (kw - 1) // 2].float().abs()


def _salient_seeds(x: torch.Tensor, block: tuple[int, int], gamma: float,
                   generator: torch.Generator | None) -> np.ndarray:
    """Sorted flat indices (into the valid grid ``(N, C, H-k+1, W-k+1)``) of seeds with ProbDropBlock's rates
    (:func:`salience_seed_rate`), drawn map by map by thinning (:func:`_thin_maps`) at each map's own largest
    rate: a few candidates per seed however salient the most salient map is. Uniforms come from ``generator``
    in one draw, the expected need and over 5 SDs more (drawn again, twice as many, in the rare case that was
    not enough)."""
    salience = _valid_salience(x, block)
    n, c, height, width = salience.shape
    offset, factor, ceilings = _map_rates(salience.sum(dim=(2, 3)).reshape(-1).numpy(),
                                          salience.amax(dim=(2, 3)).reshape(-1).numpy(), height * width, gamma)
    # The logarithms are vectorised here rather than taken one by one in the loop (several times dearer there):
    # the hazard -log(1 - c) per map (inf for c = 1: every position a candidate) and its reciprocal, log(1 - u)
    # for every uniform.
    with np.errstate(divide="ignore"):
        hazards = -np.log1p(-ceilings)
        per_hazard = np.reciprocal(hazards)
    expected = 2 * float(ceilings.sum()) * height * width + 1  # two uniforms per candidate
    count = int(expected + 8 * math.sqrt(expected) + 64)  # the count's SD is under sqrt(2 * expected)
    strides = salience.stride()
    tables = (_blocks._storage(salience).numpy(), _within_map(height, width, *strides[2:]), strides[0], strides[1],
              c, offset, factor, ceilings, hazards, per_hazard)
    while True:
        uniforms = torch.rand(count, dtype=torch.float64, generator=generator)
        seeds, complete = _thin_maps(uniforms.numpy(), torch.log1p(-uniforms).numpy(), *tables)
        if complete:
            return seeds
        count *= 2


@njit(cache=True, nogil=True)
def _map_rates(sums, peaks, positions, gamma):
    """Per map, from its salience sum and peak over ``positions`` valid positions: the seed rate
    ``min(offset + salience * factor, 1)`` as ``offset`` and ``factor`` (0 and ``gamma / mean``, or ``gamma``
    and 0 for an all-zero map), and its largest value, the map's ceiling."""
    offset, factor, ceilings = np.zeros(sums.shape[0]), np.zeros(sums.shape[0]), np.empty(sums.shape[0])
    for m in range(sums.shape[0]):
        if sums[m] > 0.0:
            factor[m] = gamma * positions / sums[m]
        else:
            offset[m] = gamma
        ceilings[m] = min(offset[m] + peaks[m] * factor[m], 1.0)
    return offset, factor, ceilings


@lru_cache(maxsize=64)
def _within_map(height: int, width: int, row_stride: int, column_stride: int) -> np.ndarray:
    """A valid position's storage offset within its map, in row-major order of the positions."""
    return np.add.outer(np.arange(height) * row_stride, np.arange(width) * column_stride).reshape(-1)


@njit(cache=True, nogil=True)
def _thin_maps(uniforms, log_complements, salience, within_map, sample_stride, channel_stride, channels, offset,
               factor, ceilings, hazards, per_hazard):
    """Per map ``m`` of the valid grid ``(N, C, H', W')``: candidates at rate ``c = ceilings[m]``, each kept
    with probability ``rate / c`` where ``rate = min(offset[m] + salience * factor[m], 1)``: exactly
    independent Bernoulli(rate) seeds. ``salience`` is read from its storage (``within_map``: a position's
    offset in a map), so channels-last stays as it is. Returns the seeds and whether ``uniforms`` sufficed.

    The candidates are one walk through all maps: an exponential variate ``E = -log(1 - u)`` passes
    ``floor(E / h)`` positions of hazard ``h = hazards[m] = -log(1 - c)`` before the next candidate (a
    Geometric(c) gap), and what a map leaves unspent of it carries to the next map, exponential again by
    memorylessness: no uniform is spent on a map's end."""
    per_map = within_map.shape[0]
    seeds = np.empty(uniforms.shape[0] // 2 + 1, np.int64)
    if uniforms.shape[0] == 0:
        return seeds[:0], False
    exposure, used, n_seeds, sample, channel = -log_complements[0], 1, 0, 0, -1
    for m in range(ceilings.shape[0]):
        channel += 1
        if channel == channels:
            sample, channel = sample + 1, 0
        ceiling = ceilings[m]
        if ceiling <= 0.0:
            continue
        hazard, per_hazard_m = hazards[m], per_hazard[m]
        map_storage = sample * sample_stride + channel * channel_stride
        position = 0
        while position < per_map:
            passed = exposure * per_hazard_m  # 0 for hazard inf (c = 1)
            if passed >= per_map - position:  # no candidate in the rest of this map
                exposure -= (per_map - position) * hazard
                break
            position += int(passed)
            if used + 2 > uniforms.shape[0]:
                return seeds[:0], False
            rate = min(offset[m] + salience[map_storage + within_map[position]] * factor[m], 1.0)
            seeds[n_seeds] = m * per_map + position  # written always, kept if accepted: no branch to mispredict
            n_seeds += uniforms[used] * ceiling < rate
            exposure = -log_complements[used + 1]
            used += 2
            position += 1
    return seeds[:n_seeds], True


def prob_drop_block_mask(x: torch.Tensor, drop_prob: float, block_size: int,
                         generator: torch.Generator | None = None, exact_rate: bool = True) -> torch.Tensor:
    """ProbDropBlock keep-mask (Zhao et al. 2022): seeds with salience-proportional probability
    (:func:`salience_seed_rate`), then DropBlock's block expansion; shape of ``x``."""
    return _blocks.keep_mask(prob_drop_block_draw(x, drop_prob, block_size, generator, exact_rate), x)


def prob_drop_block_draw(x: torch.Tensor, drop_prob: float, block_size: int,
                         generator: torch.Generator | None = None, exact_rate: bool = True,
                         with_seeds: bool = False) -> _blocks.BlockDraw:
    """:func:`prob_drop_block_mask` with the seed map; used by the module.

    On the CPU, where the blocks cover little, the seeds are drawn by thinning map by map
    (:func:`_salient_seeds`): the rates are computed only at the candidates, never for the whole valid grid.
    Elsewhere the rates of the whole grid go to DropBlock's dense sampler."""
    check_rank(x, (4,), "(N, C, H, W)")
    block, gamma = block_seed_rate(x, drop_prob, block_size, exact_rate)
    if _blocks.sparse_blocks_ok(x, gamma, block):
        seeds = _salient_seeds(x, block, gamma, generator)
        dropped, seed_map = _blocks.expand_seed_index(seeds, tuple(x.shape), block, x, with_seeds)
        return _blocks.BlockDraw(tuple(x.shape), None, dropped, seed_map)
    rates = salience_seed_rate(x, drop_prob, block_size, exact_rate)
    return _blocks.draw_block_mask(x, rates, block, False, generator, "dense", with_seeds)


def cluster_mask(labels: torch.Tensor, n_clusters: int, batch: int, drop_prob: float,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """DropCluster keep-mask ``(batch, C, H, W)`` from a per-channel label map ``labels`` of shape ``(C, H, W)``
    (values in ``[0, n_clusters)``): every (sample, channel, cluster) is dropped with probability
    ``drop_prob``, so the expected dropped fraction is exactly ``drop_prob`` whatever the cluster sizes."""
    like = torch.empty((batch, *labels.shape), dtype=dtype, device=labels.device)
    return _blocks.keep_mask(cluster_draw(like, labels, n_clusters, drop_prob, generator)[0], like)


def cluster_draw(x: torch.Tensor, labels: torch.Tensor, n_clusters: int, drop_prob: float,
                 generator: torch.Generator | None = None,
                 sampler: str = "auto") -> tuple[_blocks.BlockDraw, torch.Tensor]:
    """:func:`cluster_mask` as a draw for ``x`` (N, C, H, W), with the dropped clusters ``(N, C, n_clusters)``
    (1 = dropped, float32). ``"sparse"`` (default on CPU for ``drop_prob <= 0.25``) draws only the dropped
    (sample, channel, cluster) triples and lists their units; ``"dense"`` draws one uniform per triple."""
    drop_prob = check_drop_prob(drop_prob)
    shape = (x.shape[0], labels.shape[0], n_clusters)
    if _blocks.resolve_sampler(sampler, _blocks.sparse_units_ok(x, drop_prob)) == "sparse":
        triples = _blocks.bernoulli_positions(math.prod(shape), drop_prob, generator, x.device)
        units = _blocks.cluster_offsets(triples, labels.cpu().numpy(), n_clusters, x.shape,
                                        _blocks.mask_strides(tuple(x.shape), x))
        dropped_clusters = torch.zeros(math.prod(shape), device=x.device)
        dropped_clusters[torch.from_numpy(triples).to(x.device)] = 1.0
        draw = _blocks.BlockDraw(tuple(x.shape), None, torch.from_numpy(units).to(x.device), None)
        return draw, dropped_clusters.reshape(shape)
    kept_clusters = torch.empty(shape, device=x.device).uniform_(generator=generator) >= drop_prob
    index = labels.reshape(1, shape[1], -1).expand(shape[0], -1, -1)
    keep = kept_clusters.gather(2, index).reshape(x.shape).contiguous(memory_format=_blocks.memory_format(x))
    return _blocks.BlockDraw(tuple(x.shape), keep, None, None), (~kept_clusters).float()
