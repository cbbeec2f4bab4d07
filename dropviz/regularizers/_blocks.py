"""Block-mask machinery shared by DropBlock 2D/3D, Disout and ProbDropBlock.

Geometry (Ghiasi et al. 2018 and their TF code): the block edge is clipped per spatial dimension,
``k_d = min(block_size, size_d)``; seeds may only sit at *valid centres* ``s`` with
``k_d // 2 <= s_d < size_d - (k_d - 1) // 2``, and a seed at ``s`` drops ``[s - k_d // 2, s - k_d // 2 + k_d - 1]``
(for even ``k`` that is ``[s - k/2, s + k/2 - 1]`` as TF's SAME max-pool gives). Every block therefore lies
inside the map. Internally a seed is stored by its block's first index ``v = s - k // 2`` in the
"valid grid" of ``size_d - k_d + 1`` positions per dimension.

Two samplers give the same distribution (i.i.d. Bernoulli(gamma) seeds on the valid grid):
- ``dense``: one Bernoulli draw per valid position, blocks by windowed sums. Pure tensor ops, so it is the one
  used under ``torch.compile`` and on accelerators (no host synchronisation).
- ``sparse`` (CPU): seeds are rare (about ``p / k^2`` of the positions), so draw only the seeds: the gaps
  between successive seeds of a Bernoulli(gamma) sequence are i.i.d. Geometric(gamma), and their cumulative
  sum gives the seed positions with exactly the dense law (:func:`bernoulli_positions`). The dropped units
  are kept as whole blocks (:class:`Blocks`: each block's first unit, a per-shape table does the rest),
  their distinct units counted in one compiled pass with a per-map bitmap (the kept fraction), and the output
  is ``x * scale`` with the blocks zeroed (:class:`_DropUnits`): no Bernoulli draw per unit, no pooling, no
  mask tensor, no list of units; the backward pass is the same op on the gradient. Where each unit needs a
  value of its own (Disout) the units are listed once each (:meth:`Blocks.units`).
"""
from __future__ import annotations

import math
import threading
from collections import Counter
from functools import lru_cache
from typing import NamedTuple

import numba
import numpy as np
import torch
import torch.nn.functional as F
from numba import njit, prange

# The sparse sampler's cost grows with the number of units its blocks list, gamma * block area per unit
# (the coverage); beyond this the dense sampler wins (forward + backward measured on CPU: 2-5x faster
# at coverage 0.4-1.7, even at 2.2). Seeds are drawn as geometric gaps while their rate is at most
# SPARSE_MAX_CANDIDATE_RATE, above it by one uniform per position.
SPARSE_MAX_COVERAGE = 2.0
SPARSE_MAX_CANDIDATE_RATE = 0.25


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


@torch.library.custom_op("dropviz::seed_rate", mutates_args=())
def traced_seed_rate(drop_prob: torch.Tensor, spatial: list[int], block: list[int], exact: bool) -> torch.Tensor:
    """:func:`seed_rate` as an op on a 0-dim float64 CPU tensor, for ``torch.compile``. A rate that changes
    every step (a :class:`~dropviz.regularizers.LinearScheduler`) then enters the graph as a value: as a Python
    float it was baked into the graph, so every new rate recompiled, and past torch's recompile limit parts of
    a call fell back to eager code, whose sparse draws the compiled rest could not take."""
    return torch.tensor(seed_rate(drop_prob.item(), tuple(spatial), tuple(block), exact), dtype=torch.float64)


@traced_seed_rate.register_fake
def _(drop_prob, spatial, block, exact):
    return torch.empty((), dtype=torch.float64)


@lru_cache(maxsize=512)
def _seed_rate(drop_prob: float, spatial: tuple[int, ...], block: tuple[int, ...], exact: bool) -> float:
    n_valid = math.prod(s - k + 1 for s, k in zip(spatial, block))
    numel = math.prod(spatial)
    paper = drop_prob * numel / (math.prod(block) * n_valid)
    if not exact or drop_prob == 0.0:
        return paper
    return float(_newton_seed_rate(drop_prob, paper, *_coverage_histogram(spatial, block)))


@njit(cache=True, nogil=True)
def _newton_seed_rate(drop_prob, gamma, counts, weights):
    """Newton's method on the expected drop ``1 - sum_c weight_c (1 - gamma)^c``, increasing and concave in
    gamma: from the paper's rate, which under-drops (``1 - (1 - gamma)^c <= c * gamma``), every step stays below
    the root and nears it quadratically. Compiled: training ramps drop_prob every step, so this runs once per
    step and block shape (NumPy's calls on a histogram of a few dozen entries cost 20 us a solve)."""
    for _ in range(100):
        log_miss = math.log1p(-gamma)
        expected_drop = slope = 0.0
        for count, weight in zip(counts, weights):
            expected_drop -= weight * math.expm1(count * log_miss)
            slope += weight * count * math.exp(count * log_miss)
        step = (drop_prob - expected_drop) * (1.0 - gamma) / slope
        gamma = min(gamma + max(step, 0.0), 1.0)
        if step <= 1e-12 * gamma or gamma >= 1.0:
            break
    return gamma


@lru_cache(maxsize=128)
def _coverage_histogram(spatial: tuple[int, ...], block: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct coverage counts ``c(u)`` over the map, and the fraction of units having each; ``c(u)`` is
    the product of the per-dimension counts."""
    histogram = Counter({1: 1})
    for size, k in zip(spatial, block):
        per_dim = Counter(coverage_counts(size, k))
        combined = Counter()
        for a, m in histogram.items():
            for b, n in per_dim.items():
                combined[a * b] += m * n
        histogram = combined
    counts = np.array(list(histogram), dtype=np.float64)
    weights = np.array(list(histogram.values()), dtype=np.float64) / math.prod(spatial)
    return counts, weights


def bernoulli_positions(total: int, gamma: float, generator: torch.Generator | None,
                        device: torch.device) -> np.ndarray:
    """Sorted indices of the successes of ``total`` i.i.d. Bernoulli(``gamma``) trials, drawn sparsely.

    The gaps between successive successes (counting from -1) are i.i.d. Geometric(gamma) on {1, 2, ...},
    ``1 + floor(log(1 - u) / log(1 - gamma))`` for a uniform ``u``, so their cumulative sum, cut at ``total``,
    has exactly the law of the dense draw, at a cost proportional to the number of successes. Uniforms come
    from ``generator``, a little more than the expected count, topped up in the rare case that was not enough;
    their logarithms are taken vectorised (one by one in the loop they cost several times more), the walk is
    one compiled loop.
    """
    if gamma <= 0.0:
        return np.empty(0, dtype=np.int64)
    if gamma >= 1.0:
        return np.arange(total, dtype=np.int64)
    expected = total * gamma
    chunk = int(expected + 6.0 * math.sqrt(expected) + 16)
    per_log_miss = 1.0 / math.log1p(-gamma)
    last, parts = -1, []
    while last < total:
        uniforms = torch.rand(chunk, dtype=torch.float64, device=device, generator=generator).cpu().numpy()
        log_complements = np.log1p(np.negative(uniforms, out=uniforms), out=uniforms)  # in place: no temporaries
        positions, last = _geometric_walk(log_complements, per_log_miss, last, total)
        parts.append(positions)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@njit(cache=True, nogil=True)
def _geometric_walk(log_complements, per_log_miss, last, total):
    """From ``last``, one geometric gap per uniform ``u`` (given as ``log(1 - u)``); the positions below
    ``total`` and where the walk ended (``total`` or beyond once it passed the end)."""
    positions = np.empty(log_complements.shape[0], np.int64)
    for i in range(log_complements.shape[0]):
        last += 1 + int(min(log_complements[i] * per_log_miss, total))
        if last >= total:
            return positions[:i], last
        positions[i] = last
    return positions, last


def block_offsets(seeds: np.ndarray, plan: _OffsetsPlan, listed: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Storage offsets of every dropped unit of a mask (its shape, layout and block in ``plan``:
    :func:`_offsets_plan`), each once (only if ``listed``, else empty), of each block's first unit, and the
    number of distinct units.

    ``seeds`` are sorted flat indices (int64) of block starts on the valid grid ``(N, C, *valid)``. Where
    blocks overlap, a unit is listed (and counted) only under the first block (in seed order) that covers it.
    """
    units = np.empty(seeds.shape[0] * plan.units_per_block if listed else 0, plan.offset_dtype)
    starts = np.empty(seeds.shape[0], np.int64)
    n_units = _union_offsets(seeds, plan.channels, plan.strides[0], plan.strides[1], *plan.geometry, units, starts)
    return units[:n_units], starts, n_units


class _OffsetsPlan(NamedTuple):
    channels: int
    strides: tuple[int, ...]
    geometry: tuple[np.ndarray, ...]
    units_per_block: int
    offset_dtype: type


@lru_cache(maxsize=256)
def _offsets_plan(mask_shape: tuple[int, ...], layout: torch.memory_format, block: tuple[int, ...]) -> _OffsetsPlan:
    """What :func:`block_offsets` needs of a mask's shape and layout, found once (it runs on every draw)."""
    strides = _strides(mask_shape, layout)
    return _OffsetsPlan(mask_shape[1], strides, _block_geometry(mask_shape, strides, block), math.prod(block),
                        offset_dtype(math.prod(mask_shape)))


def offset_dtype(numel: int) -> type:
    """int32 storage offsets where they fit: half the memory to write and read back of int64."""
    return np.int32 if numel <= _INT32_MAX else np.int64


_INT32_MAX = np.iinfo(np.int32).max


def _block_geometry(mask_shape: tuple[int, ...], strides: tuple[int, ...],
                    block: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Per-shape tables of :func:`_union_offsets`. For each valid-grid position of one map: the storage offset
    of the block it starts and its first unit's index within the map; for each unit of a block: its storage
    offset and map index relative to the block's first unit."""
    spatial = mask_shape[2:]
    valid = _valid_shape(spatial, block)
    map_strides = np.cumprod((1,) + spatial[:0:-1])[::-1]  # a unit's index within its (row-major) map
    tables = [np.zeros((), dtype=np.int64) for _ in range(4)]
    for positions, k, stride, map_stride in zip(valid, block, strides[2:], map_strides):
        steps = (np.arange(positions) * stride, np.arange(positions) * map_stride,
                 np.arange(k) * stride, np.arange(k) * map_stride)
        tables = [table[..., None] + step for table, step in zip(tables, steps)]
    for table in tables:
        table.flags.writeable = False
    return tuple(table.reshape(-1) for table in tables)


@njit(cache=True, nogil=True)
def _union_offsets(seeds, channels, sample_stride, channel_stride, seed_storage, seed_unit, block_storage,
                   block_unit, units, starts):
    """:func:`block_offsets`' one pass, into ``starts`` and (unless it is empty) ``units``; returns the number
    of distinct units. The seeds of one map come together (they are sorted): a map's only seed has its whole
    block; where a map has several, a bitmap of its units, cleared between maps, tells which units an earlier
    block already had."""
    per_map = seed_storage.shape[0]
    listing = units.shape[0] > 0
    taken = np.zeros(block_unit[-1] + seed_unit[-1] + 1, np.bool_)  # every unit of a map
    touched = np.empty(taken.shape[0], np.int64)
    n_units, n_touched, map_first, map_storage = 0, 0, -per_map, 0
    for i in range(seeds.shape[0]):
        if seeds[i] >= map_first + per_map:  # a new map: clear the bitmap where it was set
            for j in range(n_touched):
                taken[touched[j]] = False
            n_touched = 0
            map_index = seeds[i] // per_map
            map_first = map_index * per_map
            map_storage = (map_index // channels) * sample_stride + (map_index % channels) * channel_stride
        position = seeds[i] - map_first
        start = map_storage + seed_storage[position]
        starts[i] = start
        first_in_map = i == 0 or seeds[i - 1] < map_first
        last_in_map = i + 1 == seeds.shape[0] or seeds[i + 1] >= map_first + per_map
        if first_in_map and last_in_map:  # alone in its map: no overlap to check
            if listing:
                for j in range(block_storage.shape[0]):
                    units[n_units + j] = start + block_storage[j]
            n_units += block_storage.shape[0]
            continue
        for j in range(block_storage.shape[0]):
            unit = seed_unit[position] + block_unit[j]
            if not taken[unit]:
                taken[unit] = True
                touched[n_touched] = unit
                n_touched += 1
                if listing:
                    units[n_units] = start + block_storage[j]
                n_units += 1
    return n_units


def write_blocks_(x: torch.Tensor, seeds: np.ndarray, block: tuple[int, ...]) -> Blocks:
    """:class:`Blocks` of ``block``-sized blocks at the sorted ``seeds`` (flat indices into the valid grid
    ``(N, C, *valid)`` of ``x``; what :func:`block_offsets` gives: each block's first unit and the distinct units'
    count), their zeros written into ``x`` (a dense CPU tensor) in the same parallel call, in pieces of whole maps:
    one pass over the seeds from Python instead of two."""
    if not fusable(x) or x.device.type != "cpu":
        raise ValueError(f"blocks are written in place into a dense CPU tensor; got shape {tuple(x.shape)}, "
                         f"strides {x.stride()} on {x.device}")
    plan = _offsets_plan(tuple(x.shape), memory_format(x), tuple(block))
    storage = _storage(x).view(_SAME_SIZE_INT[x.element_size()]).numpy()  # any float dtype: zeros are zero bits
    starts, count = launch_parallel(_blocks_in_pieces, storage, np.asarray(seeds, dtype=np.int64), plan.channels,
                                    *plan.strides[:2], *plan.geometry, torch.get_num_threads())
    return Blocks(starts, int(count), seeds, plan)


@njit(cache=True, nogil=True, parallel=True)
def _blocks_in_pieces(storage, seeds, channels, sample_stride, channel_stride, seed_storage, seed_unit,
                      block_storage, block_unit, pieces):
    """:func:`zero_and_count_blocks` of ``seeds`` in ``pieces`` runs of whole maps (:func:`map_runs`), one per
    thread. Returns the starts and the count."""
    bounds = map_runs(seeds, seed_storage.shape[0], pieces)
    starts, units = np.empty(seeds.shape[0], np.int64), np.empty(pieces, np.int64)
    for piece in prange(pieces):
        units[piece] = zero_and_count_blocks(storage, seeds, starts, bounds[piece], bounds[piece + 1], channels,
                                             sample_stride, channel_stride, seed_storage, seed_unit, block_storage,
                                             block_unit)
    return starts, units.sum()


@njit(cache=True, nogil=True)
def map_runs(seeds, per_map, pieces):
    """Bounds of ``pieces`` runs of the sorted ``seeds`` of about equal length, each of whole maps (``per_map``
    valid positions a map): blocks of one map may overlap, which one run's count must see."""
    n = seeds.shape[0]
    bounds = np.zeros(pieces + 1, np.int64)
    for piece in range(1, pieces + 1):
        i = max(piece * n // pieces, bounds[piece - 1])
        while 0 < i < n and seeds[i] // per_map == seeds[i - 1] // per_map:  # not inside a map
            i += 1
        bounds[piece] = i
    return bounds


@njit(cache=True, nogil=True)
def zero_and_count_blocks(storage, seeds, starts, lo, hi, channels, sample_stride, channel_stride, seed_storage,
                          seed_unit, block_storage, block_unit):
    """The blocks of ``seeds[lo:hi]`` (whole maps): their first units' storage offsets into ``starts[lo:hi]``
    (:func:`_union_offsets`), zeros written over them in ``storage``; returns the distinct units' count."""
    count = _union_offsets(seeds[lo:hi], channels, sample_stride, channel_stride, seed_storage, seed_unit,
                           block_storage, block_unit, np.empty(0, np.int64), starts[lo:hi])
    _scatter(storage, starts, block_storage, np.zeros(1, storage.dtype), lo, hi)
    return count


class Blocks(NamedTuple):
    """The units of a sparse block draw, as whole blocks: unit ``j`` of block ``i`` is at storage offset
    ``starts[i] + within[j]``. Blocks may overlap, so writing zeros block by block (:func:`store_at`) writes a
    unit twice at most, which costs less than listing the units each once on every draw. ``count`` is the
    number of distinct units (the kept fraction needs it); :meth:`units` lists them each once, for writes of
    a value per unit (Disout)."""

    starts: np.ndarray
    count: int
    seeds: np.ndarray
    plan: _OffsetsPlan

    @property
    def within(self) -> np.ndarray:
        """A block's units' storage offsets relative to its first unit."""
        return self.plan.geometry[2]

    def numel(self) -> int:
        return self.count

    def units(self) -> torch.Tensor:
        """The distinct units' storage offsets, each once (in seed order, as :func:`block_offsets` lists them)."""
        return torch.from_numpy(block_offsets(self.seeds, self.plan)[0])


def unit_offsets(dropped: torch.Tensor | Blocks) -> torch.Tensor:
    """The storage offsets of ``dropped``'s units, each once: a tensor of them as it is, or :meth:`Blocks.units`."""
    return dropped.units() if isinstance(dropped, Blocks) else dropped


def cluster_offsets(triples: np.ndarray, labels: np.ndarray, n_clusters: int, shape: tuple[int, ...],
                    strides: tuple[int, ...]) -> np.ndarray:
    """Storage offsets of all units of the dropped clusters, each once (the clusters partition the map).

    ``triples`` are flat indices into ``(N, C, n_clusters)``; ``labels`` is the ``(C, H, W)`` label map.
    Each channel's positions are sorted by label once, so a cluster's units are one contiguous run of them.
    """
    channels, height, width = labels.shape
    labels = labels.reshape(channels, -1)
    by_label = np.argsort(labels, axis=1, kind="stable")
    spatial = (by_label // width) * strides[2] + (by_label % width) * strides[3]
    sizes = np.stack([np.bincount(row, minlength=n_clusters) for row in labels])
    firsts = np.cumsum(sizes, axis=1) - sizes
    sample, channel, cluster = np.unravel_index(triples, (shape[0], channels, n_clusters))
    lengths = sizes[channel, cluster]
    owner = np.repeat(np.arange(triples.size), lengths)
    within = np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = channel[owner] * height * width + firsts[channel, cluster][owner] + within
    return (sample * strides[0] + channel * strides[1])[owner] + spatial.reshape(-1)[position]


class BlockDraw(NamedTuple):
    """One block-mask draw for a mask of ``shape`` ``(N, C or 1, *spatial)`` in ``x``'s memory format.

    The dense sampler gives ``keep``, a bool map (True = kept); the sparse ones give ``dropped``, the dropped
    units (:class:`Blocks` for block draws, storage offsets each once otherwise), so the mask is built by one
    fill and one scatter.
    ``seeds`` (only when asked, ``x``'s dtype) marks the seed centres.
    """

    shape: tuple[int, ...]
    keep: torch.Tensor | None
    dropped: torch.Tensor | Blocks | None
    seeds: torch.Tensor | None


def sparse_ok(x: torch.Tensor) -> bool:
    """Whether the sparse samplers may run: on the CPU, outside ``torch.compile`` (they synchronise and use
    NumPy for the index arithmetic)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def sparse_blocks_ok(x: torch.Tensor, gamma: float, block: tuple[int, ...]) -> bool:
    """Whether block seeds of rate ``gamma`` are drawn sparsely ("auto"): :func:`sparse_ok`, and
    :func:`blocks_cover_little`."""
    return sparse_ok(x) and blocks_cover_little(gamma, block)


def blocks_cover_little(gamma: float, block: tuple[int, ...]) -> bool:
    """Whether blocks seeded at rate ``gamma`` cover at most SPARSE_MAX_COVERAGE (the sparse sampler's cost
    grows with the units they list)."""
    return gamma * math.prod(block) <= SPARSE_MAX_COVERAGE


def sparse_units_ok(x: torch.Tensor, rate: float) -> bool:
    """Whether units (Dropout) or clusters (DropCluster) dropped at ``rate`` are drawn sparsely ("auto"):
    :func:`sparse_ok`, and at most SPARSE_MAX_CANDIDATE_RATE of them are dropped."""
    return sparse_ok(x) and rate <= SPARSE_MAX_CANDIDATE_RATE


def resolve_sampler(sampler: str, sparse_when_auto: bool) -> str:
    """``"sparse"`` or ``"dense"``: ``sampler`` itself, or for ``"auto"`` the sparse one where
    ``sparse_when_auto``; any other value is refused."""
    if sampler == "auto":
        return "sparse" if sparse_when_auto else "dense"
    if sampler not in ("sparse", "dense"):
        raise ValueError(f"sampler must be 'auto', 'sparse' or 'dense', got {sampler!r}")
    return sampler


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The dense layout masks for ``x`` use: ``x``'s own when it is channels-last, else contiguous."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def fusable(x: torch.Tensor) -> bool:
    """Whether storage offsets in :func:`memory_format`'s layout address ``x`` itself (non-empty, dense in
    that layout), as the fused ops need: they write a draw's units into ``x``, not into a new tensor."""
    return x.numel() > 0 and x.is_contiguous(memory_format=memory_format(x))


def _valid_shape(spatial: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s - k + 1 for s, k in zip(spatial, block))


def draw_block_mask(x: torch.Tensor, gamma: float | torch.Tensor, block: tuple[int, ...], share_channels: bool,
                    generator: torch.Generator | None, sampler: str, with_seeds: bool,
                    list_units: bool = False, in_place: bool = False) -> BlockDraw:
    """Draw seeds with rate ``gamma`` (a float, or a per-valid-position tensor for ProbDropBlock) and expand
    them into blocks. ``sampler`` is ``"sparse"`` (a float ``gamma`` only), ``"dense"`` or ``"auto"``; a sparse
    draw gives its units as :class:`Blocks`, or listed each once with ``list_units``, or with ``in_place``
    also writes their zeros into ``x`` (:func:`write_blocks_`)."""
    n, c = x.shape[:2]
    spatial = tuple(x.shape[2:])
    mask_shape = (n, 1 if share_channels else c, *spatial)
    valid = _valid_shape(spatial, block)
    if resolve_sampler(sampler, isinstance(gamma, float) and sparse_blocks_ok(x, gamma, block)) == "sparse":
        return _sparse(x, gamma, block, mask_shape, valid, generator, with_seeds, list_units, in_place)
    if in_place:
        raise ValueError("blocks are written in place only where they are drawn sparsely (on the CPU, covering "
                         "little of the map)")
    return _dense(x, gamma, block, mask_shape, valid, generator, with_seeds)


def _dense(x, gamma, block, mask_shape, valid, generator, with_seeds) -> BlockDraw:
    seed_shape = (*mask_shape[:2], *valid)
    work_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    if isinstance(gamma, torch.Tensor):  # a uniform and a comparison: cheaper than bernoulli(probabilities)
        uniform = torch.rand(seed_shape, dtype=work_dtype, device=x.device, generator=generator)
        seeds = (uniform < gamma).to(work_dtype)
    else:
        seeds = torch.empty(seed_shape, dtype=work_dtype, device=x.device).bernoulli_(gamma, generator=generator)
    keep, seed_map = expand_seed_map(seeds, block, x, with_seeds)
    return BlockDraw(mask_shape, keep, None, seed_map)


def expand_seed_map(seeds: torch.Tensor, block: tuple[int, ...], x: torch.Tensor,
                    with_seeds: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep-mask from a 0/1 map of block starts on the valid grid (N, C, *valid).

    Output index ``i`` is dropped iff a seed sits at a block start ``v`` with ``i - k + 1 <= v <= i``: a
    windowed sum of the seeds along each spatial dimension. On the CPU from cumulative sums
    (:func:`window_hits_by_scan`: CPU max-pooling of many small maps is far slower), elsewhere by max-pooling
    (:func:`window_hits_by_pooling`: one kernel where the scans take six).
    """
    by_scan = seeds.device.type == "cpu"
    hits = window_hits_by_scan(seeds, block) if by_scan else window_hits_by_pooling(seeds, block)
    mask = (hits == 0).contiguous(memory_format=memory_format(x))
    if not with_seeds:
        return mask, None
    # Block start v -> centre v + k // 2; the remaining (k - 1) // 2 rows/cols after the last centre.
    centre_pad = [p for k in reversed(block) for p in (k // 2, (k - 1) // 2)]
    return mask, F.pad(seeds, centre_pad).to(x.dtype).contiguous(memory_format=memory_format(x))


def window_hits_by_scan(seeds: torch.Tensor, block: tuple[int, ...]) -> torch.Tensor:
    """The number of seeds at block starts ``i - k + 1 .. i`` per output index ``i``, from a cumulative sum:
    two passes per spatial dimension whatever ``k``."""
    counts = seeds
    for dim, k in enumerate(block, start=2):
        length = counts.shape[dim] + k - 1
        pad = [0, 0] * (counts.dim() - 1 - dim) + [k, k - 1]  # k - 1 zeros each side, one more in front
        cumulative = F.pad(counts, pad).cumsum(dim)
        counts = cumulative.narrow(dim, k, length) - cumulative.narrow(dim, 0, length)
    return counts


def window_hits_by_pooling(seeds: torch.Tensor, block: tuple[int, ...]) -> torch.Tensor:
    """1 where :func:`window_hits_by_scan` counts any seed, else 0: the seed map padded by ``k - 1`` each side
    and max-pooled with a ``k`` window, stride 1."""
    pool = {2: F.max_pool2d, 3: F.max_pool3d}[len(block)]
    return pool(F.pad(seeds, [p for k in reversed(block) for p in (k - 1, k - 1)]), block, stride=1)


def _sparse(x, gamma, block, mask_shape, valid, generator, with_seeds, list_units, in_place) -> BlockDraw:
    if not isinstance(gamma, float):
        raise ValueError("the sparse sampler takes one seed rate; per-position rates need sampler='dense'")
    if gamma > SPARSE_MAX_CANDIDATE_RATE:  # most positions are seeds: one uniform each, as _dense draws them
        uniform = torch.rand((*mask_shape[:2], *valid), generator=generator, device=x.device)
        seeds = np.flatnonzero((uniform < gamma).cpu().numpy())
    else:
        seeds = bernoulli_positions(mask_shape[0] * mask_shape[1] * math.prod(valid), gamma, generator, x.device)
    dropped, seed_map = expand_seed_index(seeds, mask_shape, block, x, with_seeds, list_units, in_place)
    return BlockDraw(mask_shape, None, dropped, seed_map)


def expand_seed_index(seeds: np.ndarray, mask_shape: tuple[int, ...], block: tuple[int, ...], x: torch.Tensor,
                      with_seeds: bool, list_units: bool = False,
                      in_place: bool = False) -> tuple[Blocks | torch.Tensor, torch.Tensor | None]:
    """The dropped units of a mask of ``mask_shape`` in ``x``'s memory format, from the sorted flat indices of
    block starts on the valid grid (N, C, *valid): as :class:`Blocks` (on the CPU), or with ``list_units`` their
    storage offsets each once (one pass either way), or with ``in_place`` as :class:`Blocks` whose zeros are
    written into ``x`` in the same pass (:func:`write_blocks_`); and, if asked, the seed-centre map."""
    seeds = np.asarray(seeds, dtype=np.int64)
    if in_place:
        if tuple(mask_shape) != tuple(x.shape):
            raise ValueError(f"a mask of shape {tuple(mask_shape)} is not written in place into x of shape "
                             f"{tuple(x.shape)}")
        dropped = write_blocks_(x, seeds, block)
    else:
        plan = _offsets_plan(tuple(mask_shape), memory_format(x), tuple(block))
        units, starts, count = block_offsets(seeds, plan, listed=list_units)
        dropped = torch.from_numpy(units).to(x.device) if list_units else Blocks(starts, count, seeds, plan)
    if not with_seeds:
        return dropped, None
    seed_map = _filled(mask_shape, x, 0.0)
    centre = sum((k // 2) * stride for k, stride in zip(block, mask_strides(mask_shape, x)[2:]))
    _storage(seed_map).index_fill_(0, torch.from_numpy(starts + centre).to(x.device), 1.0)
    return dropped, seed_map


def mask_strides(shape: tuple[int, ...], x: torch.Tensor) -> tuple[int, ...]:
    """Strides of a dense mask of ``shape`` in ``x``'s memory format (what the storage offsets refer to)."""
    return _strides(tuple(shape), memory_format(x))


@lru_cache(maxsize=256)
def _strides(shape: tuple[int, ...], layout: torch.memory_format) -> tuple[int, ...]:
    return torch.empty(shape, device="meta").contiguous(memory_format=layout).stride()


def _filled(shape: tuple[int, ...], x: torch.Tensor, value: float) -> torch.Tensor:
    return torch.empty(shape, dtype=x.dtype, device=x.device).contiguous(memory_format=memory_format(x)).fill_(value)


def _storage(mask: torch.Tensor) -> torch.Tensor:
    """A dense tensor's storage as a 1-D view (its units in memory order)."""
    return mask.as_strided((mask.numel(),), (1,))


def keep_mask(draw: BlockDraw, x: torch.Tensor) -> torch.Tensor:
    """The draw's 0/1 keep-mask (1 = kept) in ``x``'s dtype and memory format."""
    if draw.keep is not None:
        return draw.keep.to(x.dtype)
    mask = _filled(draw.shape, x, 1.0)
    store_at(mask, draw.dropped, None)
    return mask


def sparse_scale(draw: BlockDraw) -> float:
    """``1 / kept_fraction`` of a sparse draw, known on the host from the dropped count (guarded: all
    dropped gives 0 output anyway)."""
    numel = math.prod(draw.shape)
    return numel / max(numel - draw.dropped.numel(), 1)


_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def store_at(out: torch.Tensor, dropped: torch.Tensor | Blocks, values: torch.Tensor | None) -> None:
    """Write 0, or ``values`` (``out``'s dtype, one per offset), at the distinct storage offsets ``dropped``
    of the dense tensor ``out``, or write 0 over :class:`Blocks`. On the CPU a compiled loop of bitwise stores
    (any float dtype, bfloat16 included: they are copied as integers of the same size), a fraction of
    ``index_fill_``'s cost on a freshly written tensor."""
    if isinstance(dropped, Blocks) and values is not None:
        raise ValueError("values are written at listed units (Blocks.units()), not over blocks")
    if out.device.type != "cpu":
        offsets = unit_offsets(dropped).to(out.device, torch.int64)
        if values is None:
            _storage(out).index_fill_(0, offsets, 0.0)
        else:
            _storage(out).index_copy_(0, offsets, values)
        return
    integer = _SAME_SIZE_INT[out.element_size()]
    storage = _storage(out).view(integer).numpy()
    bits = np.zeros(1, storage.dtype) if values is None else values.view(integer).numpy()
    firsts, within = (dropped.starts, dropped.within) if isinstance(dropped, Blocks) else (dropped.numpy(), _ONE_UNIT)
    threads = torch.get_num_threads()
    if threads > 1 and firsts.shape[0] * within.shape[0] >= PARALLEL_MIN_STORES:
        launch_parallel(_scatter_in_chunks, storage, firsts, within, bits, threads)
    else:
        _scatter(storage, firsts, within, bits, 0, firsts.shape[0])


_ONE_UNIT = np.zeros(1, np.int64)  # listed units, to _scatter: blocks of one unit

# Below this many units one thread writes them: waking numba's threads costs more than it saves.
PARALLEL_MIN_STORES = 1 << 14
# One parallel launch at a time: numba's fallback thread pool (workqueue, where neither OpenMP nor TBB loads)
# aborts the process when two threads launch into it at once, as two dashboard sessions could.
_ONE_PARALLEL_LAUNCH = threading.Lock()
_numba_threads = threading.local()  # the count this thread last gave numba: setting it costs more than a kernel


def launch_parallel(kernel, *args):
    """``kernel(*args)`` for a compiled kernel with ``prange`` loops, on as many threads as torch uses, one
    launch at a time. Where torch has one thread, its serial twin (:func:`_serial_twin`) runs instead, on the
    calling thread: numba's OpenMP layer ends a forked child that launches into it after the parent has, and
    DataLoader workers are such children, with one thread."""
    threads = torch.get_num_threads()
    if threads == 1:
        return _serial_twin(kernel)(*args)
    with _ONE_PARALLEL_LAUNCH:
        if getattr(_numba_threads, "count", None) != threads:  # numba's count is per calling thread
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            _numba_threads.count = threads
        # The first call starts numba's OpenMP layer, whose start sets the process's OpenMP thread count (the
        # runtime torch shares) to numba's default: every core. Torch keeps the count it had.
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return kernel(*args)


@lru_cache(maxsize=None)
def _serial_twin(kernel):
    """``kernel``'s function compiled without threads (``prange`` runs as ``range``) and otherwise with its
    options (``fastmath`` included), on first use. Not in numba's disk cache: it tells two compilations of one
    function apart by their signature only."""
    options = {name: value for name, value in kernel.targetoptions.items() if name not in ("nopython", "parallel")}
    return njit(**options)(kernel.py_func)


@njit(cache=True, nogil=True)
def _scatter(storage, firsts, within, values, start, stop):
    """``storage[firsts[i] + within[j]] = values[i]`` for ``start <= i < stop`` and every ``j``, ``values`` of
    one element broadcast. Blocks (``within`` longer than one unit) take one value; listed units (``within``
    is ``[0]``) loop without the inner loop, which would cost them a quarter more."""
    if within.shape[0] > 1:
        for i in range(start, stop):
            for j in range(within.shape[0]):
                storage[firsts[i] + within[j]] = values[0]
    elif values.shape[0] == 1:
        for i in range(start, stop):
            storage[firsts[i]] = values[0]
    else:
        for i in range(start, stop):
            storage[firsts[i]] = values[i]


@njit(cache=True, nogil=True, parallel=True)
def _scatter_in_chunks(storage, firsts, within, values, chunks):
    """:func:`_scatter` of all of ``firsts`` in ``chunks`` parallel pieces (overlapping blocks write the same
    value, so the order does not matter). Inside a training step a serial write leaves torch's other threads
    idle: at batch 128 on 2 threads this took about 1% off a ResNet-20 DropBlock step (two same-run swaps: 0.9%
    and 1.4%)."""
    size = -(-firsts.shape[0] // chunks)
    for chunk in prange(chunks):
        _scatter(storage, firsts, within, values, chunk * size, min((chunk + 1) * size, firsts.shape[0]))


class _DropUnits(torch.autograd.Function):
    """``x * scale`` with the units ``dropped`` (storage offsets, or :class:`Blocks`) set to 0, or to
    ``values`` (Disout). The gradient is the same op on the incoming gradient (zeros there: ``values`` are
    constants), so only the units are kept: no mask is ever materialised, each direction is one pass plus a
    sparse write."""

    @staticmethod
    def forward(ctx, x, dropped, scale, values, memory_format):
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format)
        torch.mul(x, scale, out=out)
        store_at(out, dropped, values)
        ctx.dropped, ctx.scale, ctx.memory_format = dropped, scale, memory_format  # an index: no autograd state
        return out

    @staticmethod
    def backward(ctx, grad):
        return _DropUnits.apply(grad, ctx.dropped, ctx.scale, None, ctx.memory_format), None, None, None, None


def drop_units(x: torch.Tensor, dropped: torch.Tensor | Blocks, scale: float,
               values: torch.Tensor | None = None) -> torch.Tensor:
    """``x * scale`` with the units ``dropped`` (storage offsets in ``x``'s memory format, each once, or
    :class:`Blocks`) set to 0 or to ``values``; differentiable (see :class:`_DropUnits`)."""
    return _DropUnits.apply(x, dropped, scale, values, memory_format(x))


def apply_draw(x: torch.Tensor, draw: BlockDraw) -> torch.Tensor:
    """``x * keep / kept_fraction`` for any draw: sparse with a per-channel mask without materialising
    it, otherwise by multiplying with the (broadcast) scaled mask, whose gradient is one multiply too."""
    if draw.dropped is not None and tuple(draw.shape) == tuple(x.shape):
        return drop_units(x, draw.dropped, sparse_scale(draw))
    scaled, _ = scaled_mask(draw, x)
    return x * scaled


def scaled_mask(draw: BlockDraw, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``keep / kept_fraction`` in ``x``'s dtype, built in one pass, and that scale (0-dim float32 tensor).

    Renormalising by the kept fraction of the whole tensor is the paper's rule; when nothing is kept the
    result is 0 (the scale is guarded against division by zero).
    """
    if draw.keep is not None:
        return scale_keep(draw.keep, x.dtype)
    scale = sparse_scale(draw)
    mask = _filled(draw.shape, x, scale)  # a Python number: fill_ with a tensor would be a broadcast copy
    store_at(mask, draw.dropped, None)
    return mask, torch.tensor(scale, device=x.device)


def scale_keep(keep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`scaled_mask` from a bool keep-map, counting on the device (no host synchronisation)."""
    scale = keep.numel() / torch.count_nonzero(keep).clamp_min(1)
    return torch.where(keep, scale.to(dtype), torch.zeros((), dtype=dtype, device=keep.device)), scale
