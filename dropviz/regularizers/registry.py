"""REGISTRY: every visualisable regularizer, with what a UI needs to build its controls.

A new method is one :class:`MethodSpec` here; pages build their widgets from ``params`` and need no change.
Every entry builds a module that accepts an image-like ``(N, C, H, W)`` tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .dropout import Dropout


@dataclass(frozen=True)
class Param:
    """One constructor argument, with the range a UI offers. ``kind`` is ``float``, ``int`` or ``bool``."""

    name: str
    label: str
    kind: type
    default: Any
    min: float | None = None
    max: float | None = None
    step: float | None = None
    help: str = ""


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
    )
}
