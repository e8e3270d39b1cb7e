"""Temperature scaling of a classifier's logits: fit on labelled images, ECE and NLL before and after."""

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

from smalldata_pl.inference.predictor import Predictor
from smalldata_pl.io.images import ImageReadError
from smalldata_pl.io.tables import write_json

log = logging.getLogger(__name__)

# Confidence bins of the expected calibration error and the reliability diagram (torchmetrics' default).
N_BINS = 15
# Fitted temperatures are kept inside this range: when every labelled image is predicted right, the NLL keeps
# falling as T -> 0 and the optimum is at the boundary, which says "too few errors to calibrate on".
T_MIN, T_MAX = 1e-2, 1e2


def _as_tensors(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ...]:
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if z.ndim != 2 or y.ndim != 1 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"expected logits [N, K] and labels [N] with N > 0, got {tuple(z.shape)} and {tuple(y.shape)}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must be class indices 0 … {z.shape[1] - 1}, got {y.min()} … {y.max()}")
    return z, y


def fit_temperature(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """The temperature ``T > 0`` minimising the NLL of ``softmax(logits / T)`` on labelled examples (LBFGS).

    Optimised over ``log T`` so ``T`` stays positive; kept within [0.01, 100].

    Args:
        logits: ``[N, K]`` uncalibrated logits.
        labels: ``[N]`` true class indices.
    """
    z, y = _as_tensors(logits, labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")
    bounds = math.log(T_MIN), math.log(T_MAX)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z / log_t.clamp(*bounds).exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperature = float(log_t.detach().clamp(*bounds).exp())
    if not T_MIN * 1.01 < temperature < T_MAX / 1.01:
        log.warning(
            "fitted temperature %.3g is at the bound of [%g, %g]: the labelled images have too few (or only) errors "
            "to calibrate on; label more images",
            temperature,
            T_MIN,
            T_MAX,
        )
    return temperature


def calibration_report(
    logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, temperature: float
) -> dict[str, Any]:
    """Expected calibration error (15 bins, L1) and NLL of ``softmax(logits)`` and ``softmax(logits / T)``.

    Returns:
        ``images``, ``accuracy`` (unchanged by T), ``temperature``, ``ece_before``, ``ece_after``,
        ``nll_before``, ``nll_after``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z, y = _as_tensors(logits, labels)
    ece = MulticlassCalibrationError(num_classes=z.shape[1], n_bins=N_BINS, norm="l1")
    before, after = z.softmax(dim=1), (z / temperature).softmax(dim=1)
    return {
        "images": len(y),
        "accuracy": float((z.argmax(dim=1) == y).double().mean()),
        "temperature": float(temperature),
        "ece_before": float(ece(before.float(), y)),
        "ece_after": float(ece(after.float(), y)),
        "nll_before": float(F.cross_entropy(z, y)),
        "nll_after": float(F.cross_entropy(z / temperature, y)),
    }


def reliability_diagram(
    probabilities: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    path: str | Path,
    before: np.ndarray | torch.Tensor | None = None,
) -> Path:
    """Accuracy against confidence in 15 bins, as a PNG; a calibrated model lies on the diagonal.

    Args:
        probabilities: ``[N, K]`` class probabilities (after calibration, when ``before`` is given).
        labels: ``[N]`` true class indices.
        path: Where to write the PNG.
        before: ``[N, K]`` probabilities before calibration, drawn as a second line.
    """
    import matplotlib.pyplot as plt

    edges = np.linspace(0, 1, N_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    truth = np.asarray(labels)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    series = [("after", probabilities, "tab:blue")]
    if before is not None:
        series = [("before", before, "tab:red"), *series]
    for name, values, colour in series:
        p = np.asarray(values, dtype=np.float64)
        confidence, correct = p.max(axis=1), p.argmax(axis=1) == truth
        bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, N_BINS - 1)
        counts = np.bincount(bins, minlength=N_BINS)
        accuracy = np.bincount(bins, weights=correct, minlength=N_BINS) / np.maximum(counts, 1)
        filled = counts > 0
        label = name if before is not None else "model"
        top.plot(centres[filled], accuracy[filled], marker="o", color=colour, label=label)
        bottom.bar(centres, counts, width=1 / N_BINS, alpha=0.5, color=colour, label=label)
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title="reliability diagram")
    top.legend(loc="upper left")
    bottom.set(xlabel="confidence (top-class probability)", ylabel="images")
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=120)
    plt.close(figure)
    return target


def calibrate_from_labelled_images(
    predictor: Predictor, images_with_labels: Sequence[tuple[str | Path | np.ndarray, int | str]], out: str | Path
) -> dict[str, Any]:
    """Fit a temperature on labelled images the model was not trained on; write the evidence into ``out``.

    Uses each image's single-view logits (see :attr:`Prediction.logits`), whatever the predictor's TTA setting.
    Writes ``calibration.json`` (the :func:`calibration_report`) and ``reliability.png`` (before and after).
    Apply the temperature with ``smalldata apply --temperature T``. Fit it on a held-out labelled set, never on
    the images whose predictions are then reported.

    Args:
        predictor: A classifier's predictor.
        images_with_labels: ``(image file or array, class index or name)`` pairs.
        out: Output folder (created).

    Raises:
        ValueError: For a segmenter, an unknown class name or no readable image.
    """
    if predictor.segmentation:
        raise ValueError("temperature scaling calibrates classifiers' probabilities; this checkpoint is a segmenter")
    logits: list[np.ndarray] = []
    labels: list[int] = []
    for source, label in images_with_labels:
        if isinstance(label, str) and label not in predictor.class_names:
            raise ValueError(f"label {label!r} is not one of the model's classes {predictor.class_names}")
        index = predictor.class_names.index(label) if isinstance(label, str) else int(label)
        try:
            prediction = predictor.predict(source)
        except ImageReadError as error:
            log.warning("skipping %s", error)
            continue
        assert prediction.logits is not None
        logits.append(prediction.logits)
        labels.append(index)
    if not labels:
        raise ValueError("no readable labelled image to calibrate on")
    z, y = np.stack(logits), np.asarray(labels)
    temperature = fit_temperature(z, y)
    report = calibration_report(z, y, temperature)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "calibration.json", report)
    probabilities = torch.as_tensor(z, dtype=torch.float64)
    reliability_diagram(
        (probabilities / temperature).softmax(dim=1).numpy(),
        y,
        folder / "reliability.png",
        before=probabilities.softmax(dim=1).numpy(),
    )
    return report
