"""The linear probe: logistic regression on standardised frozen features, folded into one ``nn.Linear``."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

log = logging.getLogger(__name__)

# Inverse regularisation strengths the inner cross-validation chooses from (features are standardised).
DEFAULT_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
# C when none is given or it cannot be chosen. On standardised EfficientNet-Lite0 features of UHCS-3 (448 px,
# benchmarks/uhcs3_probe.py) the held-out accuracy barely depends on C: the inner-CV choice (anywhere from 0.01 to
# 10) scored 0.875 / 0.917 / 0.979 at 5 / 10 / all images per class, C = 1 scored 0.872 / 0.920 / 0.979.
DEFAULT_C = 1.0


@dataclass
class ProbeSolution:
    """A fitted probe as the weights of a linear layer on the raw (unstandardised) features.

    Attributes:
        weight: ``[num_classes, F]``; the standardisation is folded in.
        bias: ``[num_classes]``.
        C: The inverse regularisation strength used.
        inner_accuracy: Mean accuracy of the chosen C on the inner validation folds; ``None`` without inner CV.
        train_accuracy: Accuracy on the rows it was fitted on.
        estimator: The fitted scikit-learn pipeline (scaler, logistic regression).
    """

    weight: np.ndarray
    bias: np.ndarray
    C: float
    inner_accuracy: float | None
    train_accuracy: float
    estimator: Pipeline


def fit_probe(
    features: np.ndarray,
    labels: Sequence[int],
    groups: Sequence[str],
    num_classes: int,
    C: float | Literal["cv"] = DEFAULT_C,
    Cs: Sequence[float] = DEFAULT_CS,
    inner_folds: int = 5,
    max_iter: int = 5000,
    seed: int = 0,
) -> ProbeSolution:
    """Fit a multinomial logistic regression on standardised ``features`` and fold it into linear weights.

    Args:
        features: ``[N, F]`` pooled features (several rows per image when views are used).
        labels: Class index per row.
        groups: Group per row; the inner cross-validation never splits a group (nor the views of an image).
        num_classes: Number of classes of the model head; every class needs rows.
        C: Inverse L2 strength, or ``cv``: the C of ``Cs`` with the lowest inner cross-validated log-loss.
        Cs: Candidates for ``C='cv'``.
        inner_folds: Folds of the inner group-stratified split (fewer when a class has fewer groups; with fewer
            than two groups in some class it cannot run and ``DEFAULT_C`` is used, with a warning).
        max_iter: L-BFGS iterations.
        seed: Shuffling seed of the inner split.

    Raises:
        ValueError: If a class has no rows or the shapes disagree.
    """
    x, y, g = np.asarray(features, dtype=np.float64), np.asarray(labels), np.asarray(groups)
    if x.ndim != 2 or len(x) != len(y) or len(y) != len(g):
        raise ValueError(f"features {x.shape}, {len(y)} labels and {len(g)} groups do not line up")
    absent = sorted(set(range(num_classes)) - set(y.tolist()))
    if absent:
        raise ValueError(
            f"classes {absent} have no training images, so the probe cannot score them; give every class at least "
            "one training image (check train_per_class and the split)"
        )
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=DEFAULT_C, max_iter=max_iter))
    inner_accuracy = None
    chosen = DEFAULT_C if C == "cv" else float(C)
    if C == "cv":
        fewest = min(len(np.unique(g[y == label])) for label in range(num_classes))
        folds = min(inner_folds, fewest)
        if folds < 2:
            log.warning("a class has only %d group(s): no inner cross-validation, C=%g", fewest, DEFAULT_C)
        else:
            search = GridSearchCV(
                pipeline,
                {"logisticregression__C": list(Cs)},
                scoring={"log_loss": "neg_log_loss", "accuracy": "accuracy"},
                refit=False,
                cv=StratifiedGroupKFold(folds, shuffle=True, random_state=seed),
            )
            search.fit(x, y, groups=g)
            results = search.cv_results_
            if np.isnan(results["mean_test_log_loss"]).all():  # e.g. every inner training fold lacked a class
                log.warning("the inner cross-validation failed for every C; using C=%g", DEFAULT_C)
            else:
                best = int(np.nanargmax(results["mean_test_log_loss"]))
                chosen = float(Cs[best])
                inner_accuracy = float(results["mean_test_accuracy"][best])
    estimator = clone(pipeline).set_params(logisticregression__C=chosen).fit(x, y)
    weight, bias = _folded(estimator, num_classes)
    train_accuracy = float(np.mean(estimator.predict(x) == y))
    return ProbeSolution(weight, bias, chosen, inner_accuracy, train_accuracy, estimator)


def _folded(estimator: Pipeline, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights on raw features: ``W (x - mean) / scale + b = (W / scale) x + (b - W mean / scale)``."""
    scaler: StandardScaler = estimator[0]
    classifier: LogisticRegression = estimator[-1]
    coef = classifier.coef_ / scaler.scale_
    intercept = classifier.intercept_ - coef @ scaler.mean_
    if num_classes == 2 and len(coef) == 1:
        # Binary: scikit-learn keeps one logit (class 1 against class 0); split it over two symmetric rows, so the
        # softmax of the pair equals its sigmoid and their difference equals decision_function.
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    order = np.argsort(classifier.classes_)
    return coef[order], intercept[order]


def write_linear(linear: nn.Linear, solution: ProbeSolution) -> None:
    """Copy the probe into ``linear`` (its weights keep their dtype and device).

    Raises:
        ValueError: If the layer's shape is not ``[num_classes, F]`` of the probe or it has no bias.
    """
    if tuple(linear.weight.shape) != solution.weight.shape:
        raise ValueError(
            f"the probe has shape {solution.weight.shape} but the head's linear layer {tuple(linear.weight.shape)}"
        )
    if linear.bias is None:
        raise ValueError("the head's linear layer has no bias; the probe needs one")
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(solution.weight))
        linear.bias.copy_(torch.from_numpy(solution.bias))
