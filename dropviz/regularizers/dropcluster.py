"""DropCluster (Chen, Gautier, Aydore, "DropCluster: A structured dropout for convolutional networks",
arXiv 2002.02997, 2020)."""
from __future__ import annotations

import math

import torch

from . import _blocks
from . import functional as F_
from ._checks import check_drop_prob, check_floating, check_int, check_positive_int, check_rank
from .base import Regularizer


def grid_labels(height: int, width: int, n_clusters: int) -> torch.Tensor:
    """A regular grid of at most ``n_clusters`` rectangular cells on an ``height x width`` map, shape (H, W).

    Uses the factorisation ``rows * cols`` of the largest feasible count whose cells are closest to square.
    """
    for count in range(min(n_clusters, height * width), 0, -1):
        shapes = [(r, count // r) for r in range(1, count + 1)
                  if count % r == 0 and r <= height and count // r <= width]
        if shapes:
            rows, cols = min(shapes, key=lambda rc: abs(math.log((height / rc[0]) / (width / rc[1]))))
            row = torch.arange(height) * rows // height
            col = torch.arange(width) * cols // width
            return row[:, None] * cols + col[None, :]
    raise AssertionError("unreachable: count 1 is always feasible")


def fit_cluster_labels(activations: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Per channel, Ward agglomeration of the spatial positions of ``activations`` (N, C, H, W) under grid
    connectivity (scikit-learn's FeatureAgglomeration + grid_to_graph): spatially connected clusters of
    positions whose activations vary together over the N samples. Returns labels (C, H, W) on the CPU."""
    from sklearn.cluster import FeatureAgglomeration
    from sklearn.feature_extraction.image import grid_to_graph

    n, channels, height, width = activations.shape
    data = activations.detach().to("cpu", torch.float64).reshape(n, channels, height * width).numpy()
    connectivity = grid_to_graph(height, width)
    count = min(n_clusters, height * width)
    labels = []
    for channel in range(channels):
        model = FeatureAgglomeration(n_clusters=count, connectivity=connectivity, linkage="ward")
        labels.append(torch.from_numpy(model.fit(data[:, channel]).labels_.astype("int64")))
    return torch.stack(labels).reshape(channels, height, width)


class DropCluster(Regularizer):
    """DropCluster: drops whole clusters of correlated, spatially connected activations.

    Following the paper: clusters of correlated features are found in a conv layer's outputs from the data,
    with spatial structure; they are learned from activations seen during training and updated as training
    goes on, so they adapt to the data and the weights; each iteration drops whole clusters at random.

    Our choices (the paper's code is not public):
    - Clustering: per channel, the spatial positions are grouped by Ward agglomeration with 4-neighbour grid
      connectivity (scikit-learn FeatureAgglomeration with ``grid_to_graph``), so every cluster is a
      spatially connected region whose activations vary together; fitted on the CPU on a buffer of the last
      ``buffer_size`` training samples, every ``refit_every`` training steps (0: never automatically) and on
      demand with :meth:`fit` (or taken from another fit with :meth:`set_clusters`). Before the first fit
      (or when the input's shape changes) the clusters are a regular grid of ``n_clusters`` cells (fewer
      when the map is smaller or ``n_clusters`` does not factor onto it).
    - Dropping: every (sample, channel, cluster) is dropped independently with probability ``drop_prob``;
      since the clusters partition the map, the expected dropped fraction is exactly ``drop_prob``.
    - Output ``x * mask / kept_fraction`` as DropBlock (guarded when everything is dropped).

    ``explain`` adds ``"clusters"`` (label map, (N, C, H, W) int64) and ``"dropped_clusters"``
    ((N, C, n_clusters), 1 = dropped) before ``"mask"``.
    """

    def __init__(self, drop_prob: float = 0.1, n_clusters: int = 16, refit_every: int = 1000,
                 buffer_size: int = 256):
        super().__init__()
        self.drop_prob = check_drop_prob(drop_prob)
        self.n_clusters = check_positive_int(n_clusters, "n_clusters")
        self.refit_every = check_int(refit_every, "refit_every", 0)
        self.buffer_size = check_positive_int(buffer_size, "buffer_size")
        self.register_buffer("labels", None)
        self.fitted = False
        self.steps = 0
        self._recent: list[torch.Tensor] = []

    def fit(self, activations: torch.Tensor) -> None:
        """Cluster on ``activations`` (N, C, H, W) now (runs on the CPU; takes a moment per channel)."""
        check_rank(activations, (4,), "(N, C, H, W)")
        self.set_clusters(fit_cluster_labels(activations, self.n_clusters).to(activations.device))

    def set_clusters(self, labels: torch.Tensor) -> DropCluster:
        """Use ``labels`` (C, H, W), integers in [0, n_clusters), as fitted clusters, e.g. ones another
        DropCluster found with :meth:`fit` (a refit takes seconds). As after a fit, an input of another
        (C, H, W) resets the clusters to the grid. Returns the module."""
        labels = torch.as_tensor(labels)
        if labels.dim() != 3 or labels.numel() == 0:
            raise ValueError(f"labels must be a non-empty (C, H, W) tensor, got shape {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer cluster ids, got dtype {labels.dtype}")
        low, high = labels.min().item(), labels.max().item()
        if low < 0 or high >= self.n_clusters:
            raise ValueError(f"labels must be in [0, n_clusters) = [0, {self.n_clusters}), "
                             f"got values from {low} to {high}")
        self.labels = labels.to(torch.int64)
        self.fitted = True
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The label map is created lazily; give it a shape before the default loader copies into it.
        # A state saved before the first application has none: then neither has the module afterwards.
        labels = state_dict.get(prefix + "labels")
        self.labels = None if labels is None else torch.empty_like(labels)
        self.fitted = labels is not None  # loaded clusters are used as they are, like fitted ones
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _labels_for(self, x: torch.Tensor) -> torch.Tensor:
        channels, height, width = x.shape[1:]
        if self.labels is None or tuple(self.labels.shape) != (channels, height, width):
            grid = grid_labels(height, width, self.n_clusters)
            self.labels = grid.to(x.device).expand(channels, -1, -1).contiguous()
            self.fitted = False
            self._recent.clear()
        return self.labels.to(x.device)

    @torch.compiler.disable  # a step count in the graph would recompile it at every step
    def _record(self, x: torch.Tensor) -> None:
        """Keep the samples of the steps just before a refit, then refit (only during training)."""
        self.steps += 1
        if self.refit_every == 0:
            return
        batches_needed = math.ceil(self.buffer_size / max(x.shape[0], 1))
        if self.refit_every - (self.steps - 1) % self.refit_every <= batches_needed:
            self._recent.append(x.detach().to("cpu", torch.float32))
        if self.steps % self.refit_every == 0 and self._recent:
            recent = torch.cat(self._recent)[-self.buffer_size:]
            self._recent.clear()
            self.fit(recent.to(x.device))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_floating(x)
        if not self.training or x.numel() == 0:
            return x
        check_rank(x, (4,), "(N, C, H, W)")
        self._labels_for(x)
        self._record(x)
        if self.drop_prob == 0.0:
            return x
        return self.stages(x, generator, explain=False)["output"]

    def stages(self, x, generator, explain):
        check_rank(x, (4,), "(N, C, H, W)")
        labels = self._labels_for(x)
        draw, dropped_clusters = F_.cluster_draw(x, labels, self.n_clusters, self.drop_prob, generator)
        out = _blocks.apply_draw(x, draw)
        if not explain:
            return {"output": out}
        return {"input": x, "clusters": labels.expand(x.shape[0], -1, -1, -1),
                "dropped_clusters": dropped_clusters, "mask": _blocks.keep_mask(draw, x), "output": out}

    def extra_repr(self) -> str:
        return (f"drop_prob={self.drop_prob}, n_clusters={self.n_clusters}, refit_every={self.refit_every}, "
                f"fitted={self.fitted}")
