"""Applying trained checkpoints to new micrographs: the training preprocessing, whole images or tiles."""

from smalldata_pl.inference.predictor import Prediction, Predictor, load_predictor

__all__ = ["Prediction", "Predictor", "load_predictor"]
