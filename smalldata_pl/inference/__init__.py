"""Applying trained checkpoints to new micrographs: the training preprocessing, whole images or tiles."""

from smalldata_pl.inference.calibration import calibrate_from_labelled_images, fit_temperature
from smalldata_pl.inference.predictor import Prediction, Predictor, load_predictor
from smalldata_pl.models.gradcam import gradcam  # re-exported: the inference entry points in one place

__all__ = ["Prediction", "Predictor", "calibrate_from_labelled_images", "fit_temperature", "gradcam", "load_predictor"]
