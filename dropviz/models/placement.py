"""Insert a regularizer into a :class:`~dropviz.models.resnet.ResNet` where its paper puts it.

=================  ==============================================================================
method             where (and at what rate; ``p`` is the chosen ``drop_prob``)
=================  ==============================================================================
dropout            on the pooled features before the classifier (the usual place in a ResNet)
multisample        the classifier head runs ``n_samples`` times with dropout, losses averaged
                   (Inoue 2019)
droppath           on every residual branch, rate rising linearly with depth ``p * l / L``
                   (stochastic depth, Huang et al. 2016)
dropblock,         after both convs of every block of the last two stages and on projection
probdropblock      shortcuts; ``p / 4`` in the second-to-last stage, ``p`` in the last (Ghiasi et al.
                   2018 put it in ResNet-50 groups 3 and 4 with these rates)
disout             after both convs of every block of the last stage (Tang et al. 2020, CIFAR ResNets),
                   each fed the conv its output goes to (its distortion scales with that weight)
dropcluster        after the stem conv (Chen et al. 2020 drop clusters of correlated early features), or
                   after the stage ``dropcluster_after`` names (``stage1``, ...: a feature-layer name);
                   its clusters are fitted on the activations of the layer it sits after
=================  ==============================================================================
"""
from __future__ import annotations

from typing import Any

from torch import nn

from dropviz.regularizers import REGISTRY, Disout, MultiSampleDropout, Regularizer

from .resnet import ResNet, ShortcutA

PLACEMENT = {
    "dropout": "head",
    "multisample": "head",
    "droppath": "residual branches",
    "dropblock": "last two stages",
    "probdropblock": "last two stages",
    "disout": "last stage",
    "dropcluster": "stem, or a chosen stage",
}
DROPCLUSTER_DEFAULT = "stem"


def check_dropcluster_after(layer_names, regularizer: str | None, dropcluster_after: str) -> None:
    """Refuse a ``dropcluster_after`` that is not one of ``layer_names`` (a model's feature-layer names), or
    that moves anything but DropCluster away from its place."""
    names = list(layer_names)  # a list: an unhashable value is refused like any other
    if dropcluster_after not in names:
        raise ValueError(f"dropcluster_after must be one of {names}, got {dropcluster_after!r}")
    if dropcluster_after != DROPCLUSTER_DEFAULT and regularizer != "dropcluster":
        raise ValueError(f"dropcluster_after applies only to the dropcluster regularizer, not {regularizer or 'none'}; "
                         f"leave it at {DROPCLUSTER_DEFAULT!r}")


def insert_regularizer(model: ResNet, name: str, params: dict[str, Any] | None = None,
                       dropcluster_after: str = DROPCLUSTER_DEFAULT) -> ResNet:
    """Insert ``REGISTRY[name]`` built with ``params`` into ``model`` (in place) and return it.

    ``dropcluster_after``: the feature layer (``stem``, ``stage1``, ...) DropCluster is appended to."""
    if name not in PLACEMENT or name not in REGISTRY:
        available = sorted(set(PLACEMENT) & set(REGISTRY))
        raise ValueError(f"regularizer must be one of {available} or none, got {name!r}")
    layers = model.feature_layers()
    check_dropcluster_after(layers, name, dropcluster_after)
    spec = REGISTRY[name]
    params = {**spec.defaults(), **(params or {})}
    drop_prob = params["drop_prob"]

    def make(rate: float) -> nn.Module:
        return spec.make(**{**params, "drop_prob": rate})

    where = PLACEMENT[name]
    blocks = [b for stage in model.stages for b in stage]
    if name == "multisample":
        model.head = MultiSampleDropout(model.head, n_samples=params["n_samples"], drop_prob=drop_prob)
    elif where == "head":
        model.head_drop = make(drop_prob)
    elif where == "residual branches":
        for depth, block in enumerate(blocks, 1):
            block.drop_residual = make(drop_prob * depth / len(blocks))
    elif name == "dropcluster":  # the stem and every stage are nn.Sequential: it becomes their last module
        layers[dropcluster_after].append(make(drop_prob))
    else:
        stages = list(model.stages)
        rates = [drop_prob / 4, drop_prob] if where == "last two stages" else [drop_prob]
        for stage, rate in zip(stages[-len(rates):], rates):
            for block in stage:
                block.drop_mid, block.drop_residual = make(rate), make(rate)
                if block.downsample is not None and not isinstance(block.downsample, ShortcutA):
                    block.downsample.append(make(rate))  # projection shortcut, as Ghiasi et al. do
        if name == "disout":
            _connect_convs_behind(blocks)
    return model


def _connect_convs_behind(blocks: list[nn.Module]) -> None:
    """Give every Disout the conv its output feeds (its distortion scales with that conv's weight, as in Tang
    et al.'s ResNets): after the first conv, the block's second; on the residual branch and the shortcut, the
    next block's first; none after the last block (the classifier is no conv: the 0.01 fallback)."""
    for block, following in zip(blocks, [*blocks[1:], None]):
        next_conv = None if following is None else following.conv1
        shortcut = [] if block.downsample is None else list(block.downsample.children())
        for place, conv in [(block.drop_mid, block.conv2), (block.drop_residual, next_conv),
                            *((module, next_conv) for module in shortcut)]:
            if isinstance(place, Disout):
                place.feeds(conv)


def regularizers(model: nn.Module) -> list[nn.Module]:
    """Every inserted regularizer (the modules a drop-rate schedule steps)."""
    return [m for m in model.modules() if isinstance(m, Regularizer)]
