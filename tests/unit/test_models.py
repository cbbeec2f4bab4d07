"""Models: the published architectures, named feature layers, and regularizers where their papers put them."""
from __future__ import annotations

import pytest
import torch

from dropviz.models import MODELS, PLACEMENT, Block, ShortcutA, build_model, feature_layer_names, regularizers
from dropviz.regularizers import REGISTRY, MultiSampleDropout, Regularizer
from dropviz.regularizers.dropcluster import fit_cluster_labels


@pytest.mark.parametrize("name, millions", [("resnet20", 0.27), ("resnet56", 0.85), ("resnet18", 11.17)])
def test_parameter_counts_match_the_papers(name, millions):
    # He et al. 2016 table 6 (0.27M, 0.85M); ResNet-18 with a 3x3 stem and 10 classes: 11.17M.
    model = MODELS[name]()
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.005)


@pytest.mark.parametrize("name, shapes", [
    ("resnet20", {"stem": (16, 32, 32), "stage1": (16, 32, 32), "stage2": (32, 16, 16), "stage3": (64, 8, 8)}),
    ("resnet18", {"stem": (64, 32, 32), "stage1": (64, 32, 32), "stage2": (128, 16, 16), "stage3": (256, 8, 8),
                  "stage4": (512, 4, 4)}),
])
def test_feature_layers_name_the_stage_outputs_in_forward_order(name, shapes):
    model = MODELS[name](num_classes=7).eval()
    seen = {}
    for layer_name, module in model.feature_layers().items():
        module.register_forward_hook(lambda m, i, out, n=layer_name: seen.update({n: tuple(out.shape[1:])}))
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7)
    assert list(seen) == list(shapes) and seen == shapes


def test_block_feature_layers_list_every_residual_block():
    layers = MODELS["resnet56"]().feature_layers(blocks=True)
    assert list(layers)[:3] == ["stem", "stage1.block1", "stage1.block2"]
    assert len(layers) == 1 + 27 and all(isinstance(m, Block) for n, m in layers.items() if n != "stem")


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    x = torch.randn(2, 16, 8, 8)
    out = ShortcutA(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("name, regularizer", [("resnet20", None), ("resnet20", "dropblock"), ("resnet18", None)])
def test_a_channels_last_model_gets_channels_last_gradients(name, regularizer):
    # A contiguous (NCHW) gradient meeting channels-last activations makes every op behind it run on mixed
    # layouts, several times slower: the subsampling shortcut and the global pool must not produce one.
    model = build_model(name, regularizer=regularizer).to(memory_format=torch.channels_last).train()
    mixed = []

    def check(module_name, grad):
        if grad.shape[2:] != (1, 1) and not grad.is_contiguous(memory_format=torch.channels_last) \
                and 0 not in grad.stride():  # a broadcast gradient (the pool's) is a view of (N, C, 1, 1)
            mixed.append((module_name, grad.stride()))

    def watch(module_name, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            out.register_hook(lambda grad: check(module_name, grad))

    for module_name, module in model.named_modules():
        module.register_forward_hook(lambda m, i, out, n=module_name: watch(n, out))
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    model(x).sum().backward()
    assert mixed == []


def test_global_pool_is_the_mean():
    x = torch.randn(3, 5, 7, 6, dtype=torch.float64)
    pool = build_model("resnet20").pool
    assert torch.allclose(pool(x), x.mean(dim=(2, 3), keepdim=True), rtol=1e-12, atol=0)


def test_single_channel_input():
    assert MODELS["resnet20"](num_classes=3, in_channels=1)(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_dropout_sits_before_the_classifier_and_is_identity_in_eval():
    torch.manual_seed(0)
    plain = build_model("resnet20")
    regularized = build_model("resnet20", regularizer="dropout", params={"drop_prob": 0.5})
    regularized.load_state_dict(plain.state_dict())  # inserting a regularizer renames no parameter
    assert isinstance(regularized.head_drop, REGISTRY["dropout"].cls)
    assert [m.drop_prob for m in regularizers(regularized)] == [0.5]
    x = torch.randn(4, 3, 32, 32)
    plain.eval(), regularized.eval()
    assert torch.equal(plain(x), regularized(x))
    regularized.train(), plain.train()
    torch.manual_seed(1)
    assert not torch.allclose(plain(x), regularized(x))


def test_unknown_regularizer_and_model_are_refused_by_name():
    with pytest.raises(ValueError, match="regularizer must be one of"):
        build_model("resnet20", regularizer="nonsense")
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("resnet99")


@pytest.mark.parametrize("name", sorted(set(PLACEMENT) & set(REGISTRY) - {"multisample"}))
def test_every_placed_regularizer_trains_a_step_and_is_identity_in_eval(name):
    torch.manual_seed(0)
    model = build_model("resnet20", regularizer=name)
    assert regularizers(model) and all(isinstance(m, Regularizer) for m in regularizers(model))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss, logits = model.loss(x, y, torch.nn.functional.cross_entropy)
    loss.backward()
    assert logits.shape == (8, 10) and torch.isfinite(loss)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_droppath_rate_rises_linearly_with_depth():
    model = build_model("resnet20", regularizer="droppath", params={"drop_prob": 0.3})
    blocks = [b for stage in model.stages for b in stage]
    rates = [b.drop_residual.drop_prob for b in blocks]
    assert rates == pytest.approx([0.3 * (i + 1) / 9 for i in range(9)])  # p * l / L over 9 blocks
    assert all(isinstance(b.drop_mid, torch.nn.Identity) for b in blocks)


def test_dropblock_sits_in_the_last_two_stages_at_a_quarter_then_the_full_rate():
    model = build_model("resnet18", regularizer="dropblock", params={"drop_prob": 0.2, "block_size": 3})
    stage1, stage2, stage3, stage4 = model.stages
    assert not any(isinstance(m, Regularizer) for m in [*stage1.modules(), *stage2.modules()])
    assert [m.drop_prob for m in stage3.modules() if isinstance(m, Regularizer)] == pytest.approx([0.05] * 5)
    assert [m.drop_prob for m in stage4.modules() if isinstance(m, Regularizer)] == pytest.approx([0.2] * 5)
    # both convs of both blocks, plus the projection shortcut of each stage's first block
    assert sum(isinstance(m, Regularizer) for m in stage4.modules()) == 5


def test_disout_sits_only_in_the_last_stage():
    model = build_model("resnet20", regularizer="disout")
    counts = [sum(isinstance(m, Regularizer) for m in stage.modules()) for stage in model.stages]
    assert counts == [0, 0, 6]


def _distortion_std(disout, x, seed=0):
    return disout.distortion_std(x, torch.Generator().manual_seed(seed))


def test_disout_distortion_follows_the_weight_of_the_conv_its_output_feeds():
    """As in Tang et al.'s ResNets: after the first conv the block's second conv, on the residual branch the
    next block's first, none after the last block (0.01 fallback). The weight is read at each call, so it
    follows the optimizer and a move of the model to channels-last."""
    plain = build_model("resnet20")
    model = build_model("resnet20", regularizer="disout", params={"alpha": 2.0})
    model.load_state_dict(plain.state_dict())  # no state-dict key added
    blocks = list(model.stages.stage3)
    x = torch.randn(2, 64, 8, 8)
    for block, conv in [(blocks[0], blocks[0].conv2), (blocks[2], blocks[2].conv2)]:
        reference = REGISTRY["disout"].cls(alpha=2.0)
        reference.weight_behind = conv.weight.detach().clone()
        assert torch.equal(_distortion_std(block.drop_mid, x), _distortion_std(reference, x))
    fed = [(blocks[0].drop_residual, blocks[1].conv1), (blocks[1].drop_residual, blocks[2].conv1)]
    for disout, conv in fed:
        assert _distortion_std(disout, x).shape == (64,)
        before = _distortion_std(disout, x)
        with torch.no_grad():
            conv.weight.mul_(3.0)  # an optimizer step writes in place
        assert torch.allclose(_distortion_std(disout, x), 3 * before)
    last = _distortion_std(blocks[2].drop_residual, x)
    assert torch.allclose(last, 2.0 * 0.01 * x.std().reshape(1))
    model.to(memory_format=torch.channels_last)  # replaces the weights' storage
    with torch.no_grad():
        blocks[1].conv1.weight.zero_()
    assert torch.equal(_distortion_std(blocks[0].drop_residual, x), torch.zeros(64))


def test_disout_on_a_projection_shortcut_feeds_the_next_blocks_first_conv():
    import copy
    model = copy.deepcopy(build_model("resnet18", regularizer="disout"))  # a copy refers to its own convs
    first, second = model.stages.stage4
    shortcut_disout = first.downsample[-1]
    x = torch.randn(2, 512, 4, 4)
    with torch.no_grad():
        second.conv1.weight.zero_()
    assert torch.equal(_distortion_std(shortcut_disout, x), torch.zeros(512))
    assert torch.equal(_distortion_std(first.drop_residual, x), torch.zeros(512))
    assert _distortion_std(first.drop_mid, x).abs().min() > 0


def test_multisample_dropout_wraps_the_head_and_gives_the_training_loss():
    model = build_model("resnet20", regularizer="multisample", params={"drop_prob": 0.5, "n_samples": 4})
    assert isinstance(model.head, MultiSampleDropout) and model.head.n_samples == 4
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    ce = torch.nn.functional.cross_entropy
    torch.manual_seed(1)
    loss, logits = model.loss(x, y, ce)
    torch.manual_seed(1)
    assert loss.item() == pytest.approx(model.head.loss(model.features(x), y, ce).item())  # the head's own loss
    assert logits.shape == (6, 10)
    model.eval()
    assert torch.allclose(model(x), model.head.head(model.features(x)))  # eval: the plain head
    assert model.loss(x, y, ce)[0].item() == pytest.approx(ce(model(x), y).item())


@pytest.mark.parametrize("name, after, shape", [
    ("resnet20", "stem", (16, 32, 32)), ("resnet20", "stage2", (32, 16, 16)), ("resnet18", "stage4", (512, 4, 4))])
def test_dropcluster_sits_after_the_chosen_layer_and_gets_its_activations(name, after, shape):
    model = build_model(name, regularizer="dropcluster", dropcluster_after=after).train()
    [module] = regularizers(model)
    layer = model.feature_layers()[after]
    assert layer[-1] is module  # the last module of the stem or stage: nothing of the layer runs after it
    seen = {}
    layer[-2].register_forward_hook(lambda m, i, out: seen.update(before=out))
    module.register_forward_hook(lambda m, i, out: seen.update(received=i[0]))
    model(torch.randn(2, 3, 32, 32))
    assert tuple(seen["received"].shape[1:]) == shape and seen["received"] is seen["before"]
    assert tuple(module.labels.shape) == shape  # clusters laid out on this layer's maps
    blocks = model.feature_layers(blocks=True)
    assert module not in blocks.values() and all(isinstance(b, Block) for n, b in blocks.items() if n != "stem")


def test_dropcluster_fits_its_clusters_on_the_activations_of_its_stage():
    torch.manual_seed(0)
    model = build_model("resnet20", regularizer="dropcluster", params={"n_clusters": 4},
                        dropcluster_after="stage3").train()
    [module] = regularizers(model)
    module.refit_every = 1  # refit on every training step's batch
    seen = {}
    model.stages.stage3[-2].register_forward_hook(lambda m, i, out: seen.update(stage3=out.detach().clone()))
    model(torch.randn(6, 3, 32, 32))
    assert module.fitted and tuple(module.labels.shape) == (64, 8, 8)
    assert torch.equal(module.labels, fit_cluster_labels(seen["stage3"], 4))


@pytest.mark.parametrize("name, after, message", [
    ("dropcluster", "stage4",
     r"dropcluster_after must be one of \['stem', 'stage1', 'stage2', 'stage3'\], got 'stage4'"),
    ("dropcluster", "stage1.block1", "dropcluster_after must be one of"),
    ("dropcluster", ["stem"], "dropcluster_after must be one of"),
    ("dropblock", "stage2", "dropcluster_after applies only to the dropcluster regularizer, not dropblock"),
    (None, "stage1", "applies only to the dropcluster regularizer, not none"),
])
def test_a_bad_dropcluster_place_is_refused_naming_the_options(name, after, message):
    with pytest.raises(ValueError, match=message):
        build_model("resnet20", regularizer=name, dropcluster_after=after)


def test_feature_layer_names_are_the_places_dropcluster_may_sit():
    assert feature_layer_names("resnet56") == ("stem", "stage1", "stage2", "stage3")
    assert feature_layer_names("resnet18")[-1] == "stage4"
    with pytest.raises(ValueError, match="model must be one of"):
        feature_layer_names("vgg")
