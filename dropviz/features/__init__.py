"""Live feature maps: a network's activations at one layer, a regularizer applied there, and its effect
on the predictions. Nothing here imports Streamlit."""
from .extract import (FeatureModel, LayerEffect, Prediction, compare_predictions, fit_clusters, layer_effect,
                      rank_channels)
from .weights import (ARCHITECTURES, IMAGENET, RANDOM, Architecture, RunCheckpoint, WeightsError,
                      load_checkpoint_model, load_feature_model, read_checkpoint, read_weights, run_checkpoints)

__all__ = ["ARCHITECTURES", "IMAGENET", "RANDOM", "Architecture", "FeatureModel", "LayerEffect", "Prediction",
           "RunCheckpoint", "WeightsError", "compare_predictions", "fit_clusters", "layer_effect",
           "load_checkpoint_model", "load_feature_model", "rank_channels", "read_checkpoint", "read_weights",
           "run_checkpoints"]
