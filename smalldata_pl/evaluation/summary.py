"""Aggregating fold runs: final validation metrics per fold, mean ± std and two 95 % intervals.

The plain t-interval treats the K fold scores as independent, but every two folds share most of their training
data, so it is too narrow. The Nadeau-Bengio corrected resampled t-interval (Nadeau & Bengio 2003, "Inference
for the generalization error") widens it by replacing the variance of the mean ``s²/K`` with
``s²·(1/K + n_test/n_train)``; for K-fold ``n_test/n_train ≈ 1/(K-1)``. Both are reported.
"""

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from smalldata_pl.io.images import atomic_path
from smalldata_pl.io.output_folder import SETTINGS_FILE
from smalldata_pl.io.tables import write_json

PREFIX = "val/"
STATISTICS = ("mean", "std", "ci95_plain_low", "ci95_plain_high", "ci95_corrected_low", "ci95_corrected_high")


def final_metrics(run_dir: Path, prefix: str = PREFIX) -> dict[str, float]:
    """The last logged value of every scalar whose tag starts with ``prefix`` in a TensorBoard run folder.

    Raises:
        FileNotFoundError: If the folder holds no event file, or no such scalar was ever logged.
    """
    events = sorted(Path(run_dir).rglob("events.out.tfevents.*"))
    if not events:
        raise FileNotFoundError(f"no TensorBoard event file under {run_dir}")
    values: dict[str, tuple[float, float]] = {}
    for event_file in events:
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            if tag.startswith(prefix):
                last = accumulator.Scalars(tag)[-1]
                if tag not in values or last.wall_time >= values[tag][0]:
                    values[tag] = (last.wall_time, last.value)
    if not values:
        raise FileNotFoundError(f"{run_dir} never logged a {prefix}* scalar; did the fold's fit finish validating?")
    return {tag: value for tag, (_, value) in sorted(values.items())}


def summarize(per_fold: dict[str, dict[str, float]], test_train_ratio: float | None = None) -> dict:
    """Mean, sample std, and the plain and the Nadeau-Bengio corrected 95 % t-intervals of each metric.

    Args:
        per_fold: Final metrics of each fold.
        test_train_ratio: ``n_test/n_train`` of a fold, for the corrected interval; default ``1/(K-1)`` (K-fold).

    Metrics that some folds did not log are listed under ``incomplete_metrics`` rather than averaged.
    """
    k = len(per_fold)
    ratio = test_train_ratio if test_train_ratio is not None else (1.0 / (k - 1) if k > 1 else 0.0)
    names = [set(fold) for fold in per_fold.values()]
    common = set.intersection(*names) if names else set()
    summary: dict = {
        "num_folds": k,
        "folds": per_fold,
        "interval": {
            "ci95_plain": "mean ± t(0.975, K-1)·sqrt(s²/K)",
            "ci95_corrected": "mean ± t(0.975, K-1)·sqrt(s²·(1/K + n_test/n_train)) (Nadeau-Bengio)",
            "test_train_ratio": ratio,
        },
        "metrics": {},
        "incomplete_metrics": sorted(set.union(*names) - common) if names else [],
    }
    for metric in sorted(common):
        values = np.array([fold[metric] for fold in per_fold.values()], dtype=np.float64)
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if k > 1 else 0.0
        t = float(stats.t.ppf(0.975, k - 1)) if k > 1 else 0.0
        plain = t * math.sqrt(std**2 / k)
        corrected = t * math.sqrt(std**2 * (1.0 / k + ratio))
        summary["metrics"][metric] = {
            "mean": mean,
            "std": std,
            "ci95_plain_low": mean - plain,
            "ci95_plain_high": mean + plain,
            "ci95_corrected_low": mean - corrected,
            "ci95_corrected_high": mean + corrected,
        }
    return summary


def collect_folds(cv_dir: str | Path, folds: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
    """Final ``val/*`` metrics of the ``fold_<k>`` runs under ``cv_dir`` (all, or those in ``folds``), in fold order."""
    cv_dir = Path(cv_dir)
    found = sorted((p for p in cv_dir.glob("fold_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    if folds is not None:
        found = [p for p in found if int(p.name.split("_")[1]) in set(folds)]
    if not found:
        raise FileNotFoundError(f"no fold_<k> run folders under {cv_dir}")
    return {p.name: final_metrics(p) for p in found}


def write_summary(cv_dir: str | Path, summary: dict) -> None:
    """Write ``summary.json``, ``summary.csv`` (both atomically) and a TensorBoard hparams entry into ``cv_dir``."""
    cv_dir = Path(cv_dir)
    write_json(cv_dir / "summary.json", summary)
    metrics = list(summary["metrics"])
    with atomic_path(cv_dir / "summary.csv") as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", *metrics])
        for fold, values in summary["folds"].items():
            writer.writerow([fold, *(f"{values[m]:.6f}" for m in metrics)])
        for stat in STATISTICS:
            writer.writerow([stat, *(f"{summary['metrics'][m][stat]:.6f}" for m in metrics)])
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(cv_dir / "summary")) as writer:
        flat = {f"cv/{m}_{s}": v for m, stat in summary["metrics"].items() for s, v in stat.items()}
        # The settings the folds were trained with (fold 0's record), so cv runs compare by backbone, LR, size.
        settings_file = cv_dir / "fold_0" / SETTINGS_FILE
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        writer.add_hparams({**settings, "num_folds": summary["num_folds"]}, flat, run_name=".")


def format_summary(summary: dict) -> str:
    """One line per metric: mean ± std, the plain and the corrected 95 % interval."""
    k, ratio = summary["num_folds"], summary["interval"]["test_train_ratio"]
    lines = [
        f"{k}-fold cross-validation (final epoch of each fold); 95 % t-intervals: plain (folds as independent) and "
        f"corrected (Nadeau-Bengio: variance x (1/K + n_test/n_train), n_test/n_train = {ratio:.3f}):"
    ]
    width = max((len(m) for m in summary["metrics"]), default=0)
    for metric, s in summary["metrics"].items():
        lines.append(
            f"  {metric:<{width}}  {s['mean']:.4f} ± {s['std']:.4f}  "
            f"plain {s['ci95_plain_low']:.4f} to {s['ci95_plain_high']:.4f}  "
            f"corrected {s['ci95_corrected_low']:.4f} to {s['ci95_corrected_high']:.4f}"
        )
    if summary.get("incomplete_metrics"):
        lines.append(f"  not logged by every fold (left out): {', '.join(summary['incomplete_metrics'])}")
    return "\n".join(lines)
