"""Aggregating fold runs: final validation metrics per fold, mean ± std and a 95 % interval."""

import csv
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

METRICS = ("val/acc", "val/f1", "val/loss")


def final_metrics(run_dir: Path, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """The last logged value of each metric in a TensorBoard run folder.

    Raises:
        FileNotFoundError: If the folder holds no event file, or a metric was never logged.
    """
    events = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not events:
        raise FileNotFoundError(f"no TensorBoard event file under {run_dir}")
    values: dict[str, tuple[int, float]] = {}
    for event_file in events:
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in metrics:
            if tag in accumulator.Tags()["scalars"]:
                last = accumulator.Scalars(tag)[-1]
                if tag not in values or last.wall_time >= values[tag][0]:
                    values[tag] = (last.wall_time, last.value)
    absent = [m for m in metrics if m not in values]
    if absent:
        raise FileNotFoundError(f"{run_dir} never logged {absent}; did the fold's fit finish with validation?")
    return {tag: value for tag, (_, value) in values.items()}


def summarize(per_fold: dict[str, dict[str, float]]) -> dict:
    """Mean, sample std and a t-based 95 % confidence interval of each metric over folds."""
    summary: dict = {"num_folds": len(per_fold), "folds": per_fold, "metrics": {}}
    for metric in next(iter(per_fold.values())):
        values = np.array([fold[metric] for fold in per_fold.values()], dtype=np.float64)
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        half = float(stats.t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values))) if len(values) > 1 else 0.0
        summary["metrics"][metric] = {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}
    return summary


def collect_folds(cv_dir: Path) -> dict[str, dict[str, float]]:
    """Final metrics of every ``fold_*`` run under ``cv_dir``, in fold order."""
    folds = sorted((p for p in cv_dir.glob("fold_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    if not folds:
        raise FileNotFoundError(f"no fold_<k> run folders under {cv_dir}")
    return {p.name: final_metrics(p) for p in folds}


def write_summary(cv_dir: Path, summary: dict) -> None:
    """Write ``summary.json``, ``summary.csv`` and a TensorBoard hparams entry into ``cv_dir``."""
    (cv_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    metrics = list(summary["metrics"])
    with (cv_dir / "summary.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", *metrics])
        for fold, values in summary["folds"].items():
            writer.writerow([fold, *(f"{values[m]:.6f}" for m in metrics)])
        for stat in ("mean", "std", "ci95_low", "ci95_high"):
            writer.writerow([stat, *(f"{summary['metrics'][m][stat]:.6f}" for m in metrics)])
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(cv_dir / "summary")) as writer:
        flat = {f"cv/{m}_{s}": v for m, stat in summary["metrics"].items() for s, v in stat.items()}
        writer.add_hparams({"num_folds": summary["num_folds"]}, flat, run_name=".")


def format_summary(summary: dict) -> str:
    """One line per metric: ``val/acc  0.9712 ± 0.0150  (95 % CI 0.953–0.990)``."""
    lines = [f"{summary['num_folds']}-fold cross-validation (final epoch of each fold):"]
    for metric, s in summary["metrics"].items():
        lines.append(
            f"  {metric:<9} {s['mean']:.4f} ± {s['std']:.4f}  (95 % CI {s['ci95_low']:.4f} to {s['ci95_high']:.4f})"
        )
    return "\n".join(lines)
