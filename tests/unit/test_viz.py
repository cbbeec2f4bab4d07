"""Figure builders for regularizer stages, and the seeded draws behind the Explorer and Compare pages."""
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from dropviz.regularizers import REGISTRY
from dropviz.viz import explain, figures
from dropviz.viz.figures import Panel, image_grid, stage_row, stage_stats, to_pixels


def decode(uri: str) -> np.ndarray:
    """A panel's pixels as the browser shows them (1-bit and palette PNGs expanded)."""
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    return np.asarray(image.convert({"1": "L", "P": "RGB"}.get(image.mode, image.mode)))


def test_image_kind_maps_unit_range_to_black_white_and_widens_for_larger_values():
    t = torch.tensor([[[0.0, 0.5, 1.0]]])
    np.testing.assert_array_equal(to_pixels(t), [[0, 128, 255]])
    scaled = to_pixels(t * 2)  # an output scaled by 1/(1-p): the range widens to [0, 2], nothing clips
    np.testing.assert_array_equal(scaled, [[0, 128, 255]])


def test_rgb_stays_rgb_and_first_sample_is_shown():
    t = torch.zeros(2, 3, 2, 2)
    t[0, 0] = 1.0  # first sample red
    t[1, 2] = 1.0
    pixels = to_pixels(t)
    assert pixels.shape == (2, 2, 3) and (pixels[..., 0] == 255).all() and (pixels[..., 2] == 0).all()


def test_mask_is_gray_when_channels_agree_and_colour_when_they_differ():
    shared = torch.tensor([[1.0, 0.0]]).expand(3, 1, 2)
    assert to_pixels(shared, "mask").tolist() == [[255, 0]]
    per_channel = torch.zeros(3, 1, 2)
    per_channel[0, 0, 0] = 1.0  # only the red channel kept at the first unit
    assert to_pixels(per_channel, "mask").tolist() == [[[255, 0, 0], [0, 0, 0]]]


def test_signed_is_white_at_zero_and_labels_use_the_palette():
    signed = to_pixels(torch.tensor([[[-1.0, 0.0, 1.0]]]), "signed")
    assert signed[0, 1].tolist() == [255, 255, 255]
    assert signed[0, 0, 2] > signed[0, 0, 0] and signed[0, 2, 0] > signed[0, 2, 2]  # blue, then red
    labels = to_pixels(torch.tensor([[0, 1, len(figures.PALETTE)]]), "labels")
    assert labels[0, 0].tolist() == labels[0, 2].tolist() != labels[0, 1].tolist()


def test_binary_masks_are_packed_losslessly():
    rng = np.random.default_rng(1)
    rgb_mask = (rng.random((6, 5, 3)) > 0.5).astype(np.uint8) * 255
    gray_mask = rgb_mask[..., 0].copy()
    for pixels in (rgb_mask, gray_mask):
        np.testing.assert_array_equal(decode(figures.png_uri(pixels)), pixels)


def test_image_grid_panels_are_lossless_and_titled():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    fig = image_grid([[Panel(a, "A"), None], [Panel(b, "B")]], row_titles=("r1", "r2"))
    assert len(fig.data) == 2
    np.testing.assert_array_equal(decode(fig.data[0].source), a)
    np.testing.assert_array_equal(decode(fig.data[1].source), b)
    texts = [ann.text for ann in fig.layout.annotations]
    assert {"A", "B", "<b>r1</b>", "<b>r2</b>"} <= set(texts)
    assert tuple(fig.layout.yaxis.range) == (4.5, -0.5)  # row 0 at the top, pixel-exact


def test_stage_row_draws_map_stages_in_order_and_skips_others():
    stages = {"input": torch.rand(1, 3, 8, 8), "seeds": torch.zeros(1, 3, 8, 8), "mask": torch.ones(1, 3, 8, 8),
              "dropped_clusters": torch.tensor([1, 3]), "output": torch.rand(1, 3, 8, 8)}
    fig = stage_row(stages)
    assert [trace.name for trace in fig.data] == ["input", "block seeds (white = seed)", "mask (white = kept)",
                                                  "output"]


def test_output_is_shown_on_the_inputs_scale_divided_by_the_kept_scale():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8  # inputs below 1
    stages = explain.draw(REGISTRY["dropout"], {"drop_prob": 0.5}, x, seed=0)
    panel = figures.output_panel(stages, "output")
    scale = figures.kept_scale(stages)
    assert scale == pytest.approx(2.0) and (panel.title, panel.note) == ("output", "÷ 2.00")
    kept = stages["mask"][0].permute(1, 2, 0).numpy() > 0
    np.testing.assert_array_equal(panel.pixels[kept], to_pixels(x)[kept])  # kept units look like the input
    assert (panel.pixels[~kept] == 0).all()


def test_comparison_column_is_output_over_mask_or_a_failure():
    ok = {"input": torch.rand(1, 3, 8, 8), "mask": torch.ones(1, 3, 8, 8), "output": torch.rand(1, 3, 8, 8)}
    fig = figures.comparison_column("A", ok, width=175)
    assert fig.layout.title.text == "A" and [trace.name for trace in fig.data] == ["output", "mask"]
    assert fig.layout.yaxis2.domain[1] < fig.layout.yaxis.domain[0]  # the mask under the output
    assert fig.layout.height == 2 * (175 + 26) + 40  # square panels at 175 px, each under a title
    failed = figures.comparison_column("B", "block_size must be odd")
    assert [trace.name for trace in failed.data] == ["error"]


def test_stats_measure_drop_fraction_scale_and_blocks():
    x = torch.full((1, 2, 4, 4), 0.5)
    mask = torch.ones(1, 2, 4, 4)
    mask[..., :2, :] = 0  # half dropped
    seeds = torch.zeros(1, 2, 4, 4)
    seeds[..., 0, 0] = 1  # one shared seed, expanded over both channels: one block
    stats = stage_stats({"input": x, "seeds": seeds, "mask": mask, "output": x * mask * 2}, 0.4)
    assert stats == {"requested drop": 0.4, "realised drop": 0.5, "kept scale": 2.0, "blocks dropped": 1}
    seeds[0, 1, 3, 3] = 1  # channels now differ: each channel's seeds count
    assert stage_stats({"input": x, "seeds": seeds, "mask": mask, "output": x}, 0.4)["blocks dropped"] == 3


def test_stats_count_dropped_cluster_flags_over_channels():
    base = {"input": torch.ones(1, 2, 2, 2), "mask": torch.ones(1, 2, 2, 2), "output": torch.ones(1, 2, 2, 2)}
    flags = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])  # (N, C, n_clusters), 1 = dropped
    assert stage_stats({**base, "dropped_clusters": flags}, 0.1)["clusters dropped, all channels"] == 3


def test_long_stage_lists_are_cut_in_the_middle_and_say_so():
    stages = {"input": torch.rand(1, 3, 4, 4), **{f"mask_{i}": torch.ones(1, 3, 4, 4) for i in range(9)},
              "output": torch.rand(1, 3, 4, 4)}
    fig = stage_row(stages, max_panels=4)
    assert [trace.name for trace in fig.data] == ["input", "mask, sample 0", "mask, sample 1", "output"]
    assert fig.layout.annotations[-1].text.endswith("(7 more not shown)")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_draws_reproducibly_from_its_seed(name):
    spec = REGISTRY[name]
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    params = {**spec.defaults(), "drop_prob": 0.3} if "drop_prob" in spec.defaults() else spec.defaults()
    first, again = explain.draw(spec, params, x, seed=7), explain.draw(spec, params, x, seed=7)
    assert torch.equal(first["mask"], again["mask"]) and torch.equal(first["output"], again["output"])
    # Another seed gives another draw (DropPath on one sample has only two outcomes: try a few seeds).
    others = (explain.draw(spec, params, x, seed=seed)["output"] for seed in range(8, 20))
    assert any(not torch.equal(first["output"], other) for other in others)
    assert stage_row(first).data  # every registered method's stages can be drawn


def test_drop_prob_zero_keeps_everything_for_every_method():
    x = torch.rand(1, 3, 16, 16)
    results = explain.draw_all(REGISTRY, {"drop_prob": 0.0}, x, seed=0)
    for name, stages in results.items():
        assert not isinstance(stages, str), name
        assert torch.all(stages["mask"] == 1), name
        assert torch.allclose(stages["output"], x), name


def test_rejected_parameters_come_back_as_the_ops_message():
    results = explain.draw_all(["dropout"], {"drop_prob": 1.5, "block_size": 3}, torch.rand(1, 3, 8, 8), seed=0)
    assert results == {"Dropout": "drop_prob must be in [0, 1), got 1.5"}
    rows = explain.comparison_rows(["dropout"], results, {"drop_prob": 1.5, "block_size": 3})
    assert rows == [{"method": "Dropout", "parameters": "drop_prob=1.5", "error": results["Dropout"]}]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_has_teaching_text_citing_its_paper(name):
    from dropviz.viz.texts import TEXTS, method_text

    spec = REGISTRY[name]
    text = method_text(spec)
    assert name in TEXTS and text.what and text.formula
    assert text.formula.count("{") == text.formula.count("}")  # st.latex shows nothing for unbalanced TeX
    assert spec.paper.split(",")[0].split()[0] in text.paper  # same first author as the registry


def test_extra_masks_get_readable_titles_and_narrow_rows_wrap():
    masks = {name: torch.ones(1, 1, 8, 8) for name in ("mask", "mask_2", "mask_3", "mask_4")}
    stages = {"input": torch.rand(1, 1, 8, 8), **masks, "output": torch.rand(1, 1, 8, 8)}
    wide, narrow = stage_row(stages, width=1200), stage_row(stages, width=700)
    assert [trace.name for trace in narrow.data] == ["input", "mask (white = kept)", "mask, sample 2",
                                                     "mask, sample 3", "mask, sample 4", "output"]
    # One row of six when each gets 200 px; two rows of three in 700 px, each panel at least 170 px wide.
    assert len({tuple(narrow.layout[f"yaxis{i if i > 1 else ''}"].domain) for i in range(1, 7)}) == 2
    assert len({tuple(wide.layout[f"yaxis{i if i > 1 else ''}"].domain) for i in range(1, 7)}) == 1
    assert narrow.layout.xaxis3.domain[1] - narrow.layout.xaxis3.domain[0] > 0.3
