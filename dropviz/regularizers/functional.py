"""Functional forms of the mask ops. Each takes an optional ``torch.Generator`` (on the input's device) for
reproducible draws and returns a keep-mask (1 = kept) in the input's dtype; the modules add the scaling."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from numba import njit, prange

from . import _blocks
from ._blocks import map_runs, zero_and_count_blocks
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
                    with_seeds: bool = False, list_units: bool = False, in_place: bool = False) -> _blocks.BlockDraw:
    """:func:`drop_block_mask` with the sampler's extras (dropped units, seed map); used by the modules. A sparse
    draw's units are :class:`~dropviz.regularizers._blocks.Blocks`, or with ``list_units`` their storage offsets
    each once (for a value per unit); ``in_place`` also writes their zeros into ``x`` (a sparse draw of one mask
    per channel into a dense ``x`` only: for the fused ops, outside autograd)."""
    check_rank(x, (4, 5), "(N, C, H, W) or (N, C, D, H, W)")
    block, gamma = block_seed_rate(x, drop_prob, block_size, exact_rate)
    return _blocks.draw_block_mask(x, gamma, block, share_channels, generator, sampler, with_seeds, list_units,
                                   in_place)


def block_seed_rate(x: torch.Tensor, drop_prob: float, block_size: int,
                    exact_rate: bool = True) -> tuple[tuple[int, ...], float]:
    """DropBlock's block edge per spatial dimension of ``x`` (clipped to the map) and its seed rate gamma."""
    return _spatial_seed_rate(tuple(x.shape[2:]), drop_prob, block_size, exact_rate)


def _spatial_seed_rate(spatial: tuple[int, ...], drop_prob: float, block_size: int,
                       exact_rate: bool) -> tuple[tuple[int, ...], float | torch.Tensor]:
    """The block and gamma: a float, or under ``torch.compile`` a 0-dim tensor (the dense sampler takes both)."""
    block = _blocks.clip_block(spatial, check_block_size(block_size))
    drop_prob = check_drop_prob(drop_prob)
    if torch.compiler.is_compiling():
        rate = torch.ones((), dtype=torch.float64) * drop_prob  # scalar_tensor(drop_prob) would bake it in
        return block, _blocks.traced_seed_rate(rate, list(spatial), list(block), exact_rate)
    return block, _blocks.seed_rate(drop_prob, spatial, block, exact_rate)


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


def _salient_seeds(x: torch.Tensor, block: tuple[int, int], gamma: float, generator: torch.Generator | None,
                   relu: bool = False) -> np.ndarray:
    """Sorted flat indices (into the valid grid ``(N, C, H-k+1, W-k+1)``) of seeds with ProbDropBlock's rates
    (:func:`salience_seed_rate`), drawn sample by sample (:func:`_salient_sample`) in parallel on torch's
    threads, reading ``|x|`` (with ``relu``, ``|relu(x)|``) from ``x``'s storage: no copy of the salience is
    made. The random numbers come from one stream per sample keyed by ``generator`` (:func:`_stream_key`), so a
    draw does not depend on the thread count."""
    values = x.detach()
    if values.dtype not in (torch.float32, torch.float64):
        values = values.float()
    values = values.contiguous(memory_format=_blocks.memory_format(values))  # a strided view becomes dense
    return _blocks.launch_parallel(_salient_samples, x.shape[0],
                                   *_salient_args(values, block, gamma, relu, generator))


def _salient_blocks_(x: torch.Tensor, block: tuple[int, int], gamma: float, generator: torch.Generator | None,
                     relu: bool = False) -> _blocks.Blocks:
    """:func:`_salient_seeds`' seeds as :class:`~dropviz.regularizers._blocks.Blocks`, their zeros written into
    ``x`` (float32 or float64, :func:`~dropviz.regularizers._blocks.fusable`: the salience is read from the
    storage written) in the same compiled call (:func:`_salient_drops`), while each sample's activations are
    still in cache."""
    plan = _blocks._offsets_plan(tuple(x.shape), _blocks.memory_format(x), tuple(block))
    sample_args = _salient_args(x.detach(), block, gamma, relu, generator)
    seeds, starts, count = _blocks.launch_parallel(_salient_drops, x.shape[0], *sample_args, *plan.geometry,
                                                   torch.get_num_threads())
    return _blocks.Blocks(starts, int(count), seeds, plan)


def _salient_args(values: torch.Tensor, block: tuple[int, int], gamma: float, relu: bool,
                  generator: torch.Generator | None) -> tuple:
    """:func:`_salient_sample`'s arguments after the sample, for a dense float32 or float64 ``values``."""
    (kh, kw), strides = block, values.stride()
    first = (kh // 2) * strides[2] + (kw // 2) * strides[3]  # storage offset of a map's first valid centre
    height, width = values.shape[2] - kh + 1, values.shape[3] - kw + 1  # the valid grid
    per_sample = values.shape[1] * height * width
    # Room for a seed at every position of every sample (only the pages written are ever touched).
    local = np.empty(values.shape[0] * per_sample, _blocks.offset_dtype(per_sample))
    return (_blocks._storage(values).numpy(), first, *strides, values.shape[1], height, width, gamma, relu,
            _stream_key(generator), local)


@njit(cache=True, nogil=True, parallel=True)
def _salient_samples(samples, *sample_args):
    """:func:`_salient_sample` of every sample, on numba's threads, then their seeds as indices into the whole
    valid grid (one call: a call from Python costs more inside a training step than gathering them)."""
    counts = np.empty(samples, np.int64)
    for sample in prange(samples):
        counts[sample] = _salient_sample(sample, *sample_args)
    local = sample_args[-1]  # each sample's seeds, in its own part
    return _flat_indices(local, counts)


@njit(cache=True, nogil=True, parallel=True)
def _salient_drops(samples, storage, first, sample_stride, channel_stride, row_stride, column_stride, channels,
                   height, width, gamma, relu, key, local, seed_storage, seed_unit, block_storage, block_unit,
                   pieces):
    """:func:`_salient_samples`, then each sample's blocks (:func:`~dropviz.regularizers._blocks.
    zero_and_count_blocks`): their first units' storage offsets, their distinct units counted, zeros written over
    them, in ``pieces`` runs of whole maps (one per thread), as :func:`~dropviz.regularizers._blocks.write_blocks_`
    does. Returns the flat seeds, the starts in the same order and the count. ``storage`` is the activation's
    own (float32 or float64), a mask's strides being the activation's; every value is read before a block is
    written."""
    counts = np.empty(samples, np.int64)
    for sample in prange(samples):
        counts[sample] = _salient_sample(sample, storage, first, sample_stride, channel_stride, row_stride,
                                         column_stride, channels, height, width, gamma, relu, key, local)
    seeds = _flat_indices(local, counts)
    # The loop of write_blocks_'s kernel, here again: a prange runs in parallel only in the kernel compiled so
    # (inlined from a helper it runs serially), and a call to that kernel would not run on the calling thread
    # in this one's one-thread twin (launch_parallel).
    bounds = map_runs(seeds, seed_storage.shape[0], pieces)
    starts, units = np.empty(seeds.shape[0], np.int64), np.empty(pieces, np.int64)
    for piece in prange(pieces):
        units[piece] = zero_and_count_blocks(storage, seeds, starts, bounds[piece], bounds[piece + 1], channels,
                                             sample_stride, channel_stride, seed_storage, seed_unit, block_storage,
                                             block_unit)
    return seeds, starts, units.sum()


@njit(cache=True, nogil=True)
def _salient_sample(sample, storage, first, sample_stride, channel_stride, row_stride, column_stride, channels,
                    height, width, gamma, relu, key, local):
    """One sample's seeds, as indices ``channel * positions + position`` into its own part of ``local``; returns
    their count. Each map's salience sum (:func:`_map_sums`), then, while the sample's activations are still in
    cache, one Bernoulli trial per valid position: a seed where ``u < rate = min(offset + s * factor, 1)``, ``s``
    the salience (:func:`_salience`: ``|x|``, or ``max(x, 0)`` with ``relu``), ``offset`` and ``factor`` being 0
    and ``gamma / mean`` (``gamma`` and 0 for an all-zero map), so the mean rate over a map is ``gamma``.
    Position ``i`` of the sample (in the order of the indices) takes uniform ``i`` of the sample's stream
    (:func:`_uniform_at`) whatever the layout, so both layouts give the same seeds.

    Every position is tried: a trial is a few vector instructions, and the salience pass reads every position
    anyway. (A thinning walk that tried only candidates drawn at each map's peak rate cost as much on 16x16 maps
    and twice as much on 8x8 maps, whose per-map set-up it could not spread.)"""
    per_map = height * width
    per_sample = channels * per_map
    base = first + sample * sample_stride
    sums = _map_sums(storage, base, channel_stride, row_stride, column_stride, channels, height, width, relu)
    offsets, factors = np.zeros(channels), np.zeros(channels)
    for m in range(channels):
        if sums[m] > 0.0:
            factors[m] = gamma * per_map / sums[m]
        else:
            offsets[m] = gamma
    state = _stream_start(key, sample)
    words = np.zeros(-(-per_sample // 8), np.uint64)
    seeded = words.view(np.bool_)  # the trials' outcomes in storage order; the tail stays false
    if channel_stride == 1:  # channels-last: a position's channels are adjacent, their indices per_map apart
        for position in range(per_map):
            start = base + (position // width) * row_stride + (position % width) * column_stride
            units, outcomes = storage[start:start + channels], seeded[position * channels:(position + 1) * channels]
            for m in range(channels):
                outcomes[m] = _seeded(state, np.uint64(m * per_map + position), _salience(units[m], relu),
                                      offsets[m], factors[m])
    else:
        for m in range(channels):
            offset, factor = offsets[m], factors[m]
            for row in range(height):
                start, index = base + m * channel_stride + row * row_stride, m * per_map + row * width
                units, outcomes = storage[start:start + width], seeded[index:index + width]
                for column in range(width):
                    outcomes[column] = _seeded(state, np.uint64(index + column), _salience(units[column], relu),
                                               offset, factor)
    seeds = local[sample * per_sample:(sample + 1) * per_sample]
    n_seeds = _seeded_indices(seeded, words, seeds)
    if channel_stride == 1:
        _to_channel_major(seeds[:n_seeds], channels, per_map)
    return n_seeds


@njit(inline="always")
def _seeded(state, index, salience, offset, factor):
    """Whether the trial with uniform ``index`` of the stream at ``state`` (:func:`_uniform_at`) seeds, at rate
    ``min(offset + salience * factor, 1)`` (the clip is implicit: a uniform is below 1)."""
    return _uniform_at(state, index) < offset + salience * factor


@njit(inline="always")
def _salience(value, relu):
    """ProbDropBlock's salience of a unit, ``|value|`` in float64; with ``relu``, that of ``relu(value)``,
    ``max(value, 0)``: a ReLU's output read before the ReLU is applied."""
    value = np.float64(value)
    return max(value, 0.0) if relu else abs(value)


@njit(inline="always")
def _seeded_indices(seeded, words, seeds):
    """The indices of the true entries of ``seeded`` into ``seeds``, in order; their count. ``words`` views
    ``seeded`` 8 entries at a time: most are all false."""
    n_seeds = 0
    for word in range(words.shape[0]):
        if words[word] != 0:
            for i in range(8 * word, 8 * word + 8):
                if seeded[i]:
                    seeds[n_seeds] = i
                    n_seeds += 1
    return n_seeds


@njit(inline="always")
def _to_channel_major(seeds, channels, per_map):
    """Channels-last storage-order indices ``position * channels + channel`` (ascending) to the sorted indices
    ``channel * per_map + position``, in place: a counting sort by channel, stable, and the positions of a
    channel already ascend. Linear in the seeds, however many."""
    starts = np.zeros(channels + 1, np.int64)
    for seed in seeds:
        starts[seed % channels + 1] += 1
    for channel in range(channels):
        starts[channel + 1] += starts[channel]
    ordered = np.empty_like(seeds)
    for seed in seeds:
        position, channel = seed // channels, seed % channels
        ordered[starts[channel]] = channel * per_map + position
        starts[channel] += 1
    seeds[:] = ordered


@njit(cache=True, nogil=True)
def _map_sums(storage, base, channel_stride, row_stride, column_stride, channels, height, width, relu):
    """Sum of the salience (:func:`_salience`) over the ``height x width`` valid centres of each channel map of the
    sample whose first centre is at ``base``, in float64. Storage is read in runs of adjacent units (a position's
    channels when channels-last, else a row of a map), summed per column first and then over the columns, in the
    same order for both layouts: the same sums, so the same seeds, either way."""
    column_sums = np.zeros((width, channels))
    if channel_stride == 1:
        for row in range(height):
            for column in range(width):
                start = base + row * row_stride + column * column_stride
                units, sums = storage[start:start + channels], column_sums[column]
                for channel in range(channels):
                    sums[channel] += _salience(units[channel], relu)
    else:  # contiguous: the columns of a row are adjacent
        sums = np.zeros(width)
        for channel in range(channels):
            sums[:] = 0.0
            for row in range(height):
                start = base + channel * channel_stride + row * row_stride
                units = storage[start:start + width]
                for column in range(width):
                    sums[column] += _salience(units[column], relu)
            column_sums[:, channel] = sums
    sums = np.zeros(channels)
    for column in range(width):
        for channel in range(channels):
            sums[channel] += column_sums[column, channel]
    return sums


@njit(cache=True, nogil=True)
def _flat_indices(local, counts):
    """``local`` split into ``len(counts)`` equal pieces holding indices within their piece: the first
    ``counts[i]`` of piece ``i``, as indices into all of them (``i * piece + index``), in order."""
    piece = local.shape[0] // max(counts.shape[0], 1)
    flat = np.empty(counts.sum(), np.int64)
    n = 0
    for i in range(counts.shape[0]):
        for j in range(counts[i]):
            flat[n + j] = i * piece + local[i * piece + j]
        n += counts[i]
    return flat


# Random numbers inside compiled loops: SplitMix64 (Steele, Lea & Flood, OOPSLA 2014; it passes BigCrush), one
# stream per piece of work (a sample), so a parallel loop draws the same numbers on any number of threads. Its
# state steps by a constant; stream ``i`` starts ``i * 2^32`` steps after stream 0, so streams never share a
# number while each draws fewer than 2^32. Kept in the file of the kernels that inline it: numba's on-disk cache
# notices changes to a cached function's own file only.
_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_STREAM_STRIDE = np.uint64((0x9E3779B97F4A7C15 << 32) % 2**64)
_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11))
_ULP = 2.0 ** -53


def _stream_key(generator: torch.Generator | None) -> np.uint64:
    """63 random bits from ``generator`` (torch's default generator if None): the key of a draw's streams."""
    return np.uint64(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


@njit(inline="always")
def _stream_start(key, index):
    """The state stream ``index`` of the draw keyed ``key`` starts from."""
    return key + np.uint64(index) * _STREAM_STRIDE


@njit(inline="always")
def _mix(z):
    """SplitMix64's output function: 64 well-mixed bits of a state."""
    z = (z ^ (z >> _SHIFTS[0])) * _MIX_1
    z = (z ^ (z >> _SHIFTS[1])) * _MIX_2
    return z ^ (z >> _SHIFTS[2])


@njit(inline="always")
def _next_bits(state):
    state += _GOLDEN_GAMMA
    return state, _mix(state)


@njit(inline="always")
def _next_uniform(state):
    """The next state and a uniform on [0, 1) (53 random bits)."""
    state, bits = _next_bits(state)
    return state, _unit_interval(bits)


@njit(inline="always")
def _uniform_at(state, index):
    """Uniform number ``index`` (from 0) of the stream at ``state``, what :func:`_next_uniform` gives after
    ``index`` others: SplitMix64's state only steps, so any number of it is found directly (and a loop of them
    vectorises)."""
    return _unit_interval(_mix(state + (index + np.uint64(1)) * _GOLDEN_GAMMA))


@njit(inline="always")
def _unit_interval(bits):
    """A uniform on [0, 1) from the top 53 of 64 random bits (through int64, which converts in vector code)."""
    return np.float64(np.int64(bits >> _SHIFTS[3])) * _ULP


def _ziggurat(density, inverse, tail, layers: int = 256) -> tuple[np.ndarray, ...]:
    """A ziggurat (Marsaglia & Tsang, J. Stat. Softw. 2000) under a decreasing ``density`` with ``density(0) = 1``
    (``inverse`` its inverse, ``tail(r)`` its area beyond ``r``). Per layer: the width a point is drawn across,
    the edge inside which it is under the curve without a test, and the heights of the layer's bottom and top.
    Edges ``r = x_0 > x_1 > ... > x_{n-1} = 0``: layer 0 is the base ``[0, r] x [0, f(r)]`` plus the tail
    beyond ``r``, of area ``v = r f(r) + tail(r)``; layer ``i`` is ``[0, x_{i-1}] x [f(x_{i-1}), f(x_i)]``, of
    area ``v`` too; ``r`` is set (by bisection) so that the top layer ends at height 1."""
    def edges(r: float) -> tuple[float, list[float]]:
        area, x = r * density(r) + tail(r), [r]
        for _ in range(layers - 2):
            height = density(x[-1]) + area / x[-1]
            if height >= 1.0:
                return -1.0, x  # r too small: the layers reach the top too soon
            x.append(inverse(height))
        return x[-1] * (1.0 - density(x[-1])) - area, x  # the top layer's area minus v
    low, high = 1.0, 20.0
    while (low + high) / 2 not in (low, high):  # until the two are adjacent floats
        r = (low + high) / 2
        if edges(r)[0] > 0.0:
            high = r
        else:
            low = r
    x = np.array(edges(low)[1] + [0.0])
    heights = np.array([density(edge) for edge in x])
    # the base layer is drawn across v / f(r): beyond r, a point falls in the tail
    return np.append(low + tail(low) / density(low), x[:-1]), x, np.append(0.0, heights[:-1]), heights


_NORMAL_WIDTH, _NORMAL_INNER, _NORMAL_LOW, _NORMAL_HIGH = _ziggurat(
    lambda x: math.exp(-0.5 * x * x), lambda y: math.sqrt(-2.0 * math.log(y)),
    lambda r: math.sqrt(math.pi / 2) * math.erfc(r / math.sqrt(2)))
_NORMAL_LAYER = np.uint64(len(_NORMAL_WIDTH) - 1)
_SIGN_BIT = np.uint64(8)  # the bit above the layer's


@njit(inline="always")
def _next_normal(state):
    """The next state and a standard normal variate, by a ziggurat under ``exp(-x^2 / 2)`` (Marsaglia & Tsang,
    J. Stat. Softw. 2000): one of 256 layers of equal area picked by 8 bits, the sign from the 9th, a point
    along the layer from 53 more; it lies under the curve without a test 99% of the time. Beyond the base
    layer's edge r, Marsaglia's tail method (r + t, t = Exp(1) / r, kept with probability exp(-t^2 / 2))."""
    while True:
        state, bits = _next_bits(state)
        layer = bits & _NORMAL_LAYER
        sign = 1.0 - 2.0 * np.float64((bits >> _SIGN_BIT) & np.uint64(1))
        x = _unit_interval(bits) * _NORMAL_WIDTH[layer]
        if x < _NORMAL_INNER[layer]:
            return state, sign * x
        if layer == 0:
            while True:
                state, bits = _next_bits(state)
                beyond = -math.log((np.float64(bits >> _SHIFTS[3]) + 1.0) * _ULP) / _NORMAL_INNER[0]
                state, bits = _next_bits(state)
                if -2.0 * math.log((np.float64(bits >> _SHIFTS[3]) + 1.0) * _ULP) > beyond * beyond:
                    return state, sign * (_NORMAL_INNER[0] + beyond)
        state, height = _next_uniform(state)  # in the layer's wedge: under the curve?
        if _NORMAL_LOW[layer] + height * (_NORMAL_HIGH[layer] - _NORMAL_LOW[layer]) < math.exp(-0.5 * x * x):
            return state, sign * x


# Normals are drawn in pieces of this many, one stream each: the same numbers on any number of threads.
_NORMALS_PER_STREAM = 4096


def standard_normals(count: int, generator: torch.Generator | None = None) -> np.ndarray:
    """``count`` independent standard normal float32 values, from streams keyed by ``generator``
    (:func:`_stream_key`), in parallel on torch's threads: on the CPU as fast as ``torch.randn`` on one thread,
    and faster on several, where ``torch.randn`` still uses one."""
    out = np.empty(count, np.float32)
    _blocks.launch_parallel(_normals_in_pieces, out, _stream_key(generator))
    return out


@njit(cache=True, nogil=True, parallel=True)
def _normals_in_pieces(out, key):
    pieces = -(-out.shape[0] // _NORMALS_PER_STREAM)
    for piece in prange(pieces):
        state = _stream_start(key, piece)
        for i in range(piece * _NORMALS_PER_STREAM, min((piece + 1) * _NORMALS_PER_STREAM, out.shape[0])):
            state, value = _next_normal(state)
            out[i] = value


def prob_drop_block_mask(x: torch.Tensor, drop_prob: float, block_size: int,
                         generator: torch.Generator | None = None, exact_rate: bool = True) -> torch.Tensor:
    """ProbDropBlock keep-mask (Zhao et al. 2022): seeds with salience-proportional probability
    (:func:`salience_seed_rate`), then DropBlock's block expansion; shape of ``x``."""
    return _blocks.keep_mask(prob_drop_block_draw(x, drop_prob, block_size, generator, exact_rate), x)


def prob_drop_block_draw(x: torch.Tensor, drop_prob: float, block_size: int,
                         generator: torch.Generator | None = None, exact_rate: bool = True,
                         with_seeds: bool = False, in_place: bool = False, relu: bool = False) -> _blocks.BlockDraw:
    """:func:`prob_drop_block_mask` with the seed map; used by the module.

    On the CPU, where the blocks cover little, the seeds are drawn sample by sample in one compiled pass
    (:func:`_salient_seeds`) that reads the salience from ``x`` itself and keeps only the seeds' indices: no
    tensor of rates or uniforms is made. Elsewhere the rates of the whole grid go to DropBlock's dense sampler.
    ``in_place`` writes the blocks' zeros into ``x`` (a sparse draw into a dense ``x`` only, outside autograd:
    for the fused ops); for float32 and float64 in the pass that draws the seeds. ``relu``: the draw for
    ``relu(x)`` (the salience read as ``max(x, 0)``), as the fused op before a ReLU needs."""
    check_rank(x, (4,), "(N, C, H, W)")
    block, gamma = block_seed_rate(x, drop_prob, block_size, exact_rate)
    if _blocks.sparse_blocks_ok(x, gamma, block):
        if in_place and not with_seeds and x.dtype in (torch.float32, torch.float64) and _blocks.fusable(x):
            return _blocks.BlockDraw(tuple(x.shape), None, _salient_blocks_(x, block, gamma, generator, relu), None)
        seeds = _salient_seeds(x, block, gamma, generator, relu)
        dropped, seed_map = _blocks.expand_seed_index(seeds, tuple(x.shape), block, x, with_seeds, in_place=in_place)
        return _blocks.BlockDraw(tuple(x.shape), None, dropped, seed_map)
    rates = salience_seed_rate(x.relu() if relu else x, drop_prob, block_size, exact_rate)
    return _blocks.draw_block_mask(x, rates, block, False, generator, "dense", with_seeds, in_place=in_place)


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
