"""Run REGISTRY methods on a feature map the way the pages show them: reproducibly, errors as messages.

A draw uses a CPU ``torch.Generator`` seeded with ``seed``, so the same seed gives the same mask on every
machine, and ``explain()`` (the same code path as ``forward()``) so what is shown is what trains.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from dropviz.regularizers import REGISTRY, MethodSpec

from .figures import stage_stats


def params_for(spec: MethodSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that ``spec`` takes (shared controls feed every method what it uses)."""
    names = {p.name for p in spec.params}
    return {name: value for name, value in values.items() if name in names}


def learns_structure(spec: MethodSpec) -> bool:
    """True for a method that fits its structure to data before dropping (DropCluster's clusters)."""
    return callable(getattr(spec.cls, "fit", None))


def build(spec: MethodSpec, params: Mapping[str, Any], fit_on: torch.Tensor | None = None) -> nn.Module:
    """The module of ``spec`` with ``params``; with ``fit_on``, a method that :func:`learns_structure` is
    fitted to it first (e.g. DropCluster's clusters found on the image itself instead of a grid)."""
    module = spec.make(**params_for(spec, params))
    if fit_on is not None:
        if not learns_structure(spec):
            raise ValueError(f"{spec.display_name} has nothing to fit")
        module.fit(fit_on)
    return module


def run(module: nn.Module, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The ``explain()`` stages of ``module`` on ``x`` with a CPU generator seeded with ``seed``."""
    with torch.no_grad():
        return module.explain(x, torch.Generator().manual_seed(int(seed)))


def draw(spec: MethodSpec, params: Mapping[str, Any], x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The ``explain()`` stages of ``spec`` built with ``params`` on ``x``, seeded with ``seed``.

    Raises the op's ``ValueError`` for a parameter combination it rejects.
    """
    return run(build(spec, params), x, seed)


def draw_all(names: Iterable[str], params: Mapping[str, Any], x: torch.Tensor, seed: int
             ) -> dict[str, dict[str, torch.Tensor] | str]:
    """:func:`draw` for each REGISTRY name, keyed by display name; a rejected setting gives its message."""
    results: dict[str, dict[str, torch.Tensor] | str] = {}
    for name in names:
        spec = REGISTRY[name]
        try:
            results[spec.display_name] = draw(spec, params, x, seed)
        except ValueError as err:
            results[spec.display_name] = str(err)
    return results


def comparison_rows(names: Iterable[str], results: Mapping[str, dict[str, torch.Tensor] | str],
                    params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per method: the parameters it used, its numbers from :func:`stage_stats`, or its error."""
    rows = []
    for name in names:
        spec = REGISTRY[name]
        used = params_for(spec, params)
        stages = results[spec.display_name]
        row: dict[str, Any] = {"method": spec.display_name, "parameters": ", ".join(f"{k}={v}" for k, v in used.items())}
        if isinstance(stages, str):
            row["error"] = stages
        else:
            row.update(stage_stats(stages, used.get("drop_prob")))
        rows.append(row)
    return rows
