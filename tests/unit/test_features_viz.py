"""Figures of the feature-map page: one image per grid, the channel in the hover, top-k bars."""
from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

from dropviz.features import Prediction
from dropviz.viz.features import before_after, cluster_mosaic, tile, topk_bars


def _pixels(image_trace) -> np.ndarray:
    data = base64.b64decode(image_trace.source.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)))


def test_tile_lays_channels_out_row_by_row_with_gaps():
    maps = torch.arange(5, dtype=torch.float32).view(5, 1, 1).expand(5, 2, 2)
    image = tile(maps, [4, 0, 2], columns=2)
    assert image.shape == (2 * 2 + 1, 2 * 2 + 1)
    assert (image[:2, :2] == 4).all() and (image[:2, 3:] == 0).all() and (image[3:, :2] == 2).all()
    assert np.isnan(image[2]).all() and np.isnan(image[:, 2]).all() and np.isnan(image[3:, 3:]).all()


def test_before_after_is_two_images_and_one_hover_marker_per_channel():
    clean = torch.rand(64, 8, 8, generator=torch.Generator().manual_seed(0))
    after = clean.clone()
    after[5] = 0  # one channel dropped entirely
    channels = [5, 1, 2, 3]
    figures = before_after(clean, after, channels, width=370)
    assert len(figures) == 2  # clean, then after
    images = [t for f in figures for t in f.data if t.type == "image"]
    markers = [t for f in figures for t in f.data if t.type == "scatter"]
    assert len(images) == 2 and len(markers) == 2
    # Each figure is as tall as its square mosaic at the width left beside the colour bar, plus its title.
    assert [f.layout.height for f in figures] == [(370 - 90) + 26 + 10] * 2
    assert [int(c) for c, _ in markers[0].customdata] == channels
    assert "channel %{customdata[0]}" in markers[0].hovertemplate
    before, dropped = _pixels(images[0]), _pixels(images[1])
    assert before.shape == dropped.shape
    zoom = before.shape[0] // (2 * 8 + 1)
    first_tile = (slice(0, 8 * zoom), slice(0, 8 * zoom))
    assert not np.array_equal(before[first_tile], dropped[first_tile])  # channel 5 changed...
    second_tile = (slice(0, 8 * zoom), slice(9 * zoom, 17 * zoom))
    assert np.array_equal(before[second_tile], dropped[second_tile])  # ...channel 1 did not


def test_cluster_mosaic_blacks_out_dropped_clusters():
    labels = torch.zeros(2, 4, 4, dtype=torch.int64)
    labels[:, :, 2:] = 1
    mask = torch.ones(2, 4, 4)
    mask[0][labels[0] == 1] = 0
    fig = cluster_mosaic(labels, [0, 1], mask)
    pixels = _pixels(fig.data[0])
    zoom = pixels.shape[1] // (2 * 4 + 1)
    assert (pixels[: 4 * zoom, 2 * zoom: 4 * zoom] == 0).all()  # channel 0, cluster 1: dropped
    assert (pixels[: 4 * zoom, 7 * zoom: 9 * zoom] != 0).any()  # channel 1, cluster 1: kept


def test_topk_bars_compare_clean_with_the_draws():
    rows = [Prediction("cat", 0.6, 0.4, 0.1, 0.2, 0.5), Prediction("dog", 0.3, 0.5, 0.1, 0.3, 0.7)]
    fig = topk_bars(rows, n_draws=8, agreement=0.25)
    clean, regularized = fig.data
    assert list(clean.y) == ["cat", "dog"] and list(clean.x) == [0.6, 0.3] and list(regularized.x) == [0.4, 0.5]
    assert np.allclose(regularized.error_x.array, [0.1, 0.2])  # up to the max
    assert np.allclose(regularized.error_x.arrayminus, [0.2, 0.2])  # down to the min
    assert "25% of 8 draws" in fig.layout.title.text
    assert fig.layout.yaxis.type == "category"  # digits' class names "0".."9" must not become a number axis
