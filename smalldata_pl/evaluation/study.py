"""Learning-curve studies: score vs labelled images per class for several transfer strategies, resumable."""

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smalldata_pl.evaluation.progress import RunProgress
from smalldata_pl.evaluation.runs import RunFactory
from smalldata_pl.io.tables import write_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Each strategy is a set of `smalldata fit` overrides applied on top of the study's config; {probe} and {staged}
# become a StagedUnfreezing callback that never unfreezes or follows the plan, {fitted_probe} a LinearProbe that
# fits the head by logistic regression and stops (no training epochs), {lpft} that probe followed by {staged}.
# ``probe_views`` is that probe on every view the DataModule's invariances allow (up to 8 feature rows per image),
# validated with test-time augmentation over the same views (configs/probe_views_efficientnet_lite0_offline.yaml).
STRATEGIES: dict[str, list[str]] = {
    "scratch": ["--model.init_args.pretrained=false", "--trainer.callbacks=[]", "--data.init_args.augmentation=none"],
    "linear_probe": ["--trainer.callbacks={probe}", "--data.init_args.augmentation=none"],
    "probe": [
        "--trainer.callbacks={fitted_probe}",
        "--data.init_args.augmentation=none",
        "--trainer.check_val_every_n_epoch=1",
    ],
    "probe_views": [
        "--trainer.callbacks={fitted_probe_views}",
        "--data.init_args.augmentation=none",
        "--trainer.check_val_every_n_epoch=1",
        "--model.init_args.tta=true",
    ],
    "full_finetune": ["--trainer.callbacks=[]", "--data.init_args.augmentation=none"],
    "staged": ["--trainer.callbacks={staged}", "--data.init_args.augmentation=none"],
    "staged_aug": ["--trainer.callbacks={staged}", "--data.init_args.augmentation=micrograph"],
    "lpft": ["--trainer.callbacks={lpft}", "--data.init_args.augmentation=micrograph"],
    "synthetic_staged_aug": [
        "--trainer.callbacks={staged}",
        "--data.init_args.augmentation=micrograph",
        "--model.init_args.pretrained={synthetic_encoder}",
    ],
}
# The recommended recipe's unfreezing settings (configs/exercise_efficientnet_lite0_offline.yaml).
STAGED_ARGS = '{"lr_decay": 0.2, "keep_bn_eval": true, "warmup_steps": 10}'
FIELDS = ["strategy", "per_class", "repeat", "fold", "val_acc", "val_f1", "val_loss", "seconds"]


def strategy_callbacks(plan: list[int], staged_args: dict, probe_args: dict | None = None) -> dict[str, str]:
    """The ``--trainer.callbacks`` values of the strategies' placeholders (see :data:`STRATEGIES`).

    Args:
        plan: ``unfreeze_at`` of the staged strategies.
        staged_args: Other StagedUnfreezing arguments.
        probe_args: LinearProbe arguments of ``probe``, ``probe_views`` and ``lpft`` (``C``, ``views`` …) besides
            ``probe_only``; ``probe_views`` always uses ``views: invariances``.
    """

    def staged(unfreeze_at: list[int]) -> dict:
        init_args = {**staged_args, "unfreeze_at": unfreeze_at}
        return {"class_path": "smalldata_pl.callbacks.StagedUnfreezing", "init_args": init_args}

    def fitted(probe_only: bool, **fixed: str) -> dict:
        init_args = {**(probe_args or {}), **fixed, "probe_only": probe_only}
        return {"class_path": "smalldata_pl.callbacks.LinearProbe", "init_args": init_args}

    return {
        "probe": json.dumps([staged([])]),
        "staged": json.dumps([staged(plan)]),
        "fitted_probe": json.dumps([fitted(True)]),
        "fitted_probe_views": json.dumps([fitted(True, views="invariances")]),
        "lpft": json.dumps([fitted(False), staged(plan)]),
    }


def run_study(
    new_run: RunFactory,
    strategies: Sequence[str],
    sizes: Sequence[int | None],
    repeats: int,
    folds: int | None,
    callbacks: dict[str, str],
    synthetic_encoder: str,
    out: Path,
    shard: tuple[int, int] = (0, 1),
) -> list[dict]:
    """Run every missing point of this shard, then write results.csv, curve.png, TensorBoard and summary.md.

    Args:
        new_run: Builds a fresh run from overrides of the study's base configuration.
        strategies: Names from :data:`STRATEGIES`.
        sizes: Labelled images per class; ``None`` is the full training fold.
        repeats: Random subsamples per size.
        folds: Folds evaluated per subsample; ``None``: every fold of the DataModule.
        callbacks: ``--trainer.callbacks`` values of the placeholders (:func:`strategy_callbacks`).
        synthetic_encoder: Encoder file of ``synthetic_staged_aug``.
        out: Study folder (``points/``, ``runs/`` and the outputs).
        shard: ``(i, n)``: run every n-th point starting at i.

    Returns:
        The rows of every finished point (of all shards).
    """
    points = out / "points"
    points.mkdir(parents=True, exist_ok=True)
    values = {**callbacks, "synthetic_encoder": synthetic_encoder}
    index, count = shard
    every = study_points(strategies, sizes, repeats, folds or _num_folds(new_run))
    mine = every[index::count]
    todo = [p for p in mine if not (points / f"{_key(*p)}.json").is_file()]  # finished points are never redone
    progress = RunProgress("point", len(todo))
    for number, (strategy, size, repeat, fold) in enumerate(todo):
        key = _key(strategy, size, repeat, fold)
        done = points / f"{key}.json"
        progress.starting(number, key)
        start = time.perf_counter()
        args = [
            *(_render(a, values) for a in STRATEGIES[strategy]),
            f"--data.init_args.fold={fold}",
            f"--data.init_args.subsample_seed={repeat}",
            f"--data.init_args.train_per_class={size if size is not None else 'null'}",
            "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
            f"--trainer.logger.save_dir={out / 'runs'}",
            f"--trainer.logger.name={key}",
            "--trainer.logger.version=",
            "--checkpoint.save_top_k=0",
            "--checkpoint.save_last=false",
        ]
        run = new_run(args)
        run.trainer.fit(run.model, datamodule=run.datamodule)
        metrics = {k: float(v) for k, v in run.trainer.callback_metrics.items()}
        row = {
            "strategy": strategy,
            "per_class": size or "all",
            "repeat": repeat,
            "fold": fold,
            "val_acc": metrics["val/acc"],
            "val_f1": metrics["val/f1"],
            "val_loss": metrics["val/loss"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        partial = done.with_suffix(".part")
        partial.write_text(json.dumps(row))
        partial.replace(done)  # atomic: a process killed while writing leaves no half-written point
        progress.finished()
    rows = finished_points(out)
    write_outputs(rows, out)
    return rows


def _key(strategy: str, size: int | None, repeat: int, fold: int) -> str:
    return f"{strategy}_n{size or 'all'}_r{repeat}_f{fold}"


def finished_points(out: Path) -> list[dict]:
    """The rows of every finished point under ``out/points``, in file-name order."""
    return [json.loads(p.read_text()) for p in sorted((out / "points").glob("*.json"))]


def study_points(
    strategies: Sequence[str], sizes: Sequence[int | None], repeats: int, folds: int
) -> list[tuple[str, int | None, int, int]]:
    """Every ``(strategy, size, repeat, fold)`` of a study in run order (the full set, ``None``, is drawn once)."""
    return [
        (strategy, size, repeat, fold)
        for size in sizes
        for strategy in strategies
        for repeat in range(repeats if size is not None else 1)
        for fold in range(folds)
    ]


def _render(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _num_folds(new_run: RunFactory) -> int:
    return int(getattr(new_run(["--trainer.logger=false"]).datamodule, "num_folds", 1))


def aggregate(rows: Sequence[dict], metric: str = "val_acc") -> dict[str, dict[str, tuple[float, float, int]]]:
    """``{strategy: {per_class: (mean, std, n)}}`` over repeats and folds."""
    table: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        table.setdefault(row["strategy"], {}).setdefault(str(row["per_class"]), []).append(float(row[metric]))
    order = [s for s in STRATEGIES if s in table] + sorted(s for s in table if s not in STRATEGIES)
    return {
        s: {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)) for k, v in sizes.items()}
        for s, sizes in ((s, table[s]) for s in order)
    }


def write_outputs(rows: Sequence[dict], out: Path) -> None:
    """results.csv (tidy), curve.png, a TensorBoard figure and summary.md."""
    write_csv(out / "results.csv", rows, FIELDS)
    table = aggregate(rows)
    figure = _plot(table)
    figure.savefig(out / "curve.png", dpi=120)
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out / "tensorboard")) as writer:
        writer.add_figure("study/accuracy_vs_labels_per_class", figure)
    sizes = sorted({k for s in table.values() for k in s}, key=_size_key)
    lines = ["| strategy | " + " | ".join(f"{s} / class" for s in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for strategy, points in table.items():
        cells = [f"{points[s][0]:.3f} ± {points[s][1]:.3f} (n={points[s][2]})" if s in points else "" for s in sizes]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    (out / "summary.md").write_text(
        "# Learning curve: validation accuracy, mean ± std over subsamples and folds\n\n" + "\n".join(lines) + "\n"
    )


def _size_key(size: str) -> float:
    return float("inf") if size == "all" else float(size)


def _plot(table: dict[str, dict[str, tuple[float, float, int]]]) -> "Figure":
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for strategy, points in table.items():
        sizes = sorted(points, key=_size_key)
        numeric = [s for s in sizes if s != "all"]
        x = np.array([float(s) for s in numeric])
        mean = np.array([points[s][0] for s in numeric])
        std = np.array([points[s][1] for s in numeric])
        line = axis.plot(x, mean, marker="o", label=strategy)[0] if len(x) else None
        if line is not None:
            axis.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color())
        if "all" in points:
            axis.axhline(points["all"][0], linestyle=":", color=line.get_color() if line else None)
    ticks = sorted({float(s) for points in table.values() for s in points if s != "all"})
    axis.set(xscale="log", xlabel="labelled images per class", ylabel="validation accuracy")
    axis.set_xticks(ticks, [f"{t:g}" for t in ticks], minor=False)
    axis.minorticks_off()
    axis.set_title("mean ± std over subsamples and folds; dotted: all images", fontsize=9)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure
