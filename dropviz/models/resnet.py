"""ResNets for 32x32 images, with named stage/block outputs for feature-map hooks.

* ``resnet20`` / ``resnet56``: the CIFAR ResNets of He et al. 2016 (Deep Residual Learning, section 4.2):
  a 3x3 stem with 16 filters, three stages of ``n`` basic blocks with 16/32/64 filters on 32/16/8 maps,
  option-A (parameter-free, zero-padded) shortcuts, global average pooling and a linear classifier;
  depth ``6n + 2``: 0.27M and 0.85M parameters.
* ``resnet18``: torchvision's ResNet-18 with the ImageNet stem (7x7 stride 2 and max-pool) replaced by a
  3x3 stride-1 conv, the usual adaptation to 32x32 inputs (11.2M parameters).

All three use :class:`Block`, torchvision's ``BasicBlock`` with empty places for regularizers, so inserting
one (:mod:`dropviz.models.placement`) never renames a parameter: a checkpoint of a regularized model loads
into the plain one (Multi-Sample Dropout, which wraps the head, is the exception).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from dropviz.regularizers import Regularizer
from dropviz.regularizers.fused import drop_add_relu, relu_then_drop


class ShortcutA(nn.Module):
    """Option A of He et al. 2016: subsample by the stride and zero-pad the new channels (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x[:, :, ::s, ::s] as a 1x1 pooling: the slice's backward builds a contiguous (NCHW) gradient, and a
        # channels-last model then runs every op of the stage before it on mixed layouts (several times slower)
        x = F.avg_pool2d(x, 1, self.stride)
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))


class Block(BasicBlock):
    """torchvision's basic block (conv-bn-relu-conv-bn, plus shortcut, relu) with two regularizer places,
    identity until a regularizer is inserted: ``drop_mid`` after the first conv-bn-relu and ``drop_residual``
    on the residual branch just before the addition.

    A regularizer with a sparse draw (DropBlock, ProbDropBlock and Disout training on the CPU) is applied
    fused into the ReLU, the second conv and the addition (:mod:`dropviz.regularizers.fused`): the same
    result without the two passes over the activation its own op takes. ``fuse_regularizers = False``
    calls the modules instead."""

    fuse_regularizers = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop_mid = nn.Identity()
        self.drop_residual = nn.Identity()

    def _fuses(self, regularizer: nn.Module, x: torch.Tensor) -> bool:
        return self.fuse_regularizers and isinstance(regularizer, Regularizer) and regularizer.has_sparse_draw(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x))
        if self._fuses(self.drop_mid, out):
            out, scale = relu_then_drop(out, self.drop_mid)
            out = self.conv2._conv_forward(out, self.conv2.weight * scale, self.conv2.bias)
        else:
            out = self.conv2(self.drop_mid(self.relu(out)))
        out = self.bn2(out)
        shortcut = x if self.downsample is None else self.downsample(x)  # either way before the residual's draw
        if self._fuses(self.drop_residual, out):
            return drop_add_relu(out, shortcut, self.drop_residual)
        return self.relu(self.drop_residual(out) + shortcut)


class GlobalAvgPool(nn.Module):
    """``(N, C, H, W) -> (N, C, 1, 1)`` means. As a sum, whose backward broadcasts the gradient (a view):
    ``nn.AdaptiveAvgPool2d(1)``'s builds a contiguous (NCHW) one, slow for a channels-last model behind it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(2, 3), keepdim=True) * (1.0 / (x.shape[2] * x.shape[3]))


class ResNet(nn.Module):
    """``stem -> stages -> global average pool -> head``.

    The pooled features pass ``head_drop`` (identity unless a regularizer sits there) as an ``(N, C, 1, 1)``
    tensor, the shape every regularizer accepts; the head flattens before its linear layer.
    """

    def __init__(self, stem: nn.Sequential, stages: list[nn.Sequential], num_features: int, num_classes: int):
        super().__init__()
        self.stem = stem
        self.stages = nn.Sequential(OrderedDict((f"stage{i}", s) for i, s in enumerate(stages, 1)))
        self.pool = GlobalAvgPool()
        self.head_drop = nn.Identity()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_drop(self.pool(self.stages(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss and logits. A head with its own loss (Multi-Sample Dropout averages the loss over
        its samples) computes it; otherwise ``loss_fn(logits, y)``."""
        if hasattr(self.head, "loss"):
            features = self.features(x)
            return self.head.loss(features, y, loss_fn), self.head(features)
        logits = self(x)
        return loss_fn(logits, y), logits

    def feature_layers(self, blocks: bool = False) -> dict[str, nn.Module]:
        """Modules whose outputs are the named feature maps, in forward order: ``stem``, ``stage1``, ...;
        with ``blocks=True`` every residual block instead of whole stages (``stage1.block1``, ...; a
        regularizer appended to a stage is not a block)."""
        layers: dict[str, nn.Module] = {"stem": self.stem}
        for stage_name, stage in self.stages.named_children():
            if blocks:
                residual = [b for b in stage if isinstance(b, BasicBlock)]
                layers.update({f"{stage_name}.block{j}": b for j, b in enumerate(residual, 1)})
            else:
                layers[stage_name] = stage
        return layers


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_stem(in_channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """He et al. 2016's CIFAR ResNet of ``depth = 6n + 2`` layers."""
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    in_planes, stages = 16, []
    for i, planes in enumerate((16, 32, 64)):
        blocks = []
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            shortcut = ShortcutA(in_planes, planes, stride) if stride != 1 or in_planes != planes else None
            blocks.append(Block(in_planes, planes, stride, shortcut))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    model = ResNet(_conv_stem(in_channels, 16), stages, 64, num_classes)
    _init_weights(model)
    return model


def resnet18(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""
    tv = torchvision.models.ResNet(Block, [2, 2, 2, 2], num_classes=num_classes)
    model = ResNet(_conv_stem(in_channels, 64), [tv.layer1, tv.layer2, tv.layer3, tv.layer4], 512, num_classes)
    model.head[1] = tv.fc
    _init_weights(model.stem)
    return model


MODELS = {
    "resnet20": lambda num_classes=10, in_channels=3: cifar_resnet(20, num_classes, in_channels),
    "resnet56": lambda num_classes=10, in_channels=3: cifar_resnet(56, num_classes, in_channels),
    "resnet18": resnet18,
}
