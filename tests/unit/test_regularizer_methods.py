"""Method-specific behaviour: Disout's distortion, DropCluster's clusters, Multi-Sample Dropout's averaging,
DropPath's modes, ProbDropBlock's salience."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numba import njit
from scipy.stats import binom
from torch import nn

from dropviz.regularizers import (Disout, DropBlock2d, DropCluster, DropPath, MultiSampleDropout,
                                  ProbDropBlock2d)
from dropviz.regularizers import _blocks
from dropviz.regularizers import functional as F_
from dropviz.regularizers.dropcluster import grid_labels


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- Disout -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("drop_prob, block_size", [(0.1, 5), (0.6, 1)])  # seed rate 0.006: sparse; 0.6: dense
def test_disout_replaces_dropped_units_by_scaled_gaussian_noise(drop_prob, block_size):
    """At dropped units output * kept_fraction = distortion ~ N(0, (alpha * 0.01 * std(x))^2). With M dropped
    units the sample mean of z = distortion / sigma has SD 1/sqrt(M) and the sample variance SD sqrt(2/M);
    allow 5 of each."""
    x = randn(16, 16, 20, 20) * 3 + 1
    module = Disout(drop_prob, block_size, alpha=2.0).train()
    stages = module.explain(x, torch.Generator().manual_seed(1))
    mask, out, distortion = stages["mask"], stages["output"], stages["distortion"]
    dropped = mask == 0
    kept_fraction = mask.mean()
    assert torch.equal(distortion != 0, dropped)
    assert torch.allclose(out, (x * mask + distortion) / kept_fraction, rtol=1e-5, atol=1e-6)
    z = (distortion[dropped] / (2.0 * 0.01 * x.std())).double()
    m = z.numel()
    assert m > 1000
    assert abs(z.mean().item()) <= 5 / math.sqrt(m)
    assert abs(z.var().item() - 1) <= 5 * math.sqrt(2 / m)


def test_disout_mask_is_dropblocks_mask():
    x = randn(8, 4, 12, 12)
    # the sparse sampler with geometric gaps, the sparse one with a uniform per position, the dense one
    for drop_prob, block_size in ((0.1, 4), (0.6, 1), (0.8, 4)):
        disout = Disout(drop_prob, block_size).explain(x, torch.Generator().manual_seed(2))
        dropblock = DropBlock2d(drop_prob, block_size).explain(x, torch.Generator().manual_seed(2))
        assert torch.equal(disout["mask"], dropblock["mask"]) and torch.equal(disout["seeds"], dropblock["seeds"])


def test_disout_weight_behind_1x1_conv():
    """1x1 conv behind: w_c = +-0.1 * max over output filters of weight[:, c]."""
    x = randn(2, 3, 8, 8)
    conv = nn.Conv2d(3, 5, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(15.0).reshape(5, 3, 1, 1))  # max over filters: 12, 13, 14
    module = Disout(0.1, 3, alpha=1.5)
    module.weight_behind = conv.weight
    sigma = module.distortion_std(x, torch.Generator().manual_seed(0))
    expected = 1.5 * 0.1 * torch.tensor([12.0, 13.0, 14.0]) * x.std()
    assert torch.allclose(sigma.abs(), expected)


def test_disout_weight_behind_3x3_conv_random_sign_mean():
    x = randn(2, 2, 8, 8)
    weight = torch.zeros(4, 2, 3, 3)
    weight[1] = 1.0  # max over filters is 1 everywhere: w = mean of 9 random signs
    module = Disout(0.1, 3)
    module.weight_behind = weight
    draws = torch.stack([module.distortion_std(x, torch.Generator().manual_seed(s)) for s in range(200)])
    w = draws / x.std()
    # Mean of 9 signs takes values in {-1, -7/9, ..., 1}; every draw is one of them and both signs occur.
    nines = w * 9
    assert torch.allclose(nines, nines.round(), atol=1e-4) and (nines.round() % 2 == 1).all()
    assert (w > 0).any() and (w < 0).any()
    # Deterministic with a generator.
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(module.distortion_std(x, g()), module.distortion_std(x, g()))


@pytest.mark.parametrize("shape", [(4, 8, 16, 16), (3, 5, 7, 7), (2, 6, 8, 8)])  # strides and channel counts
@pytest.mark.parametrize("channels_last", [False, True])                          # powers of two or not
def test_disout_scales_each_distorted_unit_by_its_own_channels_std(shape, channels_last):
    """With a conv behind, each channel has its own distortion SD: a unit listed by a sparse draw gets its
    channel's, the channel read off a map of channel numbers in the same memory format."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = randn(*shape).contiguous(memory_format=layout)
    module = Disout(0.1, 3).train()
    module.weight_behind = randn(7, shape[1], 3, 3, seed=1)
    sigma = module.distortion_std(x, torch.Generator().manual_seed(2))
    assert sigma.unique().numel() == shape[1]
    draw = F_.drop_block_draw(x, 0.1, 3, generator=torch.Generator().manual_seed(3), sampler="sparse",
                              list_units=True)
    drop = module._distort_units(x, draw, sigma, torch.Generator().manual_seed(4))
    channel_map = torch.arange(shape[1]).view(1, -1, 1, 1).expand(shape).contiguous(memory_format=layout)
    units = draw.dropped
    channels = _blocks._storage(channel_map)[units.long()]
    noise = torch.from_numpy(F_.standard_normals(units.shape[0], torch.Generator().manual_seed(4)))
    assert channels.unique().numel() == shape[1]
    assert torch.equal(drop.values, noise * sigma[channels])


@pytest.mark.parametrize("kernel", [1, 3])
def test_disout_distortion_std_is_the_same_for_a_channels_last_weight(kernel):
    x = randn(2, 6, 8, 8)
    weight = randn(5, 6, kernel, kernel, seed=1)
    module = Disout(0.1, 3)
    stds = []
    for layout in (torch.contiguous_format, torch.channels_last):
        module.weight_behind = weight.contiguous(memory_format=layout)
        stds.append(module.distortion_std(x, torch.Generator().manual_seed(2)))
    # summed in another order: float32 means of 9 terms under 1 differ by a few units of 1e-7
    torch.testing.assert_close(stds[0], stds[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_disout_compiled_weight_factor_matches_the_tensor_ops(monkeypatch, kernel, layout):
    """On the CPU the per-channel factor is one compiled pass; the tensor ops (used on GPUs and under
    torch.compile) give the same values from the same signs."""
    x = randn(3, 6, 8, 8)
    module = Disout(0.1, 3, alpha=2.5)
    module.weight_behind = randn(5, 6, kernel, kernel, seed=1).contiguous(memory_format=layout)
    compiled = module.distortion_std(x, torch.Generator().manual_seed(2))
    monkeypatch.setattr(_blocks, "sparse_ok", lambda tensor: False)
    tensor_ops = module.distortion_std(x, torch.Generator().manual_seed(2))
    assert compiled.shape == tensor_ops.shape == (6,) and compiled.dtype == tensor_ops.dtype == torch.float32
    torch.testing.assert_close(compiled, tensor_ops, rtol=1e-5, atol=1e-7)


def test_disout_rejects_a_mismatched_weight_behind():
    module = Disout(0.1, 3)
    module.weight_behind = torch.zeros(4, 7, 3, 3)
    with pytest.raises(ValueError, match="weight_behind"):
        module.train()(randn(2, 3, 8, 8))


# --- DropCluster --------------------------------------------------------------------------------------

def test_grid_labels_before_fit():
    labels = grid_labels(8, 8, 4)
    assert labels.unique().tolist() == [0, 1, 2, 3]
    assert (labels[:4, :4] == labels[0, 0]).all() and (labels[4:, 4:] == labels[7, 7]).all()
    assert grid_labels(2, 3, 100).unique().numel() == 6  # never more clusters than units
    assert grid_labels(5, 9, 7).unique().numel() == 7   # a prime count: 1 x 7 strips


def connected(region: torch.Tensor) -> bool:
    """Is the True region 4-connected? (flood fill)"""
    points = {tuple(p) for p in region.nonzero().tolist()}
    todo = [next(iter(points))]
    seen = set(todo)
    while todo:
        i, j = todo.pop()
        for nb in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if nb in points and nb not in seen:
                seen.add(nb)
                todo.append(nb)
    return len(seen) == len(points)


def test_dropcluster_fit_finds_correlated_connected_regions():
    """Two channels, each made of regions whose units move together across samples: Ward under grid
    connectivity must recover the planted regions, and every cluster must be spatially connected."""
    generator = torch.Generator().manual_seed(0)
    n, h, w = 64, 8, 10
    signals = torch.randn(n, 2, 3, generator=generator)
    planted = torch.zeros(2, h, w, dtype=torch.long)
    planted[0, :, 4:] = 1
    planted[0, 5:, 4:] = 2                      # channel 0: left block, top-right, bottom-right
    planted[1, :3] = 1
    planted[1, 3:6, :] = 2                     # channel 1: three horizontal bands
    activations = torch.stack([signals[:, c, planted[c]] for c in range(2)], dim=1)
    activations += 0.01 * torch.randn(activations.shape, generator=generator)
    module = DropCluster(0.2, 3, refit_every=0)
    module.fit(activations)
    assert module.fitted and module.labels.shape == (2, h, w)
    for c in range(2):
        for label in range(3):
            region = module.labels[c] == label
            assert connected(region)
            # each found cluster is exactly one planted region
            planted_label = planted[c][region].unique()
            assert planted_label.numel() == 1 and torch.equal(region, planted[c] == planted_label)


@pytest.mark.parametrize("drop_prob", [0.1, 0.4])  # the sparse and the dense draw
def test_dropcluster_mask_drops_whole_clusters(drop_prob):
    x = randn(6, 3, 9, 9)
    module = DropCluster(drop_prob, 5).train()
    stages = module.explain(x, torch.Generator().manual_seed(3))
    labels, dropped, mask = stages["clusters"], stages["dropped_clusters"], stages["mask"]
    assert dropped.shape == (6, 3, 5) and dropped.sum() > 0
    expected = 1 - dropped.gather(2, labels.flatten(2)).reshape(mask.shape)
    assert torch.equal(mask, expected)
    for layout in (torch.channels_last, torch.contiguous_format):  # the same draw in either layout
        again = module.explain(x.contiguous(memory_format=layout), torch.Generator().manual_seed(3))
        assert torch.equal(again["mask"], mask)


def test_dropcluster_refits_every_refit_every_steps():
    module = DropCluster(0.1, 4, refit_every=3, buffer_size=16).train()
    x = randn(8, 2, 6, 6)
    module(x)
    module(x)
    assert not module.fitted
    module(x)
    assert module.fitted and module.labels.unique().numel() == 4


def test_dropcluster_resets_to_a_grid_when_the_shape_changes():
    module = DropCluster(0.1, 4, refit_every=0).train()
    module.fit(randn(8, 2, 6, 6))
    module(randn(2, 3, 8, 8))
    assert not module.fitted and module.labels.shape == (3, 8, 8)
    assert torch.equal(module.labels[0], grid_labels(8, 8, 4))


def test_dropcluster_set_clusters_uses_handed_labels_as_fitted():
    fitted = DropCluster(0.1, 4, refit_every=0)
    fitted.fit(randn(8, 2, 6, 6))
    module = DropCluster(0.5, 4, refit_every=0).set_clusters(fitted.labels.to(torch.int32))
    assert module.fitted and module.labels.dtype == torch.int64
    stages = module.train().explain(randn(3, 2, 6, 6), torch.Generator().manual_seed(0))
    assert torch.equal(stages["clusters"][0], fitted.labels)


@pytest.mark.parametrize("labels, message", [
    (torch.zeros(6, 6, dtype=torch.int64), r"\(C, H, W\)"),
    (torch.zeros(0, 6, 6, dtype=torch.int64), r"\(C, H, W\)"),
    (torch.zeros(2, 6, 6), "integer"),
    (torch.zeros(2, 6, 6, dtype=torch.bool), "integer"),
    (torch.full((2, 6, 6), 4), r"\[0, 4\)"),
    (torch.full((2, 6, 6), -1), r"\[0, 4\)"),
])
def test_dropcluster_set_clusters_refuses_bad_labels(labels, message):
    module = DropCluster(0.1, 4)
    with pytest.raises(ValueError, match=message):
        module.set_clusters(labels)
    assert module.labels is None and not module.fitted


@pytest.mark.parametrize("sampler", ["sparse", "dense"])
def test_cluster_mask_rate_is_exact_for_unequal_clusters(sampler):
    """Each unit's cluster is dropped with probability p, so even with very unequal clusters the dropped
    fraction has mean p; per-map fractions i.i.d. over 20000 maps, 5 SE."""
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, 0, 0] = 1  # a one-unit cluster beside a 35-unit one
    x = torch.zeros(20000, 1, 6, 6)
    draw, _ = F_.cluster_draw(x, labels, 2, 0.2, torch.Generator().manual_seed(0), sampler)
    per_map = 1 - _blocks.keep_mask(draw, x).double().mean(dim=(1, 2, 3))
    assert abs(per_map.mean().item() - 0.2) <= 5 * per_map.std().item() / math.sqrt(per_map.numel())
    assert F_.cluster_mask(labels, 2, 3, 0.2).shape == (3, 1, 6, 6)


# --- Multi-Sample Dropout -----------------------------------------------------------------------------

def test_multisample_loss_is_the_mean_of_per_sample_head_losses():
    head = nn.Linear(6, 3)
    module = MultiSampleDropout(head, n_samples=5, drop_prob=0.5).train()
    x, y = randn(4, 6), torch.tensor([0, 1, 2, 1])
    loss_fn = nn.functional.cross_entropy
    loss = module.loss(x, y, loss_fn, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    expected = []
    for _ in range(5):
        mask = F_.dropout_mask(x, 0.5, generator)
        expected.append(loss_fn(head(x * mask * 2.0), y))  # the loss of head(dropped), not of the features
    assert torch.allclose(loss, torch.stack(expected).mean())
    logits = module(x, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    per_sample = [head(x * F_.dropout_mask(x, 0.5, generator) * 2.0) for _ in range(5)]
    assert torch.allclose(logits, torch.stack(per_sample).mean(0))


def test_multisample_eval_is_the_head():
    head = nn.Linear(6, 3)
    module = MultiSampleDropout(head, 4, 0.5).eval()
    x = randn(4, 6)
    assert torch.equal(module(x), head(x))
    y = torch.tensor([0, 1, 2, 1])
    assert torch.equal(module.loss(x, y, nn.functional.cross_entropy), nn.functional.cross_entropy(head(x), y))


def test_multisample_explain_shows_every_mask():
    stages = MultiSampleDropout(nn.Identity(), 3, 0.5).explain(randn(2, 3, 4, 4))
    assert list(stages) == ["input", "mask", "mask_2", "mask_3", "output"]
    assert not torch.equal(stages["mask"], stages["mask_2"])


# --- DropPath -----------------------------------------------------------------------------------------

def test_droppath_modes():
    x = randn(4000, 3, 2, 2)
    row = DropPath(0.3, "row").explain(x, torch.Generator().manual_seed(0))["mask"]
    per_sample = row.flatten(1)
    assert (per_sample == per_sample[:, :1]).all()  # a sample is dropped whole
    # 4000 Bernoulli(0.3) draws: SD sqrt(0.21 / 4000) = 0.0072; 5 SD.
    assert abs((1 - per_sample[:, 0].mean()).item() - 0.3) <= 5 * math.sqrt(0.21 / 4000)
    for seed in range(20):
        batch = DropPath(0.5, "batch").explain(x[:8], torch.Generator().manual_seed(seed))["mask"]
        assert batch.unique().numel() == 1  # the whole batch at once


# --- ProbDropBlock ------------------------------------------------------------------------------------

def test_probdropblock_prefers_salient_units():
    """Half the map has |x| = 3, half |x| = 1: seeds fall on the salient half 3x as often."""
    x = torch.ones(2000, 1, 16, 16)
    x[..., 8:] = 3.0
    rates = F_.salience_seed_rate(x, 0.1, 1)
    assert torch.allclose(rates[..., 8:], 3 * rates[..., :8])
    assert rates.mean().item() == pytest.approx(0.1, rel=1e-5)  # DropBlock's expected seed count
    mask = ProbDropBlock2d(0.1, 3).explain(x, torch.Generator().manual_seed(0))["mask"]
    # Units in columns 2..5 vs 10..13 (away from the split and the border), each under 9 block centres (fewer in
    # the top and bottom rows) at block_size 3's rates 0.0076 and 0.023: drop rates about 1 - (1 - r)^9, 0.06 and
    # 0.17, with SEs of 0.002 and 0.003 over the 2000 maps; high > 2 * low holds by 11 SE. With the salience
    # ignored both would be about 0.11, failing it by some 20 SE.
    low, high = 1 - mask[..., 2:6].mean(), 1 - mask[..., 10:14].mean()
    assert high > 2 * low


def test_probdropblock_matches_dropblock_rate_for_uniform_salience():
    x = torch.ones(4000, 1, 14, 14)
    mask = ProbDropBlock2d(0.1, 5).explain(x, torch.Generator().manual_seed(0))["mask"]
    per_map = 1 - mask.double().mean(dim=(1, 2, 3))
    assert abs(per_map.mean().item() - 0.1) <= 5 * per_map.std().item() / math.sqrt(per_map.numel())


@pytest.mark.parametrize("low, high", [(0.01, 0.04), (0.3, 0.6)])
def test_per_position_seed_rates_are_honoured_by_the_dense_sampler(low, high):
    """k = 1, so the mask is the seed map: rate ``low`` on the left half and ``high`` on the right. Each half
    of 20000 maps x 16 units is a Binomial count; 5 SD of its mean."""
    x = torch.zeros(20000, 1, 4, 8)
    rates = torch.full((1, 1, 4, 8), low)
    rates[..., 4:] = high
    draw = _blocks.draw_block_mask(x, rates, (1, 1), False, torch.Generator().manual_seed(0), "dense", False)
    dropped = 1 - _blocks.keep_mask(draw, x).double()
    n = 20000 * 16
    for half, rate in ((dropped[..., :4], low), (dropped[..., 4:], high)):
        assert abs(half.mean().item() - rate) <= 5 * math.sqrt(rate * (1 - rate) / n)
    with pytest.raises(ValueError, match="sampler='dense'"):
        _blocks.draw_block_mask(x, rates, (1, 1), False, None, "sparse", False)


@pytest.mark.parametrize("drop_prob", [0.1, 0.5])
def test_probdropblock_sparse_seeds_follow_salience(drop_prob):
    """CPU sparse path (one trial per position, sample by sample), k = 1 so the mask is the seed map. Salience
    1 on the left half and 4 on the right of every map: mean 2.5, so the rates are p * 0.4 and p * 1.6
    (0.04/0.16, 0.2/0.8). Half a map among a third of the maps is all zero, the rest as above; an all-zero
    map falls back to rate p. Each half of a group is a Binomial count; 5 SD of its mean."""
    x = torch.ones(30000, 1, 4, 8)
    x[..., 4:] = -4.0  # salience is |x|
    x[:10000] = 0.0
    seeds = F_.prob_drop_block_draw(x, drop_prob, 1, torch.Generator().manual_seed(3), with_seeds=True).seeds
    expected = ((seeds[10000:, ..., :4], 0.4 * drop_prob), (seeds[10000:, ..., 4:], 1.6 * drop_prob),
                (seeds[:10000], drop_prob))
    for part, rate in expected:
        n = part.numel()
        assert abs(part.double().mean().item() - rate) <= 5 * math.sqrt(rate * (1 - rate) / n), (rate, n)



@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_probdropblock_sparse_seeds_have_the_dense_rates_at_every_position(layout):
    """The sparse sampler reads salience straight from the storage, inside the border a 3x3 block leaves:
    every (channel, valid position) of one salience pattern, repeated over 20000 samples, is seeded at the
    rate :func:`salience_seed_rate` gives (channel 2 all zero: the uniform fallback). 60 Binomial cells, each
    within 4.5 SD (a false alarm about once in 2500 runs)."""
    pattern = torch.linspace(-3.0, 3.0, 3 * 6 * 7).reshape(1, 3, 6, 7)[:, torch.tensor([2, 0, 1])] ** 3
    pattern[0, 0, 2, 3] = 0.0
    pattern[:, 2] = 0.0
    x = pattern.expand(20000, -1, -1, -1).contiguous(memory_format=layout)
    rates = F_.salience_seed_rate(pattern, 0.3, 3)[0]
    assert rates.shape == (3, 4, 5) and rates.max() < 1 and (rates == 0).sum() == 1  # the pattern's zero
    assert F_.draws_blocks_sparsely(x, 0.3, 3)
    seeds = F_.prob_drop_block_draw(x, 0.3, 3, torch.Generator().manual_seed(5), with_seeds=True).seeds
    frequency = seeds[:, :, 1:5, 1:6].double().mean(dim=0)  # the centres of the valid block positions
    assert seeds.sum() == seeds[:, :, 1:5, 1:6].sum()  # no seed outside them
    spread = (rates.double() * (1 - rates.double()) / 20000).sqrt().clamp_min(1e-12)
    assert ((frequency - rates.double()).abs() <= 4.5 * spread).all()


def test_probdropblock_sparse_seeds_where_a_rate_clips_to_one():
    """One unit per map 1000x as salient as the rest: its rate clips to 1, so that unit is a seed in every map;
    the others keep their rate (each of 62 Binomial cells of 20000 maps within 4.5 SD)."""
    x = torch.ones(20000, 2, 4, 8)
    x[:, :, 1, 2] = 1000.0
    rates = F_.salience_seed_rate(x[:1], 0.3, 1)[0].double()
    assert rates[:, 1, 2].eq(1).all() and rates.max() == 1 and rates.min() < 0.01
    seeds = F_.prob_drop_block_draw(x, 0.3, 1, torch.Generator().manual_seed(0), with_seeds=True).seeds
    frequency = seeds.double().mean(dim=0)
    assert frequency[:, 1, 2].eq(1).all()
    spread = (rates * (1 - rates) / 20000).sqrt()
    others = rates < 1
    assert ((frequency - rates).abs()[others] <= 4.5 * spread[others]).all()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_probdropblock_sparse_draw_does_not_depend_on_the_thread_count(layout):
    """The sparse sampler runs parallel over the samples, each drawing from its own stream: the same generator
    seed gives the same seeds on 1, 2 or 3 threads."""
    x = randn(64, 8, 12, 12).contiguous(memory_format=layout)
    before, draws = torch.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            draw = F_.prob_drop_block_draw(x, 0.2, 3, torch.Generator().manual_seed(7))
            draws.append(draw.dropped.units())
    finally:
        torch.set_num_threads(before)
    assert draws[0].numel() > 0 and all(torch.equal(draws[0], d) for d in draws[1:])


def test_probdropblock_many_seeds_per_sample_are_the_same_in_both_layouts():
    """k = 1 and p = 0.5 (still the sparse sampler: the blocks cover half the map): thousands of seeds per
    sample, which the channels-last scan finds position by position and puts back in channel order. Both
    layouts give the same seeds, sorted, at the rate p (5 SD of a Binomial count)."""
    x = randn(3, 8, 30, 30).abs() + 1.0
    assert F_.draws_blocks_sparsely(x, 0.5, 1)
    draws = [F_.prob_drop_block_draw(x.contiguous(memory_format=layout), 0.5, 1, torch.Generator().manual_seed(4),
                                     with_seeds=True) for layout in (torch.contiguous_format, torch.channels_last)]
    seeds = [draw.dropped.seeds for draw in draws]
    assert np.array_equal(seeds[0], seeds[1]) and (np.diff(seeds[0]) > 0).all()
    assert torch.equal(draws[0].seeds, draws[1].seeds)
    n, rate = x.numel(), F_.salience_seed_rate(x, 0.5, 1).double().mean().item()
    assert abs(len(seeds[0]) - n * rate) <= 5 * math.sqrt(n * rate * (1 - rate))


def test_probdropblock_samples_draw_independently():
    """20000 identical samples, k = 1 (the seeds are the mask), rates 0.3 * (1..32) / 16.5 at the 32 positions.
    If the samples' streams are independent, samples 2i and 2i+1 are both seeded at a position with
    probability r^2: per position, the count over 10000 pairs is Binomial(10000, r^2), held to its exact central
    interval of probability 1 - 1e-6 / 32 (at position 1 its mean is 3.3, too few for a normal bound)."""
    pattern = torch.arange(1.0, 33.0).reshape(1, 1, 4, 8)
    rates = F_.salience_seed_rate(pattern, 0.3, 1).double().reshape(32)
    x = pattern.expand(20000, -1, -1, -1).contiguous()
    seeds = F_.prob_drop_block_draw(x, 0.3, 1, torch.Generator().manual_seed(2), with_seeds=True).seeds
    pairs = seeds.double().reshape(10000, 2, 32)
    both = (pairs[:, 0] * pairs[:, 1]).sum(dim=0)
    tail = 1e-6 / 32 / 2  # a false failure once in a million runs, over 32 positions and two tails
    low, high = binom.ppf(tail, 10000, (rates ** 2).numpy()), binom.isf(tail, 10000, (rates ** 2).numpy())
    assert ((low <= both.numpy()) & (both.numpy() <= high)).all(), (both, low, high)


def test_probdropblock_sparse_draw_reads_any_float_dtype_and_strided_views():
    """The salience is read from ``x``'s own storage: float64, bfloat16 and a strided view holding the same
    values as a float32 tensor give its seeds."""
    x = (randn(16, 4, 10, 10).abs() + 0.1).bfloat16().float()  # values every dtype here holds exactly
    wide = torch.zeros(16, 4, 10, 20)
    wide[..., ::2] = x
    def units(values):
        return _blocks.unit_offsets(F_.prob_drop_block_draw(values, 0.3, 3, torch.Generator().manual_seed(1)).dropped)
    want = units(x)
    assert want.numel() > 0
    for same in (x.double(), x.bfloat16(), wide[..., ::2]):
        assert torch.equal(units(same), want)


@pytest.mark.parametrize("drop_prob, block_size", [(0.2, 3), (0.9, 7)])  # the sparse and the dense sampler
def test_probdropblock_draw_for_a_relu_is_the_draw_on_its_output(drop_prob, block_size):
    """``relu=True`` reads the salience as ``max(x, 0)``: the blocks drawn on ``relu(x)``, not on ``|x|``."""
    x = randn(8, 4, 12, 12)
    def keep(values, **relu):
        draw = F_.prob_drop_block_draw(values, drop_prob, block_size, torch.Generator().manual_seed(4), **relu)
        return _blocks.keep_mask(draw, x)
    assert F_.draws_blocks_sparsely(x, drop_prob, block_size) == (drop_prob == 0.2)
    assert torch.equal(keep(x, relu=True), keep(x.relu()))
    assert not torch.equal(keep(x), keep(x.relu()))


@njit
def _stream_uniforms(n, key):
    """The first ``n`` uniforms of a stream, each found directly and stepped to."""
    direct, stepped, state = np.empty(n), np.empty(n), np.uint64(key)
    for i in range(n):
        direct[i] = F_._uniform_at(np.uint64(key), np.uint64(i))
        state, stepped[i] = F_._next_uniform(state)
    return direct, stepped


def test_a_streams_uniforms_found_directly_are_those_stepped_to():
    """ProbDropBlock's trials take uniform ``i`` of a sample's stream directly: the same numbers SplitMix64
    steps to (so the streams' spacing still keeps them apart), and uniform on [0, 1): 10^5 of them within the
    0.1% Kolmogorov-Smirnov critical value 1.95 / sqrt(n)."""
    n = 100_000
    direct, stepped = _stream_uniforms(n, 2**63 + 12345)
    assert np.array_equal(direct, stepped)
    values = np.sort(direct)
    assert values[0] >= 0.0 and values[-1] < 1.0
    assert max((np.arange(1, n + 1) / n - values).max(), (values - np.arange(n) / n).max()) < 1.95 / math.sqrt(n)


def test_stream_normals_are_normal():
    """The normal ziggurat's float32 variates against N(0, 1), 4 * 10^6 of them in 977 pieces (the last one
    short): the Kolmogorov-Smirnov distance within the 0.1% critical value 1.95 / sqrt(n); the tail beyond the
    base layer's edge r (probability erfc(r / sqrt 2) = 2.6e-4), beyond 2 and the negative half each within 5 SD
    of their Binomial means; the mean square within 5 SD (sqrt(2 / n)) of 1. Accepting every point of the
    layers' wedges untested moves the last two by about 8 SD. The pieces' streams give the same numbers on 1
    or 3 threads."""
    n = 4_000_000
    before, draws = torch.get_num_threads(), []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            draws.append(F_.standard_normals(n, torch.Generator().manual_seed(9)))
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(draws[0], draws[1])
    values = np.sort(draws[0].astype(np.float64))
    cdf = 0.5 * (1.0 + torch.special.erf(torch.from_numpy(values) / math.sqrt(2)).numpy())
    distance = max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max())
    assert distance < 1.95 / math.sqrt(n)
    for count, p in [((np.abs(values) > F_._NORMAL_INNER[0]).sum(), math.erfc(F_._NORMAL_INNER[0] / math.sqrt(2))),
                     ((np.abs(values) > 2.0).sum(), math.erfc(math.sqrt(2))), ((values < 0).sum(), 0.5)]:
        assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    assert abs(np.square(values).mean() - 1.0) <= 5 * math.sqrt(2 / n)


def test_disout_std_matches_torch_std():
    from dropviz.regularizers.disout import _std

    x = randn(8, 4, 6, 6) * 2 + 1
    for sample in (x, x + 1e4, x.contiguous(memory_format=torch.channels_last), x[:, :, ::2]):
        # the large mean takes the Welford fallback; channels_last and a strided view read the same values
        assert math.isclose(_std(sample), sample.double().std().item(), rel_tol=1e-5)


def test_disout_std_of_many_pieces_is_float64_exact_on_any_thread_count():
    """A ResNet-sized activation (7 pieces of the moments pass, the last one short): float64 sums, so within
    1e-9 of the float64 SD, and combined piece by piece in order, so the same float on 1 and 3 threads."""
    from dropviz.regularizers.disout import _std

    x = (randn(64, 32, 8, 7) * 3 - 2).contiguous(memory_format=torch.channels_last)
    before, results = torch.get_num_threads(), []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append(_std(x))
    finally:
        torch.set_num_threads(before)
    assert results[0] == results[1]
    assert math.isclose(results[0], x.double().std().item(), rel_tol=1e-9)


def test_dropcluster_labels_survive_a_state_dict_round_trip():
    trained = DropCluster(0.1, 4, refit_every=0)
    trained.fit(randn(8, 2, 6, 6))
    model = nn.Sequential(nn.Conv2d(2, 2, 1), DropCluster(0.1, 4, refit_every=0))
    model.load_state_dict(nn.Sequential(nn.Conv2d(2, 2, 1), trained).state_dict())
    assert torch.equal(model[1].labels, trained.labels)
    never_run = DropCluster(0.1, 4).state_dict()
    model[1].load_state_dict(never_run)  # a state from before the first application: back to no labels
    assert model[1].labels is None and not model[1].fitted
