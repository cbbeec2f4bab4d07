"""The drop-rate-vs-block-size measurement and its figure."""
import pytest
import torch

from dropviz.viz.droprate import drop_rate_figure, drop_rate_sweep, implementations


def halves(x, drop_prob, block_size, generator):
    """A fake implementation: drops exactly the left half, refuses even block sizes."""
    if block_size % 2 == 0:
        raise ValueError("block size should be odd")
    out = x.clone()
    out[..., : x.shape[-1] // 2] = 0
    return out


def test_sweep_measures_the_share_of_zeros_and_records_refusals():
    rows = drop_rate_sweep(0.3, block_sizes=(1, 2), map_sizes=(4,), draws=3, impls={"fake": halves})
    assert rows[0] == dict(implementation="fake", map_size=4, block_size=1, requested=0.3, realised=0.5,
                           stderr=0.0, error=None)
    assert rows[1]["realised"] is None and rows[1]["error"] == "ValueError: block size should be odd"


def test_peers_are_found_and_torchvision_meets_the_rate_at_block_size_one():
    impls = implementations()
    assert {"torchvision", "timm"} <= set(impls)
    # block_size 1 is Bernoulli(p) dropout: 16 draws x 4 channels x 28^2 = 50k units, so the mean's standard
    # error is sqrt(0.1 * 0.9 / 50176) = 0.0013; 5 standard errors is 0.007.
    rows = drop_rate_sweep(0.1, block_sizes=(1,), map_sizes=(28,), draws=16, channels=4,
                           impls={"torchvision": impls["torchvision"]})
    assert rows[0]["realised"] == pytest.approx(0.1, abs=0.007)


def test_sweep_is_deterministic_and_leaves_the_global_rng_alone():
    impls = {name: fn for name, fn in implementations().items() if name != "dropviz"}
    state = torch.random.get_rng_state()
    first = drop_rate_sweep(0.2, block_sizes=(3,), map_sizes=(8,), draws=4, seed=5, impls=impls)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first == drop_rate_sweep(0.2, block_sizes=(3,), map_sizes=(8,), draws=4, seed=5, impls=impls)


def test_figure_has_a_panel_per_map_size_and_marks_refusals():
    rows = drop_rate_sweep(0.3, block_sizes=(1, 2, 3), map_sizes=(4, 8), draws=2, impls={"fake": halves})
    fig = drop_rate_figure(rows)
    assert [a.text for a in fig.layout.annotations][:2] == ["4 x 4 map", "8 x 8 map"]
    refused = [trace for trace in fig.data if trace.name == "fake refused"]
    assert len(refused) == 2 and list(refused[0].x) == [2] and "odd" in refused[0].text[0]
