"""DropBlock: realised drop fraction over a table of shapes, geometry, both samplers, torchvision agreement.

Statistical tolerances. The realised drop fraction is averaged over S independent (sample, channel) maps.
Units inside one map are correlated (a block drops k^2 of them together), so instead of a binomial formula we
use the per-map drop fractions f_1..f_S, which are i.i.d.: their mean has standard error SE = std(f) / sqrt(S)
(S >= 200 here, so the estimated SE is within ~10% of the true one). We accept |mean - p| <= 5 SE, a false
failure rate below 1e-6 per case for a normal mean. The table guards against gross errors (timm drops 93%
at k >= H, torchvision errors on even clipped k); ``test_paper_seed_rate_under_drops`` shows that with more
maps the same statistic separates the paper's first-order seed rate (a 5-15% under-drop) from ours.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dropviz.regularizers import DropBlock2d, DropBlock3d
from dropviz.regularizers import _blocks
from dropviz.regularizers import functional as F_

P = 0.1
UNITS_PER_CASE = 600_000  # about 0.6M units per case: ~5 ms per draw, SE ~ 1e-3
SQUARE = [(h, h) for h in (1, 2, 4, 5, 6, 7, 8, 14, 32, 56)]
NON_SQUARE = [(5, 7), (7, 5), (14, 8), (1, 32), (32, 3), (6, 56)]
BLOCKS = (1, 3, 4, 6, 7, 8)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def drop_fractions(mask: torch.Tensor) -> torch.Tensor:
    """Per-map drop fraction of a keep-mask (N, C, *spatial), flattened over (N, C)."""
    return 1.0 - mask.double().flatten(2).mean(dim=2).flatten()


def within_standard_errors(fractions: torch.Tensor, target: float, n_se: float = 5.0) -> tuple[bool, str]:
    se = fractions.std().item() / math.sqrt(fractions.numel())
    mean = fractions.mean().item()
    return abs(mean - target) <= n_se * se + 1e-12, f"mean {mean:.5f} vs {target} (SE {se:.5f})"


def maps_for(h: int, w: int) -> int:
    return max(200, UNITS_PER_CASE // (h * w))


@pytest.mark.parametrize("sampler", ["sparse", "dense"])
@pytest.mark.parametrize("hw", SQUARE + NON_SQUARE, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_realised_drop_fraction_tracks_drop_prob(hw, sampler):
    h, w = hw
    x = torch.zeros(maps_for(h, w), 1, h, w)
    generator = torch.Generator().manual_seed(h * 1000 + w)
    for k in BLOCKS:
        mask = F_.drop_block_mask(x, P, k, generator=generator, sampler=sampler)
        ok, msg = within_standard_errors(drop_fractions(mask), P)
        assert ok, f"{h}x{w} k={k} {sampler}: {msg}"


@pytest.mark.parametrize("p", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("hwk", [(14, 14, 7), (8, 8, 3), (32, 24, 5), (5, 5, 8)], ids=str)
def test_realised_drop_fraction_at_large_drop_prob(hwk, p):
    h, w, k = hwk
    x = torch.zeros(maps_for(h, w), 1, h, w)
    mask = F_.drop_block_mask(x, p, k, generator=torch.Generator().manual_seed(7))
    ok, msg = within_standard_errors(drop_fractions(mask), p)
    assert ok, msg


@pytest.mark.parametrize("k", [1, 2])
def test_sparse_sampler_above_the_candidate_rate_realises_drop_prob(k):
    """Seed rates above SPARSE_MAX_CANDIDATE_RATE are drawn by one uniform per position (gamma = 0.6 for k = 1,
    about 0.27 for k = 2 at p = 0.6), then expanded sparsely."""
    x = torch.zeros(maps_for(8, 8), 1, 8, 8)
    assert _blocks.seed_rate(0.6, (8, 8), (k, k)) > _blocks.SPARSE_MAX_CANDIDATE_RATE
    mask = F_.drop_block_mask(x, 0.6, k, generator=torch.Generator().manual_seed(k), sampler="sparse")
    ok, msg = within_standard_errors(drop_fractions(mask), 0.6)
    assert ok, msg


def test_paper_seed_rate_under_drops():
    """The paper's first-order gamma counts overlaps twice: on 14x14 with k=7 it drops clearly less than p,
    so the tolerance above is tight enough to tell the two rates apart."""
    x = torch.zeros(40_000, 1, 14, 14)  # SE ~ 7e-4 against a bias of ~7e-3
    fractions = drop_fractions(F_.drop_block_mask(x, P, 7, generator=torch.Generator().manual_seed(0),
                                                  exact_rate=False))
    se = fractions.std().item() / math.sqrt(fractions.numel())
    assert P - fractions.mean().item() > 5 * se


@pytest.mark.parametrize("dhw", [(4, 4, 4), (3, 8, 5), (16, 16, 16), (1, 6, 6)], ids=str)
def test_realised_drop_fraction_3d(dhw):
    x = torch.zeros(max(100, UNITS_PER_CASE // math.prod(dhw)), 1, *dhw)
    generator = torch.Generator().manual_seed(3)
    for k in (1, 3, 4):
        for sampler in ("sparse", "dense"):
            mask = F_.drop_block_mask(x, P, k, generator=generator, sampler=sampler)
            ok, msg = within_standard_errors(drop_fractions(mask), P)
            assert ok, f"{dhw} k={k} {sampler}: {msg}"


def test_share_channels_gives_one_mask_per_sample():
    x = torch.zeros(2000, 6, 8, 8)
    module = DropBlock2d(P, 3, share_channels=True).train()
    mask = module.explain(x, torch.Generator().manual_seed(0))["mask"]
    assert torch.equal(mask, mask[:, :1].expand_as(mask))
    ok, msg = within_standard_errors(drop_fractions(mask[:, :1]), P)
    assert ok, msg


def block_rows(centre: int, k: int) -> range:
    """The documented geometry: a seed at centre s drops [s - k//2, s - k//2 + k - 1]."""
    return range(centre - k // 2, centre - k // 2 + k)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("expander", ["index", "map"])
def test_single_seed_gives_the_documented_block(k, expander):
    h, w = 9, 11
    x = torch.zeros(1, 1, h, w)
    valid = (h - k + 1, w - k + 1)
    for start in [(0, 0), (valid[0] - 1, valid[1] - 1), (2, 1)]:
        centre = (start[0] + k // 2, start[1] + k // 2)
        if expander == "index":
            index = [start[0] * valid[1] + start[1]]
            dropped, seeds = _blocks.expand_seed_index(index, (1, 1, h, w), (k, k), x, with_seeds=True)
            mask = _blocks.keep_mask(_blocks.BlockDraw((1, 1, h, w), None, dropped, None), x)
        else:
            seed_map = torch.zeros(1, 1, *valid)
            seed_map[0, 0, start[0], start[1]] = 1
            mask, seeds = _blocks.expand_seed_map(seed_map, (k, k), x, with_seeds=True)
        expected = torch.ones(h, w)
        rows, cols = block_rows(centre[0], k), block_rows(centre[1], k)
        assert rows.start >= 0 and rows.stop <= h and cols.start >= 0 and cols.stop <= w
        expected[rows.start:rows.stop, cols.start:cols.stop] = 0
        assert torch.equal(mask[0, 0].float(), expected), (k, start)
        assert seeds[0, 0].nonzero().tolist() == [list(centre)]


def reference_mask(seeds: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Naive DropBlock expansion of a centre map, asserting every block lies inside the map."""
    mask = torch.ones_like(seeds)
    h, w = seeds.shape[-2:]
    for n, c, i, j in seeds.nonzero().tolist():
        top, left = i - kh // 2, j - kw // 2
        assert 0 <= top and top + kh <= h and 0 <= left and left + kw <= w, "block crosses the border"
        mask[n, c, top:top + kh, left:left + kw] = 0
    return mask


@pytest.mark.parametrize("sampler", ["sparse", "dense"])
@pytest.mark.parametrize("hwk", [(9, 9, 3), (10, 7, 4), (6, 12, 6), (5, 5, 8), (13, 8, 2)], ids=str)
def test_mask_is_the_union_of_blocks_inside_the_map(hwk, sampler):
    h, w, k = hwk
    x = torch.zeros(8, 4, h, w)
    block = _blocks.clip_block((h, w), k)
    draw = _blocks.draw_block_mask(x, 0.05, block, False, torch.Generator().manual_seed(k), sampler, True)
    assert draw.seeds.sum() > 0
    assert torch.equal(_blocks.keep_mask(draw, x), reference_mask(draw.seeds, *block))


def test_3d_single_seed_block():
    x = torch.zeros(1, 1, 6, 7, 8)
    for k in (2, 3):
        seed_map = torch.zeros(1, 1, 6 - k + 1, 7 - k + 1, 8 - k + 1)
        seed_map[0, 0, 1, 2, 3] = 1
        index = seed_map.flatten().nonzero().flatten()
        by_index = _blocks.BlockDraw(x.shape, None, _blocks.expand_seed_index(index, x.shape, (k,) * 3, x, False)[0],
                                     None)
        for mask in (_blocks.expand_seed_map(seed_map, (k, k, k), x, False)[0], _blocks.keep_mask(by_index, x)):
            expected = torch.ones(6, 7, 8)
            expected[1:1 + k, 2:2 + k, 3:3 + k] = 0
            assert torch.equal(mask[0, 0].float(), expected)


def test_samplers_agree_on_the_same_seeds():
    x = torch.zeros(3, 5, 12, 10)
    valid = (12 - 4 + 1, 10 - 4 + 1)
    rate = torch.tensor([0.1, 0.02, 0.02]).view(3, 1, 1, 1)  # maps with several seeds, and with a lone seed
    seed_map = (torch.rand(3, 5, *valid, generator=torch.Generator().manual_seed(1)) < rate).float()
    per_map = seed_map.sum(dim=(2, 3))
    assert (per_map == 1).any() and (per_map > 1).any()
    index = seed_map.flatten().nonzero().flatten()
    by_map, seeds_a = _blocks.expand_seed_map(seed_map, (4, 4), x, True)
    dropped, seeds_b = _blocks.expand_seed_index(index, (3, 5, 12, 10), (4, 4), x, True)
    by_index = _blocks.keep_mask(_blocks.BlockDraw(x.shape, None, dropped, None), x)
    assert torch.equal(by_map.float(), by_index) and torch.equal(seeds_a, seeds_b)
    # every dropped unit is counted and listed exactly once (blocks overlap in the maps with several seeds)
    zeros = (by_index == 0).flatten().nonzero().flatten()
    assert dropped.numel() == zeros.numel() and torch.equal(dropped.units().sort().values, zeros)
    listed, _ = _blocks.expand_seed_index(index, (3, 5, 12, 10), (4, 4), x, False, list_units=True)
    assert torch.equal(listed, dropped.units())


@pytest.mark.parametrize("shape_block", [((3, 4, 9, 9), (3, 3)), ((2, 3, 10, 7), (4, 2)), ((2, 2, 6, 12), (6, 6)),
                                         ((2, 2, 5, 6, 7), (2, 3, 2)), ((1, 2, 6, 6, 6), (3, 3, 3))], ids=str)
def test_window_hits_by_pooling_match_the_scan(shape_block):
    """The GPU expansion (max-pooling) and the CPU one (cumulative sums) drop the same units."""
    shape, block = shape_block
    valid = [s - k + 1 for s, k in zip(shape[2:], block)]
    seeds = (torch.rand(*shape[:2], *valid, generator=torch.Generator().manual_seed(3)) < 0.15).float()
    by_pooling = _blocks.window_hits_by_pooling(seeds, block)
    by_scan = _blocks.window_hits_by_scan(seeds, block)
    assert by_pooling.shape == by_scan.shape == shape
    assert 0 < (by_scan > 0).float().mean() < 1
    assert torch.equal(by_pooling > 0, by_scan > 0)


@pytest.mark.parametrize("sampler", ["sparse", "dense"])
def test_determinism_with_generator(sampler):
    x = torch.zeros(4, 8, 16, 16)

    def draw(seed):
        return F_.drop_block_mask(x, 0.2, 3, generator=torch.Generator().manual_seed(seed), sampler=sampler)

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_sparse_bernoulli_positions_have_the_bernoulli_law():
    """Positions from geometric gaps vs i.i.d. Bernoulli(0.3) on 10 positions: each position's hit count over
    20000 draws is Binomial(20000, 0.3) (SD 65), the total per draw Binomial(10, 0.3); allow 5 SD. Repeated
    positions or an off-by-one in the gaps would shift these by far more."""
    generator = torch.Generator().manual_seed(0)
    hits = torch.zeros(10)
    sizes = []
    for _ in range(20000):
        positions = torch.from_numpy(_blocks.bernoulli_positions(10, 0.3, generator, torch.device("cpu")))
        assert positions.unique().numel() == positions.numel()
        assert positions.numel() == 0 or (0 <= positions.min() and positions.max() < 10)
        hits[positions] += 1
        sizes.append(positions.numel())
    assert (hits - 6000).abs().max() <= 5 * math.sqrt(20000 * 0.3 * 0.7)
    # The count per draw is Binomial(10, 0.3): mean 3, variance 2.1, fourth central moment
    # npq(1 + 3(n-2)pq) = 12.684, so the sample variance has SD sqrt((12.684 - 2.1^2) / 20000) = 0.020.
    sizes = torch.tensor(sizes, dtype=torch.float64)
    assert abs(sizes.mean().item() - 3.0) <= 5 * math.sqrt(2.1 / 20000)
    assert abs(sizes.var().item() - 2.1) <= 5 * math.sqrt((12.684 - 2.1 ** 2) / 20000)


def test_seed_rate_reduces_to_the_paper_formula_without_overlap():
    # k = 1: no overlaps, exact and paper rates coincide; k >= H: one block position, gamma = p.
    assert _blocks.seed_rate(0.1, (8, 8), (1, 1)) == pytest.approx(0.1, rel=1e-9)
    assert _blocks.seed_rate(0.1, (8, 8), (8, 8)) == pytest.approx(0.1, rel=1e-9)
    paper = 0.1 * 14 * 14 / (49 * 8 * 8)
    assert _blocks.seed_rate(0.1, (14, 14), (7, 7), exact=False) == pytest.approx(paper)
    assert _blocks.seed_rate(0.1, (14, 14), (7, 7)) > paper


@pytest.mark.parametrize("p", [0.01, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("spatial, block", [((8, 8), (5, 5)), ((16, 16), (5, 5)), ((56, 56), (7, 7)),
                                            ((14, 10), (3, 7)), ((9, 8, 7), (3, 3, 3))], ids=str)
def test_exact_seed_rate_gives_an_expected_drop_of_p(p, spatial, block):
    """The exact gamma solves 1 - mean_u (1 - gamma)^c(u) = p, with each unit's cover c(u) counted here by
    summing the valid block positions over the map (independently of the library's histogram), to 1e-12."""
    valid = torch.ones((1, 1, *(s - k + 1 for s, k in zip(spatial, block))), dtype=torch.float64)
    transpose = F.conv_transpose2d if len(spatial) == 2 else F.conv_transpose3d
    cover = transpose(valid, torch.ones((1, 1, *block), dtype=torch.float64))  # blocks covering each unit
    assert cover.shape[2:] == spatial
    gamma = _blocks.seed_rate(p, spatial, block)
    assert abs((1.0 - (1.0 - gamma) ** cover).mean().item() - p) <= 1e-12


@pytest.mark.parametrize("hwk", [(8, 8, 3), (14, 14, 5), (32, 20, 7), (9, 9, 9)], ids=str)
def test_same_rate_as_torchvision_with_the_paper_seed_rate(hwk):
    """torchvision.ops.drop_block2d uses the paper's gamma and the same valid-centre geometry for odd k."""
    from torchvision.ops import drop_block2d

    h, w, k = hwk
    torch.manual_seed(0)
    x = torch.ones(maps_for(h, w), 1, h, w)
    ours = drop_fractions(F_.drop_block_mask(x, P, k, generator=torch.Generator().manual_seed(1),
                                             exact_rate=False))
    theirs = drop_fractions((drop_block2d(x, P, k) != 0).double())
    se = math.hypot(ours.std().item() / math.sqrt(ours.numel()), theirs.std().item() / math.sqrt(theirs.numel()))
    assert abs(ours.mean().item() - theirs.mean().item()) <= 5 * se


@pytest.mark.parametrize("device", DEVICES)
def test_module_on_device_with_device_generator(device):
    x = torch.randn(4, 8, 14, 14, device=device)
    for module in (DropBlock2d(0.2, 3), DropBlock3d(0.2, 3)):
        inp = x if isinstance(module, DropBlock2d) else x.unsqueeze(2).expand(-1, -1, 3, -1, -1)
        out = module.train()(inp, torch.Generator(device=device).manual_seed(0))
        assert out.device.type == device and out.shape == inp.shape


@pytest.mark.parametrize("drop_prob", [0.1, 0.6])  # sparse and dense sampler (coverage 0.4 and 3.9)
def test_dropblock3d_module_contract(drop_prob):
    x = torch.randn(2, 3, 5, 6, 7, generator=torch.Generator().manual_seed(0)).requires_grad_()
    module = DropBlock3d(drop_prob, 3).train()
    stages = module.explain(x, torch.Generator().manual_seed(1))
    assert list(stages) == ["input", "seeds", "mask", "output"]
    assert torch.equal(stages["output"], module(x, torch.Generator().manual_seed(1)))
    stages["output"].backward(torch.ones_like(x))
    mask = stages["mask"]
    assert torch.allclose(x.grad, mask * mask.numel() / mask.sum())
    channels_last = x.detach().contiguous(memory_format=torch.channels_last_3d)
    assert module(channels_last).is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(module.eval()(x), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_store_at_writes_zeros_or_values_at_storage_offsets(dtype):
    """The compiled stores copy bits, so every float dtype must come out as index_fill_ / index_copy_ give;
    a single value is not broadcast by mistake."""
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    offsets = torch.tensor([0, 7, 8, 59, 119])
    values = torch.tensor([1.5, -2.0, 3.25, 0.5, -0.125], dtype=dtype)
    for where, written in ((offsets, None), (offsets, values), (offsets[:1], values[:1])):
        out, expected = x.clone(), x.clone()
        _blocks.store_at(out, where, written)
        if written is None:
            _blocks._storage(expected).index_fill_(0, where, 0.0)
        else:
            _blocks._storage(expected).index_copy_(0, where, written)
        assert torch.equal(out, expected) and not torch.equal(out, x)
        assert out.is_contiguous(memory_format=torch.channels_last)


def _stored_on_threads(x, dropped, values, threads):
    """A copy of ``x`` with :func:`_blocks.store_at` applied on ``threads`` of torch's threads."""
    out, before = x.clone(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _blocks.store_at(out, dropped, values)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_zeros_over_blocks_are_zeros_at_the_listed_units(threads, layout):
    """Writing zeros block by block (overlapping blocks write a unit twice) zeroes exactly the units listed
    once each, serially and in parallel chunks (this draw's blocks hold more than PARALLEL_MIN_STORES units),
    and leaves every other unit as it was; values are refused over blocks."""
    generator = torch.Generator().manual_seed(2)
    x = (torch.rand(32, 16, 16, 16, generator=generator) + 1.0).contiguous(memory_format=layout)
    draw = F_.drop_block_draw(x, 0.5, 5, generator=generator, sampler="sparse")
    blocks = draw.dropped
    assert isinstance(blocks, _blocks.Blocks) and blocks.starts.shape[0] * 25 > _blocks.PARALLEL_MIN_STORES
    units = blocks.units()
    assert blocks.numel() == units.numel() < blocks.starts.shape[0] * 25  # the blocks overlap
    out, expected = _stored_on_threads(x, blocks, None, threads), x.clone()
    _blocks._storage(expected).index_fill_(0, units.long(), 0.0)
    assert torch.equal(out, expected) and int((out == 0).sum()) == blocks.numel()
    with pytest.raises(ValueError, match="listed units"):
        _blocks.store_at(out, blocks, torch.ones(units.numel()))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("with_values", [False, True])
def test_store_at_in_parallel_chunks_writes_every_offset(threads, with_values):
    """Above PARALLEL_MIN_STORES units the writes are split among torch's threads: all of them land, the
    chunk edges included (an uneven split too)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 16, 32, 32, generator=generator).contiguous(memory_format=torch.channels_last)
    count = 3 * _blocks.PARALLEL_MIN_STORES + 1
    offsets = torch.randperm(x.numel(), generator=generator)[:count]
    values = torch.randn(count, generator=generator) if with_values else None
    out, expected = _stored_on_threads(x, offsets, values, threads), x.clone()
    if values is None:
        _blocks._storage(expected).index_fill_(0, offsets, 0.0)
    else:
        _blocks._storage(expected).index_copy_(0, offsets, values)
    assert torch.equal(out, expected)


def run_fresh(script: str, numba_threads: int) -> list[str]:
    """``script``'s printed words, run in a fresh Python process with ``numba_threads`` numba threads."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2],
                         env={**os.environ, "NUMBA_NUM_THREADS": str(numba_threads)})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_parallel_kernels_leave_torchs_thread_count_alone():
    """The first parallel kernel starts numba's OpenMP layer, which sets the OpenMP thread count that torch
    shares to numba's own (every core; 3 here, whatever the machine). In a fresh process set to 1 thread, the
    count stays 1 after a ProbDropBlock draw."""
    script = ("import torch\n"
              "from dropviz.regularizers import functional as F_\n"
              "torch.set_num_threads(1)\n"
              "F_.prob_drop_block_draw(torch.rand(8, 4, 12, 12), 0.1, 3)\n"
              "print(torch.get_num_threads())\n")
    assert run_fresh(script, numba_threads=3) == ["1"]


def test_parallel_kernels_follow_torchs_thread_count_as_it_changes():
    """A launch runs on as many of numba's threads as torch has, per calling thread: after torch's count
    changes (2, 3, 2) and from a second Python thread (numba keeps a count per thread; launches remember the
    last one they set, per thread, rather than setting it every time)."""
    script = ("import threading, numba, torch\n"
              "from numba import njit, prange\n"
              "from dropviz.regularizers import _blocks\n"
              "@njit(parallel=True)\n"
              "def seen(n):\n"
              "    total = 0\n"
              "    for i in prange(n):\n"
              "        total += i\n"
              "    return numba.get_num_threads()\n"
              "for threads in (2, 3, 2):\n"
              "    torch.set_num_threads(threads)\n"
              "    print(_blocks.launch_parallel(seen, 100))\n"
              "def other():\n"
              "    print(_blocks.launch_parallel(seen, 100) == torch.get_num_threads())\n"
              "thread = threading.Thread(target=other)\n"
              "thread.start()\n"
              "thread.join()\n")
    assert run_fresh(script, numba_threads=3) == ["2", "3", "2", "True"]


def test_one_thread_draws_in_a_forked_child_after_parallel_draws():
    """numba's OpenMP layer ends a forked child that launches into it once the parent has. With one thread, as
    in DataLoader workers, ProbDropBlock draws without it: a child forked after parallel draws still draws."""
    script = ("import os, torch\n"
              "from dropviz.regularizers import functional as F_\n"
              "torch.set_num_threads(2)\n"
              "x = torch.rand(16, 8, 12, 12)\n"
              "F_.prob_drop_block_draw(x, 0.2, 3)\n"
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    torch.set_num_threads(1)\n"
              "    os._exit(0 if F_.prob_drop_block_draw(x, 0.2, 3).dropped.numel() > 0 else 1)\n"
              "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n")
    assert run_fresh(script, numba_threads=2) == ["0"]
