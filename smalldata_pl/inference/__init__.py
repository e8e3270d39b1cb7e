"""Applying trained checkpoints to new micrographs: the training preprocessing, whole images or tiles."""

from smalldata_pl.inference.calibration import calibrate_from_labelled_images, fit_temperature
from smalldata_pl.inference.explain import gradcam
from smalldata_pl.inference.predictor import Prediction, Predictor, load_predictor

__all__ = ["Prediction", "Predictor", "calibrate_from_labelled_images", "fit_temperature", "gradcam", "load_predictor"]
