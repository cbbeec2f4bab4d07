"""The lecture, in teaching order: each chapter is one idea, each step a figure, a formula and a sentence.

Every figure is computed live from the library's regularizers (their ``explain()`` stages, the same code
path as ``forward()``), with the seed from the URL: chapter 1 on a real conv feature map (one channel of a
ResNet-20's stem output), the others on a photo used as a feature map.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import torch

from dropviz.data.images import SAMPLES, load_sample, to_feature_map
from dropviz.features import load_feature_model, rank_channels
from dropviz.regularizers import REGISTRY
from dropviz.regularizers.registry import Param
from dropviz.regularizers.scheduler import LinearScheduler
from dropviz.viz import lecture as figures
from dropviz.viz.explain import draw, run
from dropviz.viz.figures import Panel, to_pixels
from dropviz.viz.texts import TEXTS

from .measure import neighbour_estimate, recovered_fraction, spatial_autocorrelation
from .model import Chapter, Step

MAP_SIDE = 56  # a ResNet-50 stage-1 feature map is 56 x 56
PHOTO = "chelsea"
STEM_MODEL, STEM_SEED = "resnet20", 0  # chapter 1's network, randomly initialised from a fixed seed

# The lecture's controls, one URL parameter each (named like the regularizers' arguments).
CONTROLS: dict[str, Param] = {param.name: param for param in (
    Param("drop_prob", "drop_prob p", float, 0.2, 0.0, 0.8, 0.05, "Expected fraction of units dropped."),
    Param("block_size", "block_size b", int, 7, 1, 15, 1, "Side of each dropped square."),
    Param("alpha", "alpha", float, 5.0, 0.0, 10.0, 0.5, "Disout: strength of the distortion."),
    Param("n_clusters", "clusters", int, 8, 2, 16, 1, "DropCluster: clusters per channel."),
    Param("n_samples", "samples M", int, 4, 1, 8, 1, "Multi-Sample Dropout: masks per step."),
    # Seed 1, not 0: the default view must show something, and seed 0 drops none of DropCluster's 8 clusters.
    Param("seed", "seed", int, 1, 0, 2**31 - 1, 1, "Same seed, same masks: a shared link shows the same picture."),
)}


def defaults() -> dict[str, Any]:
    return {name: control.default for name, control in CONTROLS.items()}


@lru_cache(maxsize=16)
def photo_map(name: str = PHOTO, side: int = MAP_SIDE) -> torch.Tensor:
    """A grayscale photo as a ``(1, 1, side, side)`` map in [0, 1]: like an early conv feature map,
    neighbouring values are nearly equal, which is all the argument needs."""
    return to_feature_map(load_sample(name), side, gray=True)


@lru_cache(maxsize=1)
def stem_map() -> tuple[torch.Tensor, int]:
    """A real conv feature map: the most active channel of an untrained ResNet-20's stem output on the
    photo, as a ``(1, 1, MAP_SIDE, MAP_SIDE)`` map scaled to [0, 1] (correlations and R^2 do not depend on
    the scale), and that channel's index.

    The stem (3 x 3 conv, BatchNorm, ReLU) runs on the photo at 56 x 56 rather than the network's 32 x 32
    input: a conv accepts any size, and at 56 x 56 the map shows the cat's shapes clearly and has the same
    side as every other chapter's map."""
    model = load_feature_model(STEM_MODEL, seed=STEM_SEED)
    activations, _ = model.capture(model.normalise(to_feature_map(load_sample(PHOTO), MAP_SIDE)), ["stem"])
    stem = activations["stem"][0]
    channel = int(rank_channels(stem)[0])
    channel_map = stem[channel]
    return (channel_map / channel_map.max().clamp(min=1e-12))[None, None].contiguous(), channel


def explain(method: str, params: Mapping[str, Any], x: torch.Tensor | None = None,
            **overrides: Any) -> dict[str, torch.Tensor]:
    """One application of a registry method with the lecture's values (and ``overrides``), seeded from the URL."""
    return draw(REGISTRY[method], {**params, **overrides}, photo_map() if x is None else x, params["seed"])


def panel(t: torch.Tensor, title: str, kind: str = "image") -> Panel:
    return Panel(to_pixels(t, kind), title)


def plane(t: torch.Tensor) -> torch.Tensor:
    """The first sample's first channel of an (N, C, H, W) stage."""
    return t[0, 0]


def cite(method: str) -> str:
    """The paper of a method as a markdown link, from the teaching texts the other pages use too."""
    text = TEXTS[method]
    return f"[{text.paper}]({text.url})" if text.url else text.paper


def nearest(levels, value) -> int:
    """Index of the sweep level closest to the control's value: the frame a still view shows."""
    return int(np.argmin([abs(level - value) for level in levels]))


def dropped_share(mask: torch.Tensor) -> float:
    return 1.0 - float(mask.float().mean())


# ------------------------------------------------------------------ 1. why element dropout fails

def _correlation(params):
    x = plane(stem_map()[0])
    rho = spatial_autocorrelation(x, 10)
    return figures.correlation_figure(panel(x, f"ResNet-20 stem, channel {stem_map()[1]}"), rho.tolist(),
                                      f"A unit and its neighbour 1 pixel away: correlation {float(rho[0]):.2f}")


def _dropout_once(params):
    stages = explain("dropout", params, stem_map()[0])
    return figures.panel_figure(
        [panel(stages["input"], "feature map x"), panel(stages["mask"], "mask m (black = dropped)", "mask"),
         panel(stages["output"], "output y")],
        f"Dropout with p = {params['drop_prob']:.2f}: {dropped_share(stages['mask']):.0%} of the units zeroed")


def _leak(params):
    stages = explain("dropout", params, stem_map()[0])
    x, mask = plane(stages["input"]), plane(stages["mask"])
    estimate, _ = neighbour_estimate(x, mask)
    return figures.panel_figure(
        [panel(stages["output"], "after dropout"),
         panel(torch.where(mask > 0, x, estimate), "holes filled from 3×3 neighbours"), panel(x, "original")],
        f"The neighbours recover {recovered_fraction(x, mask):.0%} of the dropped signal")


def _dropout_vs_blocks(params):
    frames, levels = [], np.round(np.arange(0.0, 0.501, 0.05), 2)
    for p in levels:
        p = float(p)
        element = explain("dropout", params, stem_map()[0], drop_prob=p)
        blocks = explain("dropblock", params, stem_map()[0], drop_prob=p)
        shares = [recovered_fraction(plane(s["input"]), plane(s["mask"])) for s in (element, blocks)]
        caption = ("p = 0: nothing dropped" if p == 0 else
                   f"p = {p:.2f}: neighbours recover {shares[0]:.0%} (Dropout) vs {shares[1]:.0%} (DropBlock)")
        frames.append((f"{p:.2f}", [panel(element["output"], "Dropout"),
                                    panel(blocks["output"], f"DropBlock, b = {params['block_size']}")], caption))
    return figures.map_sweep(frames, "drop_prob", start=nearest(levels, params["drop_prob"]))


SPATIAL = Chapter(
    key="spatial",
    source=cite("dropblock"),
    title="Why dropout fails on conv features",
    summary="Neighbouring activations of a conv feature map are nearly equal, so a single dropped unit "
            "is not really gone: the next layer reads it off its neighbours.",
    controls=("drop_prob", "block_size", "seed"),
    steps=(
        Step("Neighbours are nearly equal", "A real conv feature map: the most active channel of a ResNet-20's "
             "first layer (3 × 3 conv, BatchNorm, ReLU) on a photo at 56 × 56. The network is untrained "
             "(random weights, fixed seed), yet a unit and its neighbour are strongly correlated: conv filters "
             "are local, so neighbouring outputs share most of their inputs, and the photo itself is smooth.",
             r"\rho(d) = \operatorname{corr}\left(x_{i,j},\; x_{i,j+d}\right)", _correlation),
        Step("Dropout zeroes single units", "Dropout draws an independent coin per unit and scales the "
             "survivors up, so the expected activation is unchanged.",
             r"\begin{gathered} y = \frac{m \odot x}{1-p} \\ m_{ij} \sim \mathrm{Bernoulli}(1-p) \end{gathered}",
             _dropout_once),
        Step("The neighbours leak the dropped value", "A 3 × 3 convolution in the next layer sees each hole's "
             "neighbours and can fill in most of its value. So the network routes around the noise, and "
             "dropout barely regularises conv layers.",
             r"\hat x_{ij} = \frac{\sum_{(k,l) \in \mathcal N(i,j)} m_{kl}\, x_{kl}}"
             r"{\sum_{(k,l) \in \mathcal N(i,j)} m_{kl}}", _leak),
        Step("Drop regions, not units", "Press ▶ Play: as p grows, dropout's holes stay recoverable while "
             "DropBlock removes whole regions whose values no neighbour knows. Every method that follows "
             "builds on this idea.",
             r"R^2 = 1 - \frac{\sum_{m_{ij}=0} (x_{ij} - \hat x_{ij})^2}{\sum_{m_{ij}=0} (x_{ij} - \bar x)^2}",
             _dropout_vs_blocks),
    ),
)


# ------------------------------------------------------------------ 2. DropBlock

def valid_seed_region(side: int, block_size: int) -> tuple[int, int, int, int]:
    """Inclusive (row0, col0, row1, col1) of the centres whose whole block fits on a ``side`` map."""
    k = min(block_size, side)
    return k // 2, k // 2, side - k + k // 2, side - k + k // 2


def paper_gamma(drop_prob: float, side: int, block_size: int) -> float:
    k = min(block_size, side)
    return drop_prob / k ** 2 * side ** 2 / (side - k + 1) ** 2


def seed_area(block_size: int) -> torch.Tensor:
    """1 at the valid centres, light gray (0.75) on the border band where no seed may fall."""
    row0, col0, row1, col1 = valid_seed_region(MAP_SIDE, block_size)
    area = torch.full((MAP_SIDE, MAP_SIDE), 0.75)
    area[row0:row1 + 1, col0:col1 + 1] = 1.0
    return area


def _seed_region(params):
    b, p = params["block_size"], params["drop_prob"]
    return figures.panel_figure(
        [panel(photo_map(), "feature map"), panel(seed_area(b), "centres allowed (white)", "mask")],
        f"b = {b}: {(MAP_SIDE - min(b, MAP_SIDE) + 1) ** 2} valid centres, paper's seed rate γ = "
        f"{paper_gamma(p, MAP_SIDE, b):.4f}", highlight=valid_seed_region(MAP_SIDE, b))


def _seeds(params):
    stages = explain("dropblock", params)
    seeds = plane(stages["seeds"])
    return figures.panel_figure(
        [panel(stages["input"], "feature map"),
         panel(seed_area(params["block_size"]) * (1 - seeds), "sampled seeds (black)", "mask")],
        f"{int(seeds.sum())} seeds drawn", highlight=valid_seed_region(MAP_SIDE, params["block_size"]))


def _blocks(params):
    stages = explain("dropblock", params)
    return figures.panel_figure(
        [panel(1 - stages["seeds"], "seeds", "mask"), panel(stages["mask"], "mask M: each seed grown to b × b",
                                                             "mask")],
        f"{dropped_share(stages['mask']):.0%} of the units dropped (p = {params['drop_prob']:.2f})")


def _renormalised(params):
    stages = explain("dropblock", params)
    kept = 1.0 - dropped_share(stages["mask"])
    return figures.panel_figure(
        [panel(stages["input"], "input x"), panel(stages["mask"], "mask M", "mask"),
         panel(stages["output"], "output y")],
        f"Kept units are scaled by {1 / kept:.2f} (1 / the kept fraction {kept:.3f})" if kept > 0
        else "Everything was dropped")


def _block_size_sweep(params):
    frames = []
    for b in range(1, 10):
        stages = explain("dropblock", params, block_size=b)
        x, mask = plane(stages["input"]), plane(stages["mask"])
        caption = (f"b = {b}: " + ("plain dropout" if b == 1 else f"{b} × {b} blocks")
                   + f", neighbours recover {recovered_fraction(x, mask):.0%}")
        frames.append((str(b), [panel(stages["mask"], "mask", "mask"), panel(stages["output"], "output")],
                       caption))
    return figures.map_sweep(frames, "block_size", start=nearest(range(1, 10), params["block_size"]))


DROPBLOCK = Chapter(
    key="dropblock",
    source=cite("dropblock"),
    title="DropBlock",
    summary="Drop contiguous b × b squares, so no neighbour is left to leak the dropped values "
            "(Ghiasi, Lin, Le, NeurIPS 2018).",
    controls=("drop_prob", "block_size", "seed"),
    steps=(
        Step("Seeds only where a whole block fits", "A block is centred on a seed, and seeds are drawn only "
             "where the whole b × b block fits on the map. The seed rate γ is chosen so that about a fraction p "
             "of the units ends up dropped.",
             r"\gamma = \frac{p}{b^2}\,\frac{H\,W}{(H-b+1)(W-b+1)}", _seed_region),
        Step("Sample the seeds", "Each valid centre becomes a seed with probability γ, independently per "
             "sample and channel.",
             r"s_{ij} \sim \mathrm{Bernoulli}(\gamma)\ \text{ for valid } (i,j)", _seeds),
        Step("Grow each seed into a block", "A b × b max-pool turns every seed into a dropped square: "
             "the mask M is 0 inside every block.",
             r"M = 1 - \operatorname{maxpool}_{b \times b}(s)", _blocks),
        Step("Renormalise", "The kept units are scaled by the inverse of the kept fraction, so the layer's "
             "average activation does not change between training and inference.",
             r"y = x \odot M \cdot \frac{\operatorname{numel}(M)}{\sum M}", _renormalised),
        Step("Block size: from dropout to DropBlock", "Press ▶ Play: b = 1 is plain dropout; as b grows the "
             "same fraction of units is dropped in fewer, larger pieces that neighbours cannot fill in.",
             r"b = 1:\ \gamma = p \quad (\text{dropout})", _block_size_sweep),
    ),
)


# ------------------------------------------------------------------ 3. scheduled DropBlock

TRAINING_STEPS = 10_000


def _schedule(params):
    scheduler = LinearScheduler(REGISTRY["dropblock"].make(drop_prob=0.0, block_size=params["block_size"]),
                                start_value=0.0, stop_value=params["drop_prob"], nr_steps=TRAINING_STEPS)
    recorded, probs, masks = [], [], []
    for step in range(TRAINING_STEPS + 1):
        if step % (TRAINING_STEPS // 100) == 0:
            recorded.append(step)
            probs.append(scheduler.drop_prob)
        if step % (TRAINING_STEPS // 10) == 0:  # the same seed at every frame: only p changes
            stages = run(scheduler, photo_map(), params["seed"])
            masks.append(panel(stages["mask"], "mask", "mask"))
        scheduler.step()
    return figures.schedule_sweep(recorded, probs, masks, list(range(0, 101, 10)), "Scheduled DropBlock")


def _fixed_vs_scheduled(params):
    target = params["drop_prob"]
    steps = np.linspace(0, TRAINING_STEPS, 41)
    return figures.curves_figure(
        steps, {"scheduled (linear ramp)": np.minimum(steps / TRAINING_STEPS, 1.0) * target,
                "fixed from the start": np.full_like(steps, target)},
        "training step", "drop_prob", f"Reaching p = {target:.2f}: ramped or from step 0",
        y_range=(0.0, max(target * 1.15, 0.01)))


SCHEDULED = Chapter(
    key="schedule",
    source=cite("dropblock"),
    title="Scheduled DropBlock",
    summary="Start with no dropping and raise p linearly during training: a fixed large p from the "
            "first step hurts learning, the ramp does not (DropBlock paper, Sec. 3).",
    controls=("drop_prob", "block_size", "seed"),
    steps=(
        Step("Fixed or ramped", "Dropping large blocks from step 0 hampers a network that has learned nothing "
             "yet. The paper instead ramps p linearly from 0 to its target over training.",
             r"p_t = p \cdot \min\left(1, \frac{t}{T}\right)", _fixed_vs_scheduled),
        Step("Watch the schedule", "Press ▶ Play: the mask at each point of training, drawn with the same seed. "
             "Early steps barely drop anything; by the end p reaches its target.",
             r"p_t = p_{\text{start}} + (p - p_{\text{start}})\,\min\left(1, \frac{t}{T}\right)", _schedule),
    ),
)


# ------------------------------------------------------------------ 4. Disout

def _disout_mask(params):
    stages = explain("disout", params)
    return figures.panel_figure(
        [panel(stages["input"], "feature map"), panel(stages["mask"], "blocks (black)", "mask")],
        f"Disout picks blocks exactly like DropBlock: {dropped_share(stages['mask']):.0%} of the units")


def _distortion(params):
    dropblock = explain("dropblock", params)
    disout = explain("disout", params)
    inside = disout["distortion"][disout["mask"] == 0]
    size = float(inside.std() / disout["input"].std()) if inside.numel() > 1 else 0.0
    return figures.panel_figure(
        [panel(dropblock["output"], "DropBlock: zeros"), panel(disout["distortion"], "distortion ε (magnified)",
                                                               "signed"),
         panel(disout["output"], "Disout: distorted")],
        f"alpha = {params['alpha']:g}: the distortion's spread is {size:.1%} of the map's")


def _alpha_sweep(params):
    """One row of the map through the first block, as alpha grows: the distortion inside the block."""
    base = explain("disout", params, alpha=0.0)
    mask = plane(base["mask"])
    row = int((mask == 0).sum(dim=1).argmax())  # the row that crosses the most dropped units
    columns = list(range(MAP_SIDE))
    alphas = [float(a) for a in np.arange(0.0, 10.01, 1.0)]
    profiles = {f"{a:g}": plane(explain("disout", params, alpha=a)["output"])[row].tolist() for a in alphas}
    return figures.profile_sweep(columns, plane(base["input"])[row].tolist(), profiles,
                                 (1 - mask[row]).tolist(), f"Row {row} of the map: alpha", "alpha",
                                 start=nearest(alphas, params["alpha"]))


DISOUT = Chapter(
    key="disout",
    source=cite("disout"),
    title="Disout: distort instead of dropping",
    summary="Disout keeps DropBlock's blocks but fills them with random distortion instead of zeros "
            "(Tang et al., AAAI 2020).",
    controls=("drop_prob", "block_size", "alpha", "seed"),
    steps=(
        Step("The same blocks", "Disout chooses where to act exactly as DropBlock does: seeds at valid "
             "centres, grown into b × b blocks, with p the expected fraction of units affected.",
             r"\begin{gathered} M = 1 - \operatorname{maxpool}_{b \times b}(s) \\ "
             r"s_{ij} \sim \mathrm{Bernoulli}(\gamma) \end{gathered}",
             _disout_mask),
        Step("Distortion in the blocks", "Inside the blocks the units become random noise whose size follows "
             "the map's own spread; the paper derives this from a bound on the generalisation gap (the "
             "Rademacher complexity).",
             r"\begin{gathered} y = \frac{x \odot M + \varepsilon \odot (1 - M)}{\operatorname{mean}(M)} \\ "
             r"\varepsilon = \alpha\, w\, \sigma(x)\, \xi,\ \xi \sim \mathcal N(0, 1) \end{gathered}", _distortion),
        Step("alpha sets the strength", "Press ▶ Play: with alpha = 0 Disout is DropBlock; a larger alpha "
             "shakes the dropped units harder. Without the next layer's weights attached, w = 0.01 as in the "
             "official code, so the distortion stays small.",
             r"\operatorname{std}(\varepsilon) = 0.01\, \alpha\, \sigma(x)", _alpha_sweep),
    ),
)


# ------------------------------------------------------------------ 5. DropCluster

@lru_cache(maxsize=8)
def fitted_dropcluster_labels(n_clusters: int) -> torch.Tensor:
    """Clusters of the photo's positions, fitted as during training: on a batch of the map shifted by up
    to 2 pixels (the activations a layer sees vary; positions that vary together end up in one cluster)."""
    x = photo_map()
    generator = torch.Generator().manual_seed(0)
    shifts = torch.randint(-2, 3, (16, 2), generator=generator).tolist()
    batch = torch.cat([torch.roll(x, tuple(shift), dims=(2, 3)) for shift in shifts])
    module = REGISTRY["dropcluster"].make(n_clusters=n_clusters)
    module.fit(batch)
    return module.labels.clone()


def _cluster_stages(params):
    module = REGISTRY["dropcluster"].make(drop_prob=params["drop_prob"], n_clusters=params["n_clusters"])
    module.set_clusters(fitted_dropcluster_labels(params["n_clusters"]))
    return run(module, photo_map(), params["seed"])


def _clusters(params):
    stages = _cluster_stages(params)
    return figures.panel_figure(
        [panel(stages["input"], "feature map"), panel(stages["clusters"], "clusters", "labels")],
        f"{params['n_clusters']} clusters of units that vary together")


def _dropped_clusters(params):
    stages = _cluster_stages(params)
    dropped = int(stages["dropped_clusters"].sum())
    return figures.panel_figure(
        [panel(stages["clusters"], "clusters", "labels"), panel(stages["mask"], "dropped clusters (black)", "mask")],
        f"{dropped} of {params['n_clusters']} clusters dropped: {dropped_share(stages['mask']):.0%} of the units")


def _cluster_output(params):
    stages = _cluster_stages(params)
    return figures.panel_figure(
        [panel(stages["input"], "input x"), panel(stages["mask"], "mask M", "mask"), panel(stages["output"], "output y")],
        "Renormalised output, as in DropBlock")


DROPCLUSTER = Chapter(
    key="dropcluster",
    source=cite("dropcluster"),
    title="DropCluster: drop what belongs together",
    summary="DropCluster drops groups of correlated units found in the data, so the dropped regions follow "
            "the content instead of fixed squares (Chen, Mordohai, Aydore, 2020).",
    controls=("drop_prob", "n_clusters", "seed"),
    steps=(
        Step("Find clusters in the activations", "During training the positions of each channel are grouped "
             "into spatially connected clusters whose activations vary together (here: Ward clustering of "
             "the map seen under small shifts).",
             r"\mathcal C_1, \dots, \mathcal C_K = \operatorname{cluster}\left(\{x^{(n)}_{ij}\}_{n=1}^{N}\right)",
             _clusters),
        Step("Drop whole clusters", "Each cluster is dropped with probability p, independently per sample and "
             "channel; since the clusters cover the map, a fraction p of the units is dropped on average.",
             r"\begin{gathered} d_k \sim \mathrm{Bernoulli}(p) \\ M_{ij} = 1 - d_{k(i,j)} \end{gathered}",
             _dropped_clusters),
        Step("Renormalise", "As in DropBlock, the kept units are scaled by the inverse kept fraction.",
             r"y = x \odot M \cdot \frac{\operatorname{numel}(M)}{\sum M}", _cluster_output),
    ),
)


# ------------------------------------------------------------------ 6. DropPath

DEPTH = 16  # residual blocks in the stochastic-depth picture


def sample_batch(side: int = MAP_SIDE, count: int = 6) -> torch.Tensor:
    """The first ``count`` sample photos as a batch of grayscale maps: one residual-branch output per sample."""
    return torch.cat([photo_map(name, side) for name in list(SAMPLES)[:count]])


def _branches(params):
    stages = explain("droppath", params, sample_batch(), mode="row")
    kept = stages["mask"][:, 0, 0, 0]
    return figures.panel_figure(
        [panel(out[None], "kept" if keep else "dropped") for out, keep
         in zip(stages["output"], kept.tolist())],
        f"The residual branch F(x) of each sample: {int((kept == 0).sum())} of {len(kept)} dropped",
        panel_height=210)


def _depth(params):
    generator = torch.Generator().manual_seed(int(params["seed"]))
    columns = []
    for block in range(1, DEPTH + 1):  # stochastic depth's linear decay: deeper blocks dropped more often
        module = REGISTRY["droppath"].make(drop_prob=params["drop_prob"] * block / DEPTH, mode="row")
        columns.append(module.explain(torch.ones(8, 1), generator)["mask"][:, 0])
    keep = torch.stack(columns, dim=1)
    return figures.grid_figure(keep.numpy(), "residual block l", "sample",
                               f"Mean depth {float(keep.sum(dim=1).mean()):.1f} of {DEPTH} (orange = skipped)")


DROPPATH = Chapter(
    key="droppath",
    source=cite("droppath"),
    title="DropPath: drop whole residual branches",
    summary="In a residual network the identity path carries the signal, so a whole branch can be skipped: "
            "each sample trains a shallower network (Huang et al. 2016; Larsson et al. 2017).",
    controls=("drop_prob", "seed"),
    steps=(
        Step("One coin per sample", "DropPath keeps or drops the entire branch output of a sample, scaling "
             "the kept ones so the expectation is unchanged; the skip connection still carries x.",
             r"\begin{gathered} y = x + \frac{b}{1-p}\, F(x) \\ b \sim \mathrm{Bernoulli}(1-p) \text{ per sample} "
             r"\end{gathered}",
             _branches),
        Step("Deeper blocks are dropped more", "Stochastic depth lets the drop rate grow linearly with depth, so "
             "early blocks, which every later block needs, are almost always kept.",
             r"p_l = \frac{l}{L}\, p, \qquad \mathbb E[\text{depth}] = \sum_{l=1}^{L} (1 - p_l)", _depth),
    ),
)


# ------------------------------------------------------------------ 7. Multi-Sample Dropout

def _samples(params):
    stages = explain("multisample", params)
    x = stages["input"]
    scale = 1.0 / (1.0 - params["drop_prob"])
    masks = [stages[name] for name in stages if name.startswith("mask")]
    shown = [panel(x * mask * scale, f"sample {i + 1}") for i, mask in enumerate(masks[:4])]
    return figures.panel_figure(shown + [panel(stages["output"], f"average of {len(masks)}")],
                                f"{len(masks)} dropout masks of the same features, one shared head",
                                panel_height=240)


def _average_sweep(params):
    frames = []
    for count in range(1, 9):
        stages = explain("multisample", params, n_samples=count)
        error = float((stages["output"] - stages["input"]).pow(2).mean().sqrt())
        frames.append((str(count), [panel(stages["output"], "average of the samples"), panel(stages["input"], "undropped features x")],
                       f"M = {count}: distance to the undropped features (RMS) {error:.3f}"))
    return figures.map_sweep(frames, "samples M", start=nearest(range(1, 9), params["n_samples"]))


MULTISAMPLE = Chapter(
    key="multisample",
    source=cite("multisample"),
    title="Multi-Sample Dropout",
    summary="Draw several dropout masks for the same features, pass each through the shared head and "
            "average the losses: many dropout draws per step for little extra cost (Inoue, 2019).",
    controls=("drop_prob", "n_samples", "seed"),
    steps=(
        Step("Several masks, one forward pass", "The expensive body of the network runs once; only the cheap "
             "head after the dropout runs M times, once per mask.",
             r"\begin{gathered} z_m = h\left(\frac{m_m \odot x}{1-p}\right) \\ "
             r"m_m \sim \mathrm{Bernoulli}(1-p),\ m = 1, \dots, M \end{gathered}", _samples),
        Step("Averaging tames the noise", "Press ▶ Play: the average of M samples moves closer to the "
             "undropped features, so the averaged loss gives a less noisy gradient and training converges "
             "in fewer steps.",
             r"\mathcal L = \frac{1}{M} \sum_{m=1}^{M} \ell\left(z_m, y\right)", _average_sweep),
    ),
)


# ------------------------------------------------------------------ 8. results

DROPBLOCK_PAPER = TEXTS["dropblock"].paper
DISOUT_PAPER = TEXTS["disout"].paper
PAPER_RESULTS: tuple[dict[str, Any], ...] = (
    {"setting": "ResNet-50, ImageNet", "method": "baseline", "top1": 76.51, "source": DROPBLOCK_PAPER},
    {"setting": "ResNet-50, ImageNet", "method": "DropBlock", "top1": 78.13, "source": DROPBLOCK_PAPER},
    {"setting": "ResNet-50, ImageNet", "method": "Disout", "top1": 78.76, "source": DISOUT_PAPER},
    {"setting": "ResNet-56, CIFAR-10", "method": "baseline", "top1": 93.95, "source": DISOUT_PAPER},
    {"setting": "ResNet-56, CIFAR-10", "method": "DropBlock", "top1": 94.18, "source": DISOUT_PAPER},
    {"setting": "ResNet-56, CIFAR-10", "method": "Disout", "top1": 94.50, "source": DISOUT_PAPER},
)


def _papers(params):
    return figures.results_figure(PAPER_RESULTS, "Top-1 accuracy reported by the papers (hover a bar for its source)")


def our_curves(dataset: str = "cifar10") -> dict[str, tuple[list[float], list[float]]]:
    """Test accuracy (%) per epoch of every run on ``dataset`` in the runs database with at least one evaluated
    epoch, keyed by a label naming the model, the regularizer and the status. Empty when there is no database."""
    from dropviz.train.db import DB_NAME, RunsDB
    from dropviz.train.jobs import default_runs_dir

    runs_dir = default_runs_dir()
    if not (runs_dir / DB_NAME).is_file():  # never create a database just by looking
        return {}
    db = RunsDB(runs_dir)
    try:
        curves = {}
        for run in reversed(db.runs()):  # oldest first, so colours stay put as runs are added
            config = db.config(run["id"])
            epochs = [row for row in db.epochs(run["id"]) if row.get("test_acc") is not None]
            if config.dataset != dataset or not epochs:
                continue
            label = f"ours: {config.model} + {config.regularizer} ({run['status']}, {run['id'][-6:]})"
            curves[label] = ([row["epoch"] for row in epochs], [100 * row["test_acc"] for row in epochs])
        return curves
    finally:
        db.close()


def _ours(params):
    # The paper's line is a CIFAR-10 number: only runs on CIFAR-10 go beside it.
    cifar = {(row["method"]): row["top1"] for row in PAPER_RESULTS if row["setting"] == "ResNet-56, CIFAR-10"}
    label = f"Disout paper, ResNet-56: {cifar['baseline']:.2f} baseline, {cifar['Disout']:.2f} Disout"
    return figures.runs_figure(our_curves("cifar10"), "Our runs on CIFAR-10, measured here (dotted: the Disout paper)",
                               references={label: cifar["Disout"]},
                               empty_text="No CIFAR-10 runs yet: start one on the Training page (dataset cifar10),"
                                          "<br>and its test accuracy appears here epoch by epoch.")


RESULTS = Chapter(
    key="results",
    source=f"{cite('dropblock')}; {cite('disout')}",
    title="Results: the papers and our runs",
    summary="What the papers report, with their sources, beside what our own training runs measure on this "
            "machine.",
    steps=(
        Step("What the papers report", "On ImageNet, DropBlock lifts a ResNet-50 from 76.51% to 78.13% top-1 and "
             "Disout reports 78.76%. On CIFAR-10, a ResNet-56 goes from 93.95% to 94.18% with DropBlock and "
             "94.50% with Disout (numbers from the Disout paper).",
             r"\begin{gathered} \Delta_{\text{top-1}} = +1.62 \ (\text{DropBlock, ImageNet}) \\ "
             r"\Delta_{\text{top-1}} = +0.55 \ (\text{Disout, CIFAR-10}) \end{gathered}", _papers),
        Step("Our own measured curves", "Every CIFAR-10 run started on the Training page appears here as it trains, "
             "labelled as ours: short runs on small models, so compare the shapes of the curves rather than "
             "the papers' absolute numbers.",
             r"\text{accuracy} = \frac{\#\{\hat y = y\}}{\#\text{test images}}", _ours, live=True),
    ),
)


# ------------------------------------------------------------------ 9. pitfalls

PITFALL_MAPS = (7, 14)  # late ResNet stages: here blocks are as large as the map and implementations part


def _rate_vs_block(params):
    from dropviz.viz.droprate import drop_rate_figure, drop_rate_sweep

    rows = drop_rate_sweep(params["drop_prob"], tuple(range(1, 12)), PITFALL_MAPS, draws=32, channels=8,
                           seed=int(params["seed"]))
    fig = drop_rate_figure(rows, height=420)
    worst = max((row for row in rows if row["realised"] is not None),
                key=lambda row: abs(row["realised"] - row["requested"]))
    return figures.presenter_layout(
        fig, f"Asked for p = {params['drop_prob']:.2f}, {worst['implementation']} drops {worst['realised']:.2f} "
             f"(b = {worst['block_size']} on {worst['map_size']} × {worst['map_size']})", height=440)


def _rate_vs_drop_prob(params):
    from dropviz.viz.droprate import drop_rate_sweep

    levels = [round(float(p), 2) for p in np.arange(0.05, 0.51, 0.05)]
    curves: dict[str, list[float | None]] = {}
    for p in levels:
        for row in drop_rate_sweep(p, (params["block_size"],), (PITFALL_MAPS[-1],), draws=32, channels=8,
                                   seed=int(params["seed"])):
            curves.setdefault(row["implementation"], []).append(row["realised"])
    side = PITFALL_MAPS[-1]
    return figures.curves_figure(levels, curves, "requested drop_prob", "realised drop fraction",
                                 f"b = {params['block_size']} on a {side} × {side} map, measured live",
                                 y_range=(0.0, 1.0), reference=(levels, "realised = requested"))


PITFALLS = Chapter(
    key="pitfalls",
    source="torchvision.ops.drop_block2d, timm.layers.drop_block_2d and dropviz's DropBlock2d, run on this machine",
    title="Pitfalls: is p what you get?",
    summary="Implementations turn p into a seed rate differently; on small maps with large blocks the "
            "realised drop rate can be far from the requested one. Measured live, on tensors of ones.",
    controls=("drop_prob", "block_size", "seed"),
    steps=(
        Step("Realised vs requested, by block size", "Each implementation drops blocks on maps of ones and we "
             "count the zeros. The paper's γ counts overlapping blocks twice, and clipping or padding at the "
             "border changes the count again, so on late-stage 7 × 7 and 14 × 14 maps the curves part.",
             r"\hat p = \frac{\#\{y = 0\}}{\#\{y\}} \quad \text{vs} \quad p", _rate_vs_block),
        Step("Realised vs requested, by p", "The dashed line is what was asked for. dropviz solves for the γ "
             "whose exact expected drop fraction is p; the first-order formula drifts as p and b grow.",
             r"\mathbb E[\hat p] = 1 - \operatorname{mean}_u (1-\gamma)^{c(u)} = p", _rate_vs_drop_prob),
    ),
)


CHAPTERS: tuple[Chapter, ...] = (SPATIAL, DROPBLOCK, SCHEDULED, DISOUT, DROPCLUSTER, DROPPATH, MULTISAMPLE,
                                 RESULTS, PITFALLS)
