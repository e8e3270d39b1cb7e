"""Temperature scaling: the fitted temperature, ECE and NLL before and after, the reliability diagram."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from smalldata_pl.inference import Predictor
from smalldata_pl.inference.calibration import (
    calibrate_from_labelled_images,
    calibration_report,
    fit_temperature,
    reliability_diagram,
)


def _calibrated(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (n, k))
    probabilities = torch.from_numpy(logits).softmax(dim=1).numpy()
    labels = np.array([rng.choice(k, p=p) for p in probabilities])
    return logits, labels


def test_fitted_temperature_undoes_fivefold_overconfidence():
    true_logits, labels = _calibrated(4000, 4, seed=0)
    temperature = fit_temperature(5 * true_logits, labels)
    assert temperature == pytest.approx(5.0, rel=0.1)
    assert fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.1)
    report = calibration_report(5 * true_logits, labels, temperature)
    assert report["ece_after"] < report["ece_before"] / 3
    assert report["nll_after"] < report["nll_before"]
    assert report["temperature"] == temperature and report["images"] == 4000
    assert report["accuracy"] == pytest.approx(np.mean(true_logits.argmax(axis=1) == labels))


def test_fit_temperature_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros((3, 2)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1, 2]))


def test_reliability_diagram_is_a_png(tmp_path):
    logits, labels = _calibrated(300, 3, seed=1)
    probabilities = torch.from_numpy(logits).softmax(dim=1).numpy()
    before = torch.from_numpy(4 * logits).softmax(dim=1).numpy()
    path = reliability_diagram(probabilities, labels, tmp_path / "figs" / "reliability.png", before=before)
    assert path.is_file() and Image.open(path).format == "PNG"


class BrightnessClassifier(nn.Module):
    """Logits 8 * (b - 0.5, 0.5 - b) of the mean normalised brightness b: far too confident."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.mean((1, 2, 3))
        return torch.stack([b, -b], dim=1) * self.scale


def _predictor(**kwargs: object) -> Predictor:
    record = {"task": "toy", "class_names": ["bright", "dark"], "in_chans": 1, "mean": [0.5], "std": [0.25]}
    return Predictor(BrightnessClassifier(), {**record, "image_size": 8}, **kwargs)


def test_calibrate_from_labelled_images_writes_the_report_and_diagram(tmp_path):
    rng = np.random.default_rng(2)
    brightness = rng.uniform(0.35, 0.65, 200)
    # The true chance of "bright" rises gently with brightness; the model jumps from 0 to 1.
    labels = ["bright" if rng.random() < 0.5 + (b - 0.5) * 1.5 else "dark" for b in brightness]
    images = [np.full((8, 8), b, np.float32) for b in brightness]
    report = calibrate_from_labelled_images(_predictor(), list(zip(images, labels, strict=True)), tmp_path / "cal")
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text()) == report
    assert Image.open(tmp_path / "cal" / "reliability.png").format == "PNG"
    assert report["temperature"] > 1.5 and report["ece_after"] < report["ece_before"]
    with pytest.raises(ValueError, match="not one of the model's classes"):
        calibrate_from_labelled_images(_predictor(), [(images[0], "grey")], tmp_path / "x")


def test_predictor_divides_logits_by_the_temperature_and_keeps_raw_logits():
    image = np.full((8, 8), 0.55, np.float32)
    plain, cooled = _predictor().predict(image), _predictor(temperature=4.0).predict(image)
    assert plain.logits is not None and cooled.probabilities is not None
    np.testing.assert_allclose(cooled.logits, plain.logits)
    np.testing.assert_allclose(cooled.probabilities, torch.from_numpy(plain.logits / 4).softmax(0).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        _predictor(temperature=0.0)
