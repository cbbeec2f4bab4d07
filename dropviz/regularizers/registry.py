"""REGISTRY: every visualisable regularizer, with what a UI needs to build its controls.

A new method is one :class:`MethodSpec` here; pages build their widgets from ``params`` and need no change.
Every entry builds a module that accepts an image-like ``(N, C, H, W)`` tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .disout import Disout
from .dropblock import DropBlock2d, ProbDropBlock2d
from .dropcluster import DropCluster
from .dropout import Dropout
from .droppath import DropPath
from .multisample import MultiSampleDropout


@dataclass(frozen=True)
class Param:
    """One constructor argument, with the range a UI offers. ``kind`` is ``float``, ``int``, ``bool`` or
    ``str``; a ``str`` parameter lists its allowed values in ``choices``."""

    name: str
    label: str
    kind: type
    default: Any
    min: float | None = None
    max: float | None = None
    step: float | None = None
    help: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class MethodSpec:
    name: str
    display_name: str
    cls: type[nn.Module]
    summary: str
    paper: str
    params: tuple[Param, ...]
    build: Callable[..., nn.Module] | None = field(default=None, repr=False)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def make(self, **overrides: Any) -> nn.Module:
        """Build the module from defaults plus ``overrides``; unknown names raise ``ValueError``."""
        unknown = set(overrides) - {p.name for p in self.params}
        if unknown:
            raise ValueError(f"{self.name} takes no parameter(s) {sorted(unknown)}; "
                             f"it takes {[p.name for p in self.params]}")
        kwargs = {**self.defaults(), **overrides}
        return (self.build or self.cls)(**kwargs)


DROP_PROB = Param("drop_prob", "drop_prob", float, 0.1, 0.0, 0.95, 0.01,
                  "Expected fraction of units dropped.")
BLOCK_SIZE = Param("block_size", "block_size", int, 5, 1, 15, 1,
                   "Edge of the dropped square; clipped to the feature map.")
SHARE_CHANNELS = Param("share_channels", "share_channels", bool, False,
                       help="One mask per sample for all channels instead of one per channel.")


def _identity_head_multisample(drop_prob: float, n_samples: int) -> MultiSampleDropout:
    """Multi-sample dropout on an identity head, so that any (N, C, H, W) tensor can be explained."""
    return MultiSampleDropout(nn.Identity(), n_samples=n_samples, drop_prob=drop_prob)


REGISTRY: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="dropout",
            display_name="Dropout",
            cls=Dropout,
            summary="Drops single units independently; the baseline every structured method improves on.",
            paper="Srivastava et al., Dropout: A Simple Way to Prevent Neural Networks from Overfitting, JMLR 2014",
            params=(DROP_PROB,),
        ),
        MethodSpec(
            name="droppath",
            display_name="DropPath",
            cls=DropPath,
            summary="Drops a whole sample's branch (stochastic depth); everything or nothing per sample.",
            paper="Huang et al., Deep Networks with Stochastic Depth, ECCV 2016; "
                  "Larsson et al., FractalNet: Ultra-Deep Neural Networks without Residuals, ICLR 2017",
            params=(DROP_PROB, Param("mode", "mode", str, "row", help="'row': one draw per sample; "
                                     "'batch': one draw for the whole batch.", choices=("row", "batch"))),
        ),
        MethodSpec(
            name="dropblock",
            display_name="DropBlock",
            cls=DropBlock2d,
            summary="Drops contiguous squares, so neighbours cannot leak the dropped information.",
            paper="Ghiasi, Lin, Le, DropBlock: A regularization method for convolutional networks, NeurIPS 2018",
            params=(DROP_PROB, BLOCK_SIZE, SHARE_CHANNELS),
        ),
        MethodSpec(
            name="disout",
            display_name="Disout",
            cls=Disout,
            summary="Replaces blocks with random distortion scaled to the activations instead of zeroing them.",
            paper="Tang et al., Beyond Dropout: Feature Map Distortion to Regularize Deep Neural Networks, AAAI 2020",
            params=(Param("drop_prob", "dist_prob", float, 0.1, 0.0, 0.95, 0.01,
                          "Expected fraction of units distorted."),
                    BLOCK_SIZE,
                    Param("alpha", "alpha", float, 5.0, 0.0, 10.0, 0.1,
                          "Intensity of the distortion (5 in the official CIFAR training script).")),
        ),
        MethodSpec(
            name="dropcluster",
            display_name="DropCluster",
            cls=DropCluster,
            summary="Drops whole clusters of correlated activations, learned from the data (a grid until fitted).",
            paper="Chen, Gautier, Aydore, DropCluster: A structured dropout for convolutional networks, "
                  "arXiv 2002.02997, 2020",
            params=(DROP_PROB, Param("n_clusters", "n_clusters", int, 16, 1, 64, 1,
                                     "Clusters per channel.")),
        ),
        MethodSpec(
            name="probdropblock",
            display_name="ProbDropBlock",
            cls=ProbDropBlock2d,
            summary="DropBlock whose blocks fall preferentially on salient (large |x|) activations.",
            paper="Zhao, Dada, Gao, Mullins, Revisiting Structured Dropout, ACML 2023",
            params=(DROP_PROB, BLOCK_SIZE),
        ),
        MethodSpec(
            name="multisample",
            display_name="Multi-Sample Dropout",
            cls=MultiSampleDropout,
            summary="Several dropout masks of the same features through one shared head; logits and losses "
                    "averaged.",
            paper="Inoue, Multi-Sample Dropout for Accelerated Training and Better Generalization, 2019",
            params=(DROP_PROB, Param("n_samples", "n_samples", int, 4, 1, 16, 1, "Dropout samples per step.")),
            build=_identity_head_multisample,
        ),
    )
}
