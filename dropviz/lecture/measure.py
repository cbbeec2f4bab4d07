"""Measurements the lecture shows: how much a conv layer can still see of what a mask dropped.

Pure torch, no plotting: the figures in :mod:`dropviz.viz.lecture` draw what these return.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def spatial_autocorrelation(feature_map: torch.Tensor, max_offset: int) -> torch.Tensor:
    """Pearson correlation between a 2-D map and itself shifted by 1..``max_offset`` pixels.

    Horizontal and vertical shifts are pooled; entry ``d - 1`` is the correlation at distance ``d``.
    """
    if feature_map.dim() != 2:
        raise ValueError(f"feature_map must be 2-D (H, W), got shape {tuple(feature_map.shape)}")
    if not 1 <= max_offset < min(feature_map.shape):
        raise ValueError(f"max_offset must be in [1, {min(feature_map.shape) - 1}], got {max_offset}")
    correlations = []
    for d in range(1, max_offset + 1):
        a = torch.cat([feature_map[:, :-d].flatten(), feature_map[:-d, :].flatten()])
        b = torch.cat([feature_map[:, d:].flatten(), feature_map[d:, :].flatten()])
        correlations.append(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return torch.stack(correlations)


def neighbour_estimate(values: torch.Tensor, keep_mask: torch.Tensor, radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """What the next conv layer can reconstruct of each unit: the mean of its kept neighbours.

    ``values`` and ``keep_mask`` are (H, W); the window is ``(2 * radius + 1)^2`` without the unit itself.
    Returns ``(estimate, has_neighbour)``; where no neighbour survived, the estimate is the mean of all
    kept units (the best guess with nothing local to go on).
    """
    if values.shape != keep_mask.shape or values.dim() != 2:
        raise ValueError(f"values and keep_mask must be equal (H, W) shapes, got {tuple(values.shape)} "
                         f"and {tuple(keep_mask.shape)}")
    size = 2 * radius + 1
    kernel = torch.ones(1, 1, size, size, dtype=values.dtype)
    kernel[0, 0, radius, radius] = 0.0
    kept = keep_mask.to(values.dtype)
    total = F.conv2d((values * kept)[None, None], kernel, padding=radius)[0, 0]
    count = F.conv2d(kept[None, None], kernel, padding=radius)[0, 0]
    has_neighbour = count > 0
    fallback = (values * kept).sum() / kept.sum().clamp(min=1.0)
    estimate = torch.where(has_neighbour, total / count.clamp(min=1.0), fallback)
    return estimate, has_neighbour


def recovered_fraction(values: torch.Tensor, keep_mask: torch.Tensor, radius: int = 1) -> float:
    """Share of the dropped units' variance that their kept neighbours explain (R^2 over dropped units).

    1 means the next layer loses nothing (dropout was a no-op for it); 0 means the dropped values are gone.
    NaN when nothing was dropped.
    """
    dropped = keep_mask == 0
    if not dropped.any():
        return float("nan")
    estimate, _ = neighbour_estimate(values, keep_mask, radius)
    truth = values[dropped]
    residual = ((truth - estimate[dropped]) ** 2).mean()
    spread = ((truth - values.mean()) ** 2).mean()
    return float(1.0 - residual / spread.clamp(min=1e-12))
