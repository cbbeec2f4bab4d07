"""Live feature maps: a network's activations at one layer, a regularizer applied there, and its effect
on the predictions. Nothing here imports Streamlit."""
from .extract import FeatureModel, Prediction, compare_predictions, rank_channels
from .weights import ARCHITECTURES, IMAGENET, RANDOM, Architecture, WeightsError, load_feature_model, read_weights

__all__ = ["ARCHITECTURES", "IMAGENET", "RANDOM", "Architecture", "FeatureModel", "Prediction", "WeightsError",
           "compare_predictions", "load_feature_model", "rank_channels", "read_weights"]
