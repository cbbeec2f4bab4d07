"""Feature Maps: a ResNet's channels at one layer, the same channels after a regularizer, and how the
predictions move when the rest of the network runs on the regularized activations."""
from __future__ import annotations

import hashlib
import io

import streamlit as st
import torch

from dropviz.data.images import SAMPLES, load_sample, to_feature_map
from dropviz.features import (ARCHITECTURES, IMAGENET, RANDOM, FeatureModel, LayerEffect, WeightsError,
                              compare_predictions, fit_clusters, layer_effect, load_checkpoint_model,
                              load_feature_model, rank_channels, run_checkpoints)
from dropviz.features.weights import imagenet_weights_path
from dropviz.regularizers import REGISTRY, Param
from dropviz.train import default_runs_dir
from dropviz.ui.controls import (CONTROL_WIDTH, method_controls, method_select, param_widget, seed_control,
                                 share_link, warn_unusable_url_value)
from dropviz.ui.image_input import feature_map, image_picker, image_thumbnail
from dropviz.ui.panels import plotly_config
from dropviz.viz import features as fig
from dropviz.viz.figures import stage_row

URL = "query-params"
RUN_PREFIX, UPLOAD_PREFIX = "run:", "upload:"
HALF_WIDTH = 370  # px
LAST_GOOD = "features_network"  # session state: (arch, weights, version) of the last network that loaded


# ---------------------------------------------------------------- cached work (small keys, tensors as _args)

@st.cache_resource(max_entries=6, show_spinner="Loading the network...")
def network(arch: str, weights: str, version: str = "", _upload: bytes | None = None) -> FeatureModel:
    """One shared model per (architecture, weights, file version); errors are not cached."""
    if weights.startswith(RUN_PREFIX):
        return load_checkpoint_model(version.rpartition("@")[0], name=weights.removeprefix(RUN_PREFIX))
    if weights.startswith(UPLOAD_PREFIX):
        if _upload is None:
            raise WeightsError("The uploaded file is gone; upload it again.")
        return load_checkpoint_model(io.BytesIO(_upload), arch=arch, name="The uploaded file")
    return load_feature_model(arch, weights)


@st.cache_data(max_entries=32, show_spinner=False)
def clean_pass(model_id: str, image_id: str, layer: str, _model: FeatureModel, _x: torch.Tensor):
    """The layer's clean ``(1, C, H, W)`` output and the clean logits."""
    acts, logits = _model.capture(_x, [layer])
    return acts[layer], logits


@st.cache_data(max_entries=8, show_spinner="Fitting DropCluster's clusters on this layer's activations...")
def cluster_labels(model_id: str, image_id: str, layer: str, n_clusters: int, _model: FeatureModel,
                   _x: torch.Tensor) -> torch.Tensor:
    """Clusters fitted on the layer's activations of the chosen image and the packaged photos."""
    photos = torch.cat([to_feature_map(load_sample(name), _model.input_size) for name in SAMPLES])
    batch = torch.cat([_x, _model.normalise(photos)])
    return fit_clusters(_model, layer, batch, REGISTRY["dropcluster"].make(n_clusters=n_clusters))


@st.cache_data(max_entries=16, show_spinner=False)  # up to a few MB each at 224 x 224
def regularized_pass(model_id: str, image_id: str, layer: str, method: str, params: tuple, n_draws: int,
                     seed: int, _model: FeatureModel, _x: torch.Tensor, _clean: torch.Tensor) -> LayerEffect:
    """The regularizer on the cached clean activation, then the layers after it (nothing before)."""
    regularizer = REGISTRY[method].make(**dict(params))
    if hasattr(regularizer, "set_clusters"):
        labels = cluster_labels(model_id, image_id, layer, dict(params)["n_clusters"], _model, _x)
        regularizer.set_clusters(labels)  # a drop_prob change does not refit
    return layer_effect(_model, _clean, layer, regularizer, n_draws, seed)


# ---------------------------------------------------------------- choosing the network

def shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))


def weights_options(arch: str, checkpoints) -> dict[str, str]:
    options = {RANDOM: "Random initialisation (untrained)"}
    if arch == "resnet18-imagenet":
        options[IMAGENET] = "torchvision ImageNet weights" + ("" if imagenet_weights_path().is_file()
                                                               else " (not in the local cache)")
    options.update({RUN_PREFIX + c.run_id: c.label for c in checkpoints if c.model == arch})
    return options


def previous_network(arch: str) -> tuple[str, str, str, FeatureModel]:
    """The last network that loaded in this session (random weights if there is none, or it is gone)."""
    for key in (st.session_state.get(LAST_GOOD), (arch, RANDOM, "")):
        if key:
            try:
                return (*key, network(*key))
            except (WeightsError, OSError):
                continue
    raise AssertionError("random initialisation always loads")


def choose_network() -> tuple[FeatureModel, str]:
    """The sidebar's network and weights; a file that cannot be used shows why and the last good model stays."""
    warn_unusable_url_value("model", options=list(ARCHITECTURES))
    arch = st.selectbox("Network", list(ARCHITECTURES), key="model", bind=URL,
                        help="\n".join(f"- {a}: {spec.label}" for a, spec in ARCHITECTURES.items()))
    checkpoints = run_checkpoints(default_runs_dir())
    options = weights_options(arch, checkpoints)
    warn_unusable_url_value("weights", options=list(options))
    weights = st.selectbox("Weights", list(options), key="weights", bind=URL,
                           help="A checkpoint of a run from the Training page, torchvision's ImageNet weights "
                                "(ResNet-18 at 224 x 224), or random initialisation.")
    st.caption(options[weights])
    upload = st.file_uploader("...or upload a checkpoint", type=["pt", "pth", "ckpt"], key="checkpoint_upload",
                              help="A state dict or a dropviz checkpoint; loaded with weights_only=True.")
    version, data = "", None
    if upload is not None:
        data = upload.getvalue()
        weights = UPLOAD_PREFIX + hashlib.sha256(data).hexdigest()[:16]
    elif weights.startswith(RUN_PREFIX):
        path = next(c.path for c in checkpoints if RUN_PREFIX + c.run_id == weights)
        version = f"{path}@{path.stat().st_mtime_ns}"  # a running job rewrites it every epoch
    try:
        model = network(arch, weights, version, data)
        st.session_state[LAST_GOOD] = (arch, weights, version)
    except WeightsError as err:
        st.error(str(err), icon=":material/block:")
        arch, weights, version, model = previous_network(arch)
        st.caption(f"Still showing {arch} with {weights} weights.")
    return model, f"{arch}|{weights}|{version}"


# ---------------------------------------------------------------- page

st.title("Feature Maps")
st.caption("What a regularizer really touches: a network's feature maps. Pick a layer, see its most active "
           "channels before and after the regularizer, and how the predictions move when the rest of the "
           "network runs on the regularized activations (regularizer in training mode, BatchNorm in eval mode).")

with st.sidebar:
    model, model_id = choose_network()
    picked = image_picker(key="")
    image_thumbnail(picked)

if model.trained:
    st.success(f"Weights: {model.weights}", icon=":material/check_circle:")
else:
    st.warning(f"Weights: {model.weights}. Pick a checkpoint for meaningful feature maps and predictions.",
               icon=":material/warning:")

shapes = model.layer_shapes()
layers = list(shapes)
warn_unusable_url_value("layer", options=layers)
# One row that wraps on a narrow page instead of squeezing the buttons.
with st.container(horizontal=True, vertical_alignment="bottom"):
    layer = st.selectbox("Layer", layers, index=len(layers) // 2, key="layer", bind=URL, width=CONTROL_WIDTH,
                         help="Output of the stem or of a residual block, C x H x W:\n"
                              + "\n".join(f"- {n}: {shape_text(shapes[n])}" for n in layers))
    with st.container(width=CONTROL_WIDTH):
        spec = method_select(key="")
    seed = seed_control(key="")
    share_link()
params = method_controls(spec, key="", wrap=True)
st.caption(f"Layer {layer}: {shape_text(shapes[layer])} (channels x height x width) for a "
           f"{model.input_size} x {model.input_size} input.")
n_channels = shapes[layer][0]
counts = st.columns(2)
shown = param_widget(Param("channels", "Channels shown (most active first)", int, min(16, n_channels), 1,
                           min(64, n_channels)), key="", container=counts[0])
n_draws = param_widget(Param("draws", "Draws for the predictions", int, 8, 1, 32,
                             help="Independent masks, each followed by the rest of the network."),
                       key="", container=counts[1])

x = model.normalise(feature_map(picked, model.input_size))
activation, clean_logits = clean_pass(model_id, picked.id, layer, model, x)
clean = activation[0]
try:
    effect = regularized_pass(model_id, picked.id, layer, spec.name, tuple(sorted(params.items())), n_draws, seed,
                              model, x, activation)
except ValueError as err:  # a parameter combination the method rejects for this layer
    st.error(f"{spec.display_name} cannot run on {layer} with these settings: {err}")
    st.stop()

channels = rank_channels(clean)[:shown].tolist()
kept = float(effect.stages["mask"].float().mean()) if "mask" in effect.stages else 1.0
# Disout replaces the units of its blocks with perturbed values instead of zeros.
touched = "distorted (not zeroed)" if "distortion" in effect.stages else "dropped"
mosaics = fig.before_after(clean, effect.stages["output"], channels, width=HALF_WIDTH,
                           titles=(f"{layer}: clean", f"after {spec.display_name} (first draw)"))
with st.container(horizontal=True, key="features_grid"):  # side by side at 1280 px, one under the other at 800
    for side, mosaic in zip(("clean", "after"), mosaics):
        st.plotly_chart(mosaic, width=HALF_WIDTH, key=f"features_grid_{side}",
                        config=plotly_config(f"features-{layer}-{side}"))
st.caption(f"{shown} of {n_channels} channels, most active first (mean |activation|); each divided by its "
           "clean maximum (kept units the regularizer scales above it show the top colour). "
           f"{1 - kept:.1%} of this layer's units {touched} in the first draw. Hover a tile for its channel.")

if "clusters" in effect.stages:
    st.plotly_chart(fig.cluster_mosaic(effect.stages["clusters"], channels, effect.stages.get("mask")),
                    key="features_clusters", config=plotly_config(f"clusters-{layer}"))
    st.caption(f"Clusters fitted on this layer's activations of {1 + len(SAMPLES)} images (this one and the "
               "packaged photos); changing n_clusters refits them.")

# Two halves of the main area beside the sidebar at 1280 px (763 px), one under the other on a narrower page.
with st.container(horizontal=True):
    left, right = st.container(width=HALF_WIDTH), st.container(width=HALF_WIDTH)
with left:
    warn_unusable_url_value("channel", options=[str(c) for c in channels])
    channel = st.selectbox("Channel to explain (most active first)", channels, key="channel", bind=URL)
    maps = {name: t[channel] for name, t in effect.stages.items() if t.dim() == 3}
    st.plotly_chart(stage_row(maps, width=HALF_WIDTH, title=f"explain() stages of channel {channel}"),
                    key="features_stages", config=plotly_config(f"stages-{layer}-{channel}"))
with right:
    rows, agreement = compare_predictions(clean_logits, effect.logits, model.class_names)
    st.plotly_chart(fig.topk_bars(rows, n_draws, agreement), key="features_topk",
                    config=plotly_config(f"top5-{layer}"))
