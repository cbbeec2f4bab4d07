"""Feature extraction: hooks, a regularizer applied at exactly one layer, top-k comparison."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dropviz.features import ARCHITECTURES, FeatureModel, compare_predictions, load_feature_model, rank_channels
from dropviz.features.extract import fit_clusters, layer_effect
from dropviz.regularizers import REGISTRY


@pytest.fixture(scope="module")
def resnet20() -> FeatureModel:
    return load_feature_model("resnet20", seed=1)


@pytest.fixture(scope="module")
def image(resnet20) -> torch.Tensor:
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    return resnet20.input_tensor(pixels)


@pytest.mark.parametrize("arch, expected", [
    ("resnet20", {"stem": (16, 32, 32), "stage1.block3": (16, 32, 32), "stage2.block1": (32, 16, 16),
                  "stage3.block3": (64, 8, 8)}),
    ("resnet18", {"stem": (64, 32, 32), "stage2.block1": (128, 16, 16), "stage4.block2": (512, 4, 4)}),
    ("resnet18-imagenet", {"stem": (64, 56, 56), "stage1.block2": (64, 56, 56), "stage3.block1": (256, 14, 14),
                           "stage4.block2": (512, 7, 7)}),
])
def test_hooks_return_each_layers_shape(arch, expected):
    model = load_feature_model(arch)
    shapes = model.layer_shapes()
    assert {name: shapes[name] for name in expected} == expected
    n_blocks = {"resnet20": 9, "resnet18": 8, "resnet18-imagenet": 8}[arch]
    assert list(shapes)[0] == "stem" and len(shapes) == 1 + n_blocks
    assert all(not module._forward_hooks for module in model.model.modules()), "hooks must be removed"


def test_input_tensor_is_normalised_and_sized():
    model = load_feature_model("resnet18-imagenet")
    white = np.full((300, 400, 3), 255, dtype=np.uint8)
    x = model.input_tensor(white)
    assert x.shape == (1, 3, 224, 224)
    expected = (1 - torch.tensor(model.mean)) / torch.tensor(model.std)
    torch.testing.assert_close(x[0, :, 100, 100], expected)


def _forward_with_output(model: FeatureModel, x: torch.Tensor, layer: str, output: torch.Tensor) -> torch.Tensor:
    """The model's own forward() with ``layer``'s output replaced by ``output`` (batch widened to match)."""
    handle = model.layers[layer].register_forward_hook(lambda module, inputs, out: output)
    try:
        with torch.no_grad():
            return model.model(x.expand(output.shape[0], -1, -1, -1))
    finally:
        handle.remove()


def test_downstream_of_a_clean_activation_gives_the_models_logits(resnet20, image):
    acts, logits = resnet20.capture(image)
    for layer, activation in acts.items():
        torch.testing.assert_close(resnet20.downstream(layer, activation), logits)


def test_downstream_runs_under_the_models_lock(resnet20, image):
    """A capture in another session adds hooks to the shared model: the layers must not run meanwhile."""
    acts, _ = resnet20.capture(image, ["stem"])
    seen = []
    handle = resnet20.layers["stage3.block3"].register_forward_hook(
        lambda module, inputs, output: seen.append(resnet20.lock.locked()))
    try:
        resnet20.downstream("stem", acts["stem"])
    finally:
        handle.remove()
    assert seen == [True]


@pytest.mark.parametrize("layer", ["stem", "stage2.block1", "stage3.block3"])
def test_regularizer_is_applied_only_at_the_chosen_layer(resnet20, image, layer):
    acts, _ = resnet20.capture(image, [layer])
    bn = resnet20.model.stem[1]
    running_mean = bn.running_mean.clone()
    regularizer = REGISTRY["dropout"].make(drop_prob=0.5)
    stages, logits = resnet20.regularized(acts[layer], layer, regularizer, n_draws=4,
                                          generator=torch.Generator().manual_seed(0))
    # The regularizer sees the clean activation in every draw, and changes it.
    torch.testing.assert_close(stages["input"], acts[layer].expand(4, -1, -1, -1))
    assert not torch.equal(stages["output"], stages["input"])
    # The logits are the network's own eval-mode forward() with only this layer's output replaced.
    torch.testing.assert_close(logits, _forward_with_output(resnet20, image, layer, stages["output"]))
    assert not resnet20.model.training and torch.equal(bn.running_mean, running_mean)
    assert all(not module._forward_hooks for module in resnet20.model.modules())


def test_draws_are_independent(resnet20, image):
    acts, _ = resnet20.capture(image, ["stage1.block1"])
    stages, logits = resnet20.regularized(acts["stage1.block1"], "stage1.block1",
                                          REGISTRY["dropout"].make(drop_prob=0.5), n_draws=3,
                                          generator=torch.Generator().manual_seed(0))
    masks = stages["mask"]
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    assert not torch.equal(logits[0], logits[1])


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_drop_prob_zero_leaves_the_eval_pass_unchanged(resnet20, image, method):
    spec = REGISTRY[method]
    if "drop_prob" not in spec.defaults():
        pytest.skip(f"{method} has no drop_prob")
    acts, clean = resnet20.capture(image, ["stage2.block2"])
    _, logits = resnet20.regularized(acts["stage2.block2"], "stage2.block2", spec.make(drop_prob=0.0), n_draws=2,
                                     generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits, clean.expand(2, -1))


def test_regularized_takes_one_layer_output(resnet20, image):
    acts, _ = resnet20.capture(image, ["stem"])
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        resnet20.regularized(acts["stem"].expand(2, -1, -1, -1), "stem", REGISTRY["dropout"].make())


def test_rank_channels_orders_by_mean_absolute_activation():
    act = torch.zeros(4, 2, 2)
    act[0] = 1.0
    act[1] = -3.0
    act[3, 0, 0] = 2.0  # mean |a| 0.5
    assert rank_channels(act).tolist() == [1, 0, 3, 2]


def test_compare_predictions_keeps_clean_top_k_and_adds_newcomers():
    names = tuple("abcdefg")
    clean = torch.tensor([[5.0, 4, 3, 2, 1, 0, -9]])
    draws = torch.tensor([[5.0, 4, 3, 2, 1, 0, -9], [0, 4, 3, 2, 1, 0, 9]])
    rows, agreement = compare_predictions(clean, draws, names, k=5)
    assert [row.label for row in rows] == ["a", "b", "c", "d", "e", "g"]  # "g" entered the draws' top-5
    assert agreement == 0.5
    a = rows[0]
    assert a.low < a.mean < a.high == pytest.approx(a.clean)


def test_every_architecture_labels_its_logits():
    for name, spec in ARCHITECTURES.items():
        model = load_feature_model(name)
        _, logits = model.capture(torch.zeros(1, 3, spec.input_size, spec.input_size), [])
        assert logits.shape == (1, len(model.class_names))
        assert not model.trained and "UNTRAINED" in model.weights


def test_dropcluster_is_fitted_on_the_layers_activations_and_reused(resnet20, image):
    batch = torch.cat([image, image.flip(-1), image.flip(-2), -image])
    spec = REGISTRY["dropcluster"]
    labels = fit_clusters(resnet20, "stage3.block1", batch, spec.make(n_clusters=5))
    assert labels.shape == (64, 8, 8) and labels.dtype == torch.int64
    grid = spec.make(n_clusters=5).explain(torch.ones(1, 64, 8, 8))["clusters"][0]
    assert not torch.equal(labels, grid), "fitted clusters differ from the unfitted grid"
    regularizer = spec.make(n_clusters=5, drop_prob=0.4).set_clusters(labels)
    acts, _ = resnet20.capture(image, ["stage3.block1"])
    effect = layer_effect(resnet20, acts["stage3.block1"], "stage3.block1", regularizer, n_draws=2, seed=0)
    assert torch.equal(effect.stages["clusters"], labels)
    assert effect.logits.shape == (2, 10)
