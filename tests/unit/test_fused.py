"""Sparse draws and their fused application in the ResNet blocks: the same numbers as the modules."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dropviz.models import Block, build_model
from dropviz.models import resnet
from dropviz.regularizers import (Disout, DropBlock2d, DropBlock3d, DropPath, Dropout, ProbDropBlock2d, Regularizer,
                                  _blocks)
from dropviz.regularizers.fused import drop_add_relu, relu_then_drop


SPARSE_DRAWERS = {
    "dropblock": (lambda: DropBlock2d(0.2, 3), (4, 6, 12, 12)),
    "dropblock3d": (lambda: DropBlock3d(0.2, 3), (2, 3, 6, 8, 8)),
    "probdropblock": (lambda: ProbDropBlock2d(0.2, 3), (4, 6, 12, 12)),
    "disout": (lambda: Disout(0.2, 3), (4, 6, 12, 12)),
}


def _written(x: torch.Tensor, drop) -> torch.Tensor:
    """``x`` with ``drop.values`` (or 0) at its storage offsets."""
    out = x.clone()  # keeps x's memory format, which the offsets refer to
    storage = out.as_strided((out.numel(),), (1,))
    storage[_blocks.unit_offsets(drop.dropped)] = 0.0 if drop.values is None else drop.values
    return out


def _applied(x: torch.Tensor, drop) -> torch.Tensor:
    """``scale * x`` with ``drop.values`` (or 0) at its storage offsets: what a sparse draw stands for."""
    return _written(x, drop) * drop.scale


@pytest.mark.parametrize("name", SPARSE_DRAWERS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_sparse_draw_is_the_forward_draw(name, channels_last):
    make, shape = SPARSE_DRAWERS[name]
    module = make().train()
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    assert module.has_sparse_draw(x)
    drop = module.sparse_draw(x, torch.Generator().manual_seed(3))
    assert drop.dropped.numel() > 0 and drop.scale > 1.0
    assert (drop.values is None) == (name != "disout")
    expected = module(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(_applied(x, drop), expected, rtol=1e-6, atol=1e-6)


def test_only_sparse_cpu_draws_are_offered():
    x = torch.randn(4, 6, 32, 32)
    assert DropBlock2d(0.1, 5).train().has_sparse_draw(x)
    refused = [
        DropBlock2d(0.1, 5).eval(),                  # identity in eval mode
        DropBlock2d(0.0, 5).train(),                 # and at rate 0
        DropBlock2d(0.1, 5, share_channels=True),    # one mask per sample: not offsets into x
        DropBlock2d(0.9, 7).train(),                 # blocks cover most of the map: the dense sampler
        Disout(0.9, 7).train(),
        Dropout(0.1).train(), DropPath(0.1).train(),  # methods without a sparse draw
    ]
    for module in refused:
        assert not module.has_sparse_draw(x), module
        with pytest.raises(ValueError, match="no sparse draw"):
            module.sparse_draw(x)
    assert not DropBlock2d(0.1, 5).train().has_sparse_draw(x.to("meta"))  # off the CPU


def _step(model: nn.Module, seed: int, layout: torch.memory_format) -> tuple[torch.Tensor, dict, dict]:
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(6) % 10
    torch.manual_seed(seed)  # the draws come from the global generator, as in training
    loss, logits = model.loss(x.contiguous(memory_format=layout), y, nn.CrossEntropyLoss())
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    return logits.detach(), grads, {k: v.float() for k, v in model.state_dict().items()}


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    # In float64 the two op orders differ by rounding, about 1e-16 relative per op; through twenty layers that
    # stays far below 1e-9 of each tensor's largest value. (In float32 a unit within rounding of a ReLU's
    # threshold can fall on the other side, which legitimately moves a gradient by percents.) One block
    # drawn differently moves logits and gradients by far more.
    return bool((a - b).abs().max() <= 1e-9 * b.abs().max().clamp_min(1e-6))


@pytest.mark.parametrize("name", ["dropblock", "probdropblock", "disout"])
@pytest.mark.parametrize("model_name, layout", [("resnet20", torch.channels_last), ("resnet18", torch.channels_last),
                                                ("resnet20", torch.contiguous_format)])
def test_fused_blocks_train_exactly_as_the_modules(name, model_name, layout, monkeypatch):
    """Fused (the default) against ``fuse_regularizers = False``, from the same weights and random state, in
    float64: the same logits, parameter gradients and batch-norm statistics. A different draw does differ."""
    fused = build_model(model_name, regularizer=name, params={"drop_prob": 0.1}).to(
        torch.float64, memory_format=layout).train()
    unfused, other_draw = copy.deepcopy(fused), copy.deepcopy(fused)
    for model in (unfused, other_draw):
        for block in model.modules():
            if isinstance(block, Block):
                block.fuse_regularizers = False
    calls = []
    for op in ("relu_then_drop", "drop_add_relu"):
        original = getattr(resnet, op)
        monkeypatch.setattr(resnet, op, lambda *a, _op=op, _f=original: calls.append(_op) or _f(*a))
    results = _step(fused, seed=1, layout=layout)
    assert {"relu_then_drop", "drop_add_relu"} <= set(calls)
    monkeypatch.undo()
    reference, different = _step(unfused, seed=1, layout=layout), _step(other_draw, seed=2, layout=layout)
    assert _close(results[0], reference[0]) and not _close(different[0], reference[0])
    for mine, theirs, others in zip(results[1:], reference[1:], different[1:]):
        assert mine.keys() == theirs.keys()
        for key in theirs:
            assert _close(mine[key], theirs[key]), key
        assert not all(_close(others[key], theirs[key]) for key in theirs)


@pytest.mark.parametrize("name", ["probdropblock", "disout"])
def test_fused_blocks_keep_their_gradients_under_saved_tensor_hooks(name):
    """Saved-tensor hooks (activation offloading, checkpointing) pack a tensor when autograd saves it, so what
    a fused op writes after that would be missing from the gradient's inputs: a copy at packing time stands in
    for them. The gradients stay the modules'."""
    fused = build_model("resnet20", regularizer=name, params={"drop_prob": 0.1}).to(
        torch.float64, memory_format=torch.channels_last).train()
    unfused = copy.deepcopy(fused)
    for block in unfused.modules():
        if isinstance(block, Block):
            block.fuse_regularizers = False
    with torch.autograd.graph.saved_tensors_hooks(lambda saved: saved.clone(), lambda packed: packed):
        _, grads, _ = _step(fused, seed=1, layout=torch.channels_last)
    _, reference, _ = _step(unfused, seed=1, layout=torch.channels_last)
    for key in reference:
        assert _close(grads[key], reference[key]), key


def test_drop_add_relu_refuses_a_branch_whose_output_its_producer_needs():
    """The branch's dropped units are written in place; autograd stops a producer that saved its output."""
    z = torch.randn(2, 3, 8, 8, requires_grad=True)
    branch = torch.sigmoid(z)  # sigmoid's backward reads its output
    module = DropBlock2d(0.2, 3).train()
    out = drop_add_relu(branch, torch.randn(2, 3, 8, 8), module)
    with pytest.raises(RuntimeError, match="inplace"):
        out.sum().backward()


def test_fused_ops_refuse_tensors_that_are_not_dense():
    """A draw's units are storage offsets in the dense layout of ``x``'s shape. On a strided view they would
    land on other units, some outside the view, so no sparse draw is offered for it and ``drop_add_relu``
    refuses such a branch; the module path (which writes a new tensor) gives the same output for the view
    as for a dense copy."""
    module = DropBlock2d(0.2, 3).train()
    wide = torch.randn(4, 6, 12, 16)
    view = wide[..., :12]
    assert not module.has_sparse_draw(view) and module.has_sparse_draw(view.contiguous())
    with pytest.raises(ValueError, match="no sparse draw"):
        relu_then_drop(wide.clone()[..., :12], module)
    assert torch.equal(module(view, torch.Generator().manual_seed(1)),
                       module(view.contiguous(), torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="dense"):
        drop_add_relu(torch.randn(4, 6, 12, 12).transpose(2, 3), torch.randn(4, 6, 12, 12), module)
    assert not module.has_sparse_draw(torch.zeros(0, 6, 12, 12))


@pytest.mark.parametrize("name", SPARSE_DRAWERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_a_sparse_drop_in_place_is_the_sparse_draw_written(name, dtype, channels_last, relu):
    """``sparse_drop_`` writes into ``x`` exactly the units (and values) ``sparse_draw`` gives from the same
    random numbers, with the same scale: ProbDropBlock in one compiled pass for float32 and float64, every
    other case by the draw and a write. On 1 and 3 threads: the pass splits the samples among them.
    With ``relu`` it is the draw for ``relu(x)`` (ProbDropBlock's salience read as ``max(x, 0)``; half of
    ``x`` is negative, where ``|x|`` would seed): ``relu`` of what it writes is ``relu(x)`` with that draw's
    zeros. Disout, whose values a ReLU would change, refuses it."""
    make, shape = SPARSE_DRAWERS[name]
    module = make().train()
    x = torch.randn((16, *shape[1:]), dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    if relu and module.distorts:
        with pytest.raises(ValueError, match="ReLU"):
            module.sparse_drop_(x.clone(), relu=True)
        return
    drawn_on = x.relu() if relu else x
    before = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            drop = module.sparse_draw(drawn_on, torch.Generator().manual_seed(5))
            written = x.clone()
            assert written.stride() == x.stride()
            in_place = module.sparse_drop_(written, torch.Generator().manual_seed(5), relu=relu)
            assert in_place.scale == drop.scale and drop.dropped.numel() > 0
            assert torch.equal(_blocks.unit_offsets(in_place.dropped), _blocks.unit_offsets(drop.dropped))
            assert torch.equal(written.relu() if relu else written, _written(drawn_on, drop))
    finally:
        torch.set_num_threads(before)


def test_the_default_in_place_draw_before_a_relu_is_the_compiled_one():
    """``Regularizer.sparse_drop_``, the default for methods without a pass of their own, draws for
    ``relu(x)`` on a copy; DropBlock's and ProbDropBlock's compiled passes give the same units and writes."""
    x = torch.randn(16, 6, 12, 12)
    for module in (DropBlock2d(0.2, 3).train(), ProbDropBlock2d(0.2, 3).train()):
        by_default, compiled = x.clone(), x.clone()
        default = Regularizer.sparse_drop_(module, by_default, torch.Generator().manual_seed(2), relu=True)
        own = module.sparse_drop_(compiled, torch.Generator().manual_seed(2), relu=True)
        assert default.scale == own.scale
        assert torch.equal(_blocks.unit_offsets(default.dropped), _blocks.unit_offsets(own.dropped))
        assert torch.equal(by_default, compiled) and (compiled != x).any()


def test_blocks_are_written_in_place_only_where_they_can_be():
    """The in-place forms write a sparse draw of one mask per channel into a dense CPU tensor, and refuse
    anything else: a draw that would be dense, one mask per sample, a strided view. The modules refuse as
    ``sparse_draw`` does where they have no sparse draw."""
    from dropviz.regularizers import functional as F_
    x = torch.randn(4, 6, 12, 12)
    for draw in (F_.drop_block_draw, F_.prob_drop_block_draw):
        with pytest.raises(ValueError, match="drawn sparsely"):
            draw(x, 0.9, 7, in_place=True)  # the blocks would cover most of the map: the dense sampler's case
    with pytest.raises(ValueError, match="not written in place"):
        F_.drop_block_draw(x, 0.2, 3, share_channels=True, in_place=True)
    for draw in (F_.drop_block_draw, F_.prob_drop_block_draw):
        with pytest.raises(ValueError, match="dense CPU tensor"):
            draw(torch.randn(4, 6, 12, 16)[..., :12], 0.2, 3, in_place=True)
    for module in (DropBlock2d(0.2, 3), ProbDropBlock2d(0.2, 3)):
        with pytest.raises(ValueError, match="no sparse draw"):
            module.eval().sparse_drop_(x)
