"""The shared contract of every regularizer and REGISTRY entry: identity cases, explain == forward, gradient,
determinism, dtypes, channels_last, mean preservation, argument checks, torch.compile."""
from __future__ import annotations

import math

import pytest
import torch

from dropviz.regularizers import (REGISTRY, Disout, DropBlock2d, DropBlock3d, DropCluster, Dropout, DropPath,
                                  LinearScheduler, MultiSampleDropout, ProbDropBlock2d, Regularizer)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_all(drop_prob: float = 0.2) -> dict[str, Regularizer]:
    """One module per method, on (N, C, H, W) input; registry entries plus the non-registry classes."""
    modules = {name: spec.make(drop_prob=drop_prob) for name, spec in REGISTRY.items()}
    modules["dropblock_shared"] = DropBlock2d(drop_prob, 3, share_channels=True)
    modules["scheduled_dropblock"] = LinearScheduler(DropBlock2d(block_size=3), drop_prob, 0.5, 10)
    return modules


ALL = sorted(make_all())


def image(seed: int = 0, shape=(4, 8, 14, 14), **kwargs) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(**kwargs)


def run(module, x, seed, explain=False):
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return module.explain(x, generator) if explain else module(x, generator)


@pytest.mark.parametrize("name", ALL)
def test_eval_is_identity(name):
    module = make_all()[name].eval()
    x = image()
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("name", ALL)
def test_zero_drop_prob_is_identity(name):
    module = make_all(0.0)[name].train()
    x = image()
    assert torch.equal(module(x), x)
    stages = module.explain(x)
    assert torch.equal(stages["output"], x) and torch.all(stages["mask"] == 1)


@pytest.mark.parametrize("name", ALL)
def test_explain_output_equals_forward_and_stages_are_ordered(name):
    module = make_all()[name].train()
    x = image()
    stages = run(module, x, 3, explain=True)
    assert torch.equal(stages["output"], run(module, x, 3))
    keys = list(stages)
    assert keys[0] == "input" and keys[-1] == "output" and "mask" in keys
    assert stages["mask"].shape == x.shape and set(stages["mask"].unique().tolist()) <= {0.0, 1.0}


def test_method_specific_stages():
    x = image()
    assert list(DropBlock2d(0.2, 3).explain(x)) == ["input", "seeds", "mask", "output"]
    assert list(Disout(0.2, 3).explain(x)) == ["input", "seeds", "mask", "distortion", "output"]
    assert list(DropCluster(0.2, 4).explain(x)) == ["input", "clusters", "dropped_clusters", "mask", "output"]


@pytest.mark.parametrize("name", ALL)
def test_determinism_with_generator(name):
    module = make_all()[name].train()
    x = image()
    assert torch.equal(run(module, x, 11), run(module, x, 11))
    assert not torch.equal(run(module, x, 11), run(module, x, 12))


def expected_scale(name: str, mask: torch.Tensor, drop_prob: float) -> torch.Tensor:
    if name in ("dropout", "droppath"):
        return torch.tensor(1.0 / (1.0 - drop_prob))
    return mask.numel() / mask.sum()  # block methods: renormalised by the kept fraction of the whole tensor


@pytest.mark.parametrize("name", [n for n in ALL if n != "multisample"])
def test_gradient_is_mask_times_scale(name):
    module = make_all()[name].train()
    x = image().requires_grad_()
    stages = run(module, x, 5, explain=True)
    stages["output"].backward(torch.ones_like(x))
    mask = stages["mask"]
    assert torch.allclose(x.grad, mask * expected_scale(name, mask, module.drop_prob), rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", ALL)
def test_dtypes(name, dtype):
    module = make_all()[name].train()
    x = image(dtype=dtype)
    stages = run(module, x, 0, explain=True)
    assert stages["output"].dtype == dtype and stages["mask"].dtype == dtype
    assert torch.isfinite(stages["output"]).all()


@pytest.mark.parametrize("name", ALL)
def test_channels_last_is_kept(name):
    module = make_all()[name].train()
    x = image().contiguous(memory_format=torch.channels_last)
    out = run(module, x, 0)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["dropblock", "probdropblock", "dropcluster", "disout", "dropblock_shared"])
def test_channels_last_gives_the_same_mask(name):
    module = make_all()[name].train()
    x = image()
    contiguous = run(module, x, 4, explain=True)["mask"]
    channels_last = run(module, x.contiguous(memory_format=torch.channels_last), 4, explain=True)["mask"]
    assert torch.equal(contiguous, channels_last)


@pytest.mark.parametrize("name", [n for n in ALL if n != "probdropblock"])
def test_mean_is_preserved_in_expectation(name):
    """sum(output) over R independent draws: its mean must be sum(x) within 5 standard errors (SE from the
    R draws' sample SD / sqrt(R); R = 300 makes the SE estimate good to ~5%). ProbDropBlock drops salient
    units on purpose, so it shrinks the total (test_probdropblock).

    x is constant within each map (a different value per map). Block methods keep a unit near the border more
    often than one in the middle (fewer block centres cover it) and divide by the whole tensor's kept
    fraction, so for x that varies within a map the expected sum is sum_i x_i q_i / mean(q), q_i the unit's
    keep probability: off sum(x) by sum_i (x_i - mean(x)) (q_i / mean(q) - 1), which for |randn| + 0.5 on
    14x14 maps is as large as the 5 SE tolerance (up to 7 against 6). With x constant per map that term is 0,
    since every map has the same q."""
    module = make_all()[name].train()
    x = (image(shape=(4, 8, 1, 1)).abs() + 0.5).expand(4, 8, 14, 14).contiguous()
    generator = torch.Generator().manual_seed(0)
    totals = torch.tensor([module(x, generator).double().sum().item() for _ in range(300)])
    se = totals.std().item() / math.sqrt(totals.numel())
    assert abs(totals.mean().item() - x.double().sum().item()) <= 5 * se + 1e-6 * x.sum().item()


@pytest.mark.parametrize("name", ALL)
def test_realised_drop_fraction(name):
    """Every method drops drop_prob of the units on average (DropBlock's shape table is in test_dropblock).
    Per-map fractions are i.i.d. over the N*C maps of each draw; 5 SE as there."""
    module = make_all(0.25)[name].train()
    generator = torch.Generator().manual_seed(1)
    x = image(shape=(64, 32, 14, 14)).abs() + 1.0  # uniform-ish salience for ProbDropBlock
    masks = torch.cat([module.explain(x, generator)["mask"] for _ in range(3)])
    per_map = 1.0 - masks.double().mean(dim=(2, 3)).flatten()
    if name in ("droppath", "dropblock_shared"):
        per_map = per_map.reshape(-1, x.shape[1])[:, 0]  # one draw per sample, shared by its channels
    se = per_map.std().item() / math.sqrt(per_map.numel())
    assert abs(per_map.mean().item() - 0.25) <= 5 * se


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL)
def test_runs_on_device(name, device):
    module = make_all()[name].train().to(device)
    x = image(device=device)
    out = run(module, x, 0)
    assert out.device.type == device and out.shape == x.shape


BAD_ARGUMENTS = [
    (lambda: Dropout(1.0), "drop_prob"),
    (lambda: Dropout(-0.1), "drop_prob"),
    (lambda: DropBlock2d(0.1, 0), "block_size"),
    (lambda: DropBlock2d(0.1, 2.5), "block_size"),
    (lambda: DropBlock3d(1.5, 3), "drop_prob"),
    (lambda: Disout(0.1, 3, alpha=-1), "alpha"),
    (lambda: DropCluster(0.1, 0), "n_clusters"),
    (lambda: MultiSampleDropout(torch.nn.Identity(), 0, 0.1), "n_samples"),
    (lambda: DropPath(0.1, mode="column"), "mode"),
    (lambda: LinearScheduler(DropBlock2d(), 0.0, 1.2, 10), "stop_value"),
    (lambda: LinearScheduler(DropBlock2d(), 0.0, 0.2, 0), "nr_steps"),
    (lambda: REGISTRY["dropblock"].make(block=3), "block_size"),
    (lambda: DropBlock2d(0.1, float("inf")), "block_size"),
    (lambda: DropBlock2d(0.1, float("nan")), "block_size"),
    (lambda: DropBlock2d(0.1, None), "block_size"),
    (lambda: Dropout(None), "drop_prob"),
    (lambda: Dropout("a lot"), "drop_prob"),
    (lambda: DropCluster(0.1, 4, refit_every=float("inf")), "refit_every"),
    (lambda: LinearScheduler(DropBlock2d(), 0.0, 0.2, float("inf")), "nr_steps"),
    (lambda: DropBlock2d(0.1, 3)(torch.zeros(2, 3, 4)), r"\(N, C, H, W\)"),
    (lambda: DropBlock3d(0.1, 3)(torch.zeros(2, 3, 4, 4)), r"\(N, C, D, H, W\)"),
    (lambda: Disout(0.1, 3)(torch.zeros(3, 4)), r"\(N, C, H, W\)"),
]


@pytest.mark.parametrize("build, name", BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error_naming_them(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_registry_specs_are_complete():
    assert set(REGISTRY) == {"dropout", "droppath", "dropblock", "disout", "dropcluster", "probdropblock",
                             "multisample"}
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.display_name and spec.summary and spec.paper
        assert spec.params[0].name == "drop_prob"
        for param in spec.params:
            if param.kind in (int, float):
                assert param.min <= param.default <= param.max and param.step > 0
            if param.kind is str:
                assert param.default in param.choices
        module = spec.make()
        assert isinstance(module, spec.cls) and isinstance(module, Regularizer)


def test_registry_entries_take_their_param_extremes():
    x = image(shape=(2, 3, 9, 9))
    for spec in REGISTRY.values():
        for param in spec.params:
            values = param.choices or ((param.min, param.max) if param.kind in (int, float) else (True, False))
            for value in values:
                stages = spec.make(**{param.name: param.kind(value)}).explain(x)
                assert stages["output"].shape == x.shape


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
@pytest.mark.parametrize("name", ALL)
def test_non_floating_inputs_are_refused_in_every_mode(name, dtype):
    """A mask renormalised by a fractional scale cannot be held in an integer tensor (DropCluster's dense path
    once returned int64 input unscaled)."""
    module = make_all()[name]
    x = image().gt(0).to(dtype)
    for mode in (module.train(), module.eval()):
        with pytest.raises(ValueError, match="floating-point"):
            mode(x)
    with pytest.raises(ValueError, match="floating-point"):
        module.explain(x)


@pytest.mark.parametrize("shape", [(0, 8, 14, 14), (4, 8, 0, 14)])
@pytest.mark.parametrize("name", ALL)
def test_an_empty_input_passes_through_training(name, shape):
    """An empty batch (a detection model with no regions, a last batch of nothing) has nothing to drop:
    the module returns it as it is rather than dividing by its size; explain says there is nothing to show."""
    module = make_all()[name].train()
    x = torch.zeros(shape)
    assert module(x).shape == shape
    with pytest.raises(ValueError, match="empty"):
        module.explain(x)


def test_disout_on_a_single_value_distorts_by_nothing():
    """The unbiased SD of one value is undefined (NaN); Disout scales its noise by 0 there instead."""
    out = Disout(0.5, 1).train()(torch.tensor([[[[3.0]]]]), torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()


def test_linear_scheduler_ramps_then_holds():
    module = DropBlock2d(0.3, 3)
    scheduler = LinearScheduler(module, 0.0, 0.2, 4)
    values = [module.drop_prob]
    for _ in range(6):
        scheduler.step()
        values.append(scheduler.drop_prob)
    assert values == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2])


@pytest.mark.slow
def test_torch_compile():
    """Compiled modules use the dense sampler; outputs are x * {0, scale}, DropBlock's drop fraction is
    drop_prob (per-map fractions are i.i.d. over the 128 maps: 5 SE, as in test_realised_drop_fraction), and
    eval stays the identity."""
    x = image(shape=(8, 16, 14, 14))
    torch.manual_seed(0)  # a compiled call draws from torch's default generator
    for module in (DropBlock2d(0.2, 3), Disout(0.2, 3)):
        compiled = torch.compile(module.train(), fullgraph=False)
        out = compiled(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
        if isinstance(module, DropBlock2d):
            kept = out != 0
            ratio = out[kept] / x[kept]
            assert torch.allclose(ratio, ratio[0].expand_as(ratio)) and ratio[0] > 1
            fractions = 1 - kept.double().flatten(2).mean(dim=2).flatten()
            se = fractions.std().item() / math.sqrt(fractions.numel())
            assert abs(fractions.mean().item() - 0.2) <= 5 * se, (fractions.mean().item(), se)
        module.eval()
        assert torch.equal(torch.compile(module)(x), x)


def test_linear_scheduler_progress_is_in_its_state_dict(tmp_path):
    """A checkpoint of a model with a scheduled regularizer resumes the ramp, not restarts it; the state loads
    with ``weights_only=True``."""
    scheduler = LinearScheduler(DropBlock2d(block_size=3), 0.0, 0.3, 10)
    for _ in range(5):
        scheduler.step()
    torch.save(scheduler.state_dict(), tmp_path / "state.pt")
    resumed = LinearScheduler(DropBlock2d(block_size=3), 0.0, 0.3, 10)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.steps_done == 5 and resumed.drop_prob == pytest.approx(0.15)
    resumed.step()
    assert resumed.drop_prob == pytest.approx(0.18)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n != "scheduled_dropblock"])
def test_torch_compile_takes_a_scheduled_rate_without_recompiling(name):
    """A linear schedule changes ``drop_prob`` at every step. Compiled, the rate must enter the graph as a value:
    baked in, every new rate compiled new graphs, and past torch's recompile limit parts of a call ran eagerly
    and the sparse draws they made crashed the compiled rest. Torch's first recompile (which makes the rate
    dynamic) is allowed; after it no call may add a graph."""
    from torch._dynamo.utils import counters
    module = make_all()[name].train()
    schedule = LinearScheduler(module, 0.05, 0.3, 10)
    x = image(shape=(4, 8, 12, 12))
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(module)
    graphs = []
    for _ in range(10):
        schedule.step()
        out = compiled(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[2:] == [graphs[1]] * 8, graphs
