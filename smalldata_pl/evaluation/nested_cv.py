"""Nested cross-validation: a candidate is chosen on inner folds of each outer training fold, then scored outside.

Picking the best of several configurations by their cross-validation score and reporting that same score is
selection on the test folds: the winner's mean is optimistic, the more so the more candidates and the fewer
images. Here the choice for each outer fold is made by an inner K-fold split of that fold's *training* images
only (same grouping and stratification as the outer split); the chosen candidate is then retrained on the whole
outer training fold and scored on the outer validation fold, which no decision saw. The mean of those outer
scores estimates what the whole procedure (choose, then train) delivers on new micrographs.

The inner split needs a DataModule that lists its source images in ``records`` and splits them with
``num_folds``/``fold`` (:class:`~smalldata_pl.datamodules.MicrographFolder` and subclasses such as UHCS3,
:class:`~smalldata_pl.datamodules.SegmentationFolder`): for an inner run its ``records`` become the outer
training fold's images, already subsampled and verified, and ``num_folds``/``fold`` the inner fold.
"""

import copy
import csv
import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from smalldata_pl.datasets.folder import Record
from smalldata_pl.datasets.segmentation import MaskRecord, source_image
from smalldata_pl.evaluation.progress import RunProgress
from smalldata_pl.evaluation.runs import Run, RunFactory
from smalldata_pl.evaluation.summary import STATISTICS, format_summary, summarize
from smalldata_pl.io.tables import write_csv, write_json

Mode = Literal["min", "max"]
REPORT = "nested_cv.json"


@dataclass(frozen=True)
class Candidate:
    """One configuration to choose from: a name and its overrides of the base configuration.

    Args:
        name: Short name used in folders and tables (the YAML file's stem).
        overrides: Command-line overrides, e.g. ``("--config", "lr_low.yaml")``.
    """

    name: str
    overrides: tuple[str, ...]


@dataclass
class SplitFiles:
    """The source images of one outer fold: its training records, and ``(file, group)`` of each part."""

    train_records: list[Any]
    outer_val: list[tuple[str, str]]
    inner_val: list[list[tuple[str, str]]]


def candidates_from_files(paths: Sequence[str | Path]) -> list[Candidate]:
    """Candidates from YAML files of overrides (``model.init_args.optimizer...``, ``data.init_args.image_size``).

    Raises:
        FileNotFoundError: If a file does not exist.
        ValueError: If fewer than two are given or two share a file name (the name labels folders and tables).
    """
    if len(paths) < 2:
        raise ValueError(f"nested cv chooses between at least two candidates, got {len(paths)}; for one use `cv`")
    candidates: list[Candidate] = []
    seen: dict[str, Path] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"candidate config {path} does not exist; give YAML files of overrides")
        if path.stem in seen:
            raise ValueError(f"candidates {seen[path.stem]} and {path} share the name {path.stem!r}; rename one")
        seen[path.stem] = path
        candidates.append(Candidate(path.stem, ("--config", str(path))))
    return candidates


def run_nested_cv(
    new_run: RunFactory,
    candidates: Sequence[Candidate],
    cv_dir: Path,
    inner_folds: int = 3,
    metric: str | None = None,
    mode: Mode | None = None,
    reference: bool = True,
    base: Run | None = None,
) -> dict:
    """Choose a candidate per outer fold by inner CV, score it on the outer fold; write the report into ``cv_dir``.

    Every run leaves ``outer_<k>/<candidate>/{inner_<j>,outer}.json`` (its final ``val/*`` metrics and the files
    it trained and validated on) beside its TensorBoard folder; a run whose file exists is not trained again, so
    an interrupted command resumes where it stopped. ``outer_<k>/split.csv`` lists where each image sits.

    Args:
        new_run: Builds a fresh run from overrides of the base configuration (whose DataModule has ``num_folds``).
        candidates: The configurations to choose from.
        cv_dir: Folder of the runs and of ``nested_cv.json``, ``nested_cv.csv`` and ``nested_cv_summary.csv``.
        inner_folds: K of the inner split of each outer training fold.
        metric: The ``val/*`` metric the choice is made by; default the checkpoint's ``monitor``.
        mode: ``min`` or ``max``; default the checkpoint's mode for its monitor, else ``min`` for losses and
            ``max`` for anything else.
        reference: Also train the candidates not chosen on every outer fold, for their plain outer CV (a
            reference only: choosing by it is selection on the outer folds).
        base: The run of the base configuration if already built (its DataModule draws the outer folds);
            default one from ``new_run``.

    Returns:
        The report written to ``nested_cv.json``.
    """
    if inner_folds < 2:
        raise ValueError(f"inner_folds must be at least 2, got {inner_folds}")
    cv_dir.mkdir(parents=True, exist_ok=True)
    base = base or new_run(["--trainer.logger=false"])
    outer_folds = int(getattr(base.datamodule, "num_folds", None) or 0)
    if outer_folds < 2:
        raise ValueError(
            f"{type(base.datamodule).__name__} has no num_folds >= 2; nested cv needs a fold-aware DataModule"
        )
    metric, mode = _selection(base, metric, mode)
    todo = _runs_left(cv_dir, candidates, outer_folds, inner_folds, reference)
    progress = RunProgress("run", todo)
    folds: list[dict] = []
    for k in range(outer_folds):
        split = outer_split(base.datamodule, k, inner_folds)
        _record_split(cv_dir / f"outer_{k}" / "split.csv", split)
        inner: dict[str, list[dict]] = {}
        for candidate in candidates:
            inner[candidate.name] = [
                _fit(new_run, candidate, cv_dir, k, j, split, inner_folds, progress) for j in range(inner_folds)
            ]
        scores = {name: [_metric(r, metric) for r in runs] for name, runs in inner.items()}
        means = {name: sum(values) / len(values) for name, values in scores.items()}
        chosen = _best(means, mode)
        order = [c for c in candidates if c.name == chosen] + [c for c in candidates if reference and c.name != chosen]
        outer = {c.name: _fit(new_run, c, cv_dir, k, None, split, inner_folds, progress)["metrics"] for c in order}
        folds.append(
            {
                "outer_fold": k,
                "chosen": chosen,
                "inner": {name: {"mean": means[name], "folds": scores[name]} for name in scores},
                "outer": outer,
            }
        )
    report = _report(candidates, folds, metric, mode, inner_folds, reference)
    write_report(cv_dir, report)
    return report


def outer_split(base: Any, k: int, inner_folds: int) -> SplitFiles:
    """Outer fold ``k`` as the base DataModule (not set up) draws it, and the inner split of its training part."""
    datamodule = _split_only(base)
    datamodule.fold = k  # what --data.init_args.fold does, without parsing the configuration again
    datamodule.setup("fit")
    records = source_records(getattr(datamodule, "train_dataset", None))
    outer_val = source_files(getattr(datamodule, "val_dataset", None))
    inner_val = []
    for j in range(inner_folds):
        datamodule = _split_only(base)
        restrict(datamodule, records, inner_folds, j)
        try:
            datamodule.setup("fit")
        except ValueError as error:
            raise ValueError(
                f"the training part of outer fold {k} cannot be split into {inner_folds} inner folds: {error} "
                "(lower --inner_folds)"
            ) from error
        inner_val.append(source_files(getattr(datamodule, "val_dataset", None)))
    return SplitFiles(records, outer_val, inner_val)


def _split_only(base: Any) -> Any:
    """A copy of the DataModule (not set up) that only draws a split: a set-up one may cache its split by fold."""
    datamodule = copy.deepcopy(base)
    if hasattr(datamodule, "leakage_check"):
        # The duplicate search is most of a setup's time and does not change the split; every run checks its own.
        datamodule.leakage_check = "off"
    return datamodule


def restrict(datamodule: Any, records: Sequence[Any], num_folds: int, fold: int) -> None:
    """Make ``datamodule`` split only ``records`` (an outer training fold) into ``num_folds``, validating ``fold``.

    Its own split kind, seed, leakage check and tiling still apply. Subsampling options (``train_per_class``,
    ``train_limit``) are switched off: ``records`` is the outer training fold as it was trained on, subsample
    included. Call before ``setup``.

    Raises:
        TypeError: If the DataModule does not list its images in ``records`` or has no ``num_folds``/``fold``.
    """
    missing = [name for name in ("records", "num_folds", "fold") if not hasattr(datamodule, name)]
    if missing:
        raise TypeError(
            f"{type(datamodule).__name__} has no {', '.join(missing)}: nested cv needs a DataModule that lists its "
            "images in `records` and splits them by `num_folds`/`fold` (MicrographFolder, UHCS3, SegmentationFolder)"
        )
    datamodule.records = list(records)
    datamodule.num_folds, datamodule.fold = num_folds, fold
    changed: dict[str, int | None] = {"num_folds": num_folds, "fold": fold}
    for name in ("train_per_class", "train_limit"):
        if hasattr(datamodule, name):
            setattr(datamodule, name, None)
            changed[name] = None
    hparams = dict(getattr(datamodule, "hparams", {}))
    if set(changed) & set(hparams):
        # The logged settings (TensorBoard hparams, settings.json) then describe the inner split actually trained.
        datamodule.save_hyperparameters({**hparams, **{k: v for k, v in changed.items() if k in hparams}})


def source_records(dataset: Any) -> list[Any]:
    """The distinct source records of a dataset, in order: tiles map back to their whole micrograph."""
    records = getattr(dataset, "records", None) if dataset is not None else []
    if records is None:
        raise TypeError(f"{type(dataset).__name__} has no `records`; nested cv cannot tell which images it holds")
    whole = (dataclasses.replace(r, tile=None) if getattr(r, "tile", None) is not None else r for r in records)
    return list(dict.fromkeys(whole))


def source_files(dataset: Any) -> list[tuple[str, str]]:
    """``(file, group)`` of each distinct source image of a dataset (none for a missing one)."""
    return [_file_and_group(r) for r in source_records(dataset)]


def _file_and_group(record: Record | MaskRecord) -> tuple[str, str]:
    return str(source_image(record)), str(record.group)


def _selection(base: Run, metric: str | None, mode: Mode | None) -> tuple[str, Mode]:
    """The metric and direction of the choice: given, or the configured checkpoint's ``monitor`` and ``mode``."""
    checkpoint = getattr(base.trainer, "checkpoint_callback", None)
    monitor = getattr(checkpoint, "monitor", None)
    metric = metric or monitor
    if not metric:
        raise ValueError("no metric to choose by: pass --metric (e.g. val/acc) or configure checkpoint.monitor")
    if mode is None:
        mode = getattr(checkpoint, "mode", "min") if metric == monitor else ("min" if "loss" in metric else "max")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return metric, mode


def _fit(
    new_run: RunFactory,
    candidate: Candidate,
    cv_dir: Path,
    k: int,
    j: int | None,
    split: SplitFiles,
    inner_folds: int,
    progress: RunProgress,
) -> dict:
    """Train one run (inner fold ``j`` of outer fold ``k``, or the outer fold itself for ``j=None``) unless done."""
    folder = cv_dir / f"outer_{k}" / candidate.name
    name = "outer" if j is None else f"inner_{j}"
    done = folder / f"{name}.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(folder / name, ignore_errors=True)  # the logs of a run that was interrupted
    where = f"outer fold {k}" if j is None else f"inner fold {j} of outer fold {k}"
    progress.starting(progress.done, f"{candidate.name}, {where}")
    start = time.perf_counter()
    run = new_run(
        [
            *candidate.overrides,
            f"--data.init_args.fold={k}",
            "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
            f"--trainer.logger.save_dir={folder}",
            f"--trainer.logger.name={name}",
            "--trainer.logger.version=",
            "--trainer.logger.default_hp_metric=false",
            # Inner models are only scored; the outer ones keep their checkpoints as the fold models.
            *(["--checkpoint.save_top_k=0", "--checkpoint.save_last=false"] if j is not None else []),
        ]
    )
    if j is not None:
        restrict(run.datamodule, split.train_records, inner_folds, j)
    run.datamodule.setup("fit")
    train = source_files(getattr(run.datamodule, "train_dataset", None))
    val = source_files(getattr(run.datamodule, "val_dataset", None))
    expected = split.outer_val if j is None else split.inner_val[j]
    expected_train = [_file_and_group(r) for r in split.train_records]
    if j is not None:
        expected_train = sorted(set(expected_train) - set(expected))
    if sorted(val) != sorted(expected) or sorted(train) != sorted(expected_train):
        raise ValueError(
            f"candidate {candidate.name} ({' '.join(candidate.overrides)}) splits {where} differently from the base "
            "configuration: candidates may change the model and training, not which images are used (data.seed, "
            "split, num_folds, train_per_class, manifest)"
        )
    run.trainer.fit(run.model, datamodule=run.datamodule)
    metrics = {key: float(value) for key, value in run.trainer.callback_metrics.items() if key.startswith("val/")}
    result = {
        "candidate": candidate.name,
        "outer_fold": k,
        "inner_fold": j,
        "metrics": metrics,
        "seconds": round(time.perf_counter() - start, 1),
        "train_files": [file for file, _ in train],
        "val_files": [file for file, _ in val],
    }
    write_json(done, result, indent=1)  # atomic: a run killed while writing leaves no half-written result
    progress.finished()
    return result


def _metric(result: dict, metric: str) -> float:
    if metric not in result["metrics"]:
        raise ValueError(
            f"run {result['candidate']} (outer fold {result['outer_fold']}, inner fold {result['inner_fold']}) logged "
            f"no {metric}; it logged {sorted(result['metrics'])}. Choose one with --metric"
        )
    return float(result["metrics"][metric])


def _best(means: dict[str, float], mode: Mode) -> str:
    """The best candidate; a tie goes to the one listed first."""
    pick = min if mode == "min" else max
    return pick(means, key=lambda name: means[name])


def _runs_left(cv_dir: Path, candidates: Sequence[Candidate], outer: int, inner: int, reference: bool) -> int:
    """Runs still to train (exact with ``reference``; without it, one outer run per outer fold not yet scored)."""
    left = 0
    for k in range(outer):
        folders = [cv_dir / f"outer_{k}" / c.name for c in candidates]
        left += sum(not (f / f"inner_{j}.json").is_file() for f in folders for j in range(inner))
        outer_done = [(f / "outer.json").is_file() for f in folders]
        left += sum(not d for d in outer_done) if reference else int(not any(outer_done))
    return left


def _record_split(path: Path, split: SplitFiles) -> None:
    """Write where each image of the outer fold sits; a different split already recorded there is an error."""
    rows: list[dict[str, Any]] = [
        {"file": f, "group": g, "outer": "val", "inner_val_fold": ""} for f, g in split.outer_val
    ]
    for j, files in enumerate(split.inner_val):
        rows += [{"file": f, "group": g, "outer": "train", "inner_val_fold": j} for f, g in files]
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as handle:
            before = sorted(tuple(row.values()) for row in csv.DictReader(handle))
        if before != sorted(tuple(str(v) for v in row.values()) for row in rows):
            raise ValueError(
                f"{path} records a different split of this outer fold: the data or the split options changed since "
                "those runs; use a new --cv_dir"
            )
        return
    write_csv(path, rows)


def _report(
    candidates: Sequence[Candidate], folds: list[dict], metric: str, mode: Mode, inner_folds: int, reference: bool
) -> dict:
    nested = summarize({f"outer_{f['outer_fold']}": f["outer"][f["chosen"]] for f in folds})
    report: dict = {
        "metric": metric,
        "mode": mode,
        "outer_folds": len(folds),
        "inner_folds": inner_folds,
        "candidates": {c.name: list(c.overrides) for c in candidates},
        "folds": folds,
        "nested": nested,
    }
    if reference:
        report["reference"] = {
            c.name: summarize({f"outer_{f['outer_fold']}": f["outer"][c.name] for f in folds}) for c in candidates
        }
        means = {
            name: s["metrics"][metric]["mean"] for name, s in report["reference"].items() if metric in s["metrics"]
        }
        # The candidate one would pick by the outer scores themselves: its mean is the optimistic number.
        report["best_by_outer_scores"] = _best(means, mode) if means else None
    return report


def write_report(cv_dir: Path, report: dict) -> None:
    """``nested_cv.json`` (everything), ``nested_cv.csv`` (per outer fold) and ``nested_cv_summary.csv``."""
    write_json(cv_dir / REPORT, report)
    metric, names = report["metric"], list(report["candidates"])
    rows = []
    for fold in report["folds"]:
        row: dict[str, Any] = {"outer_fold": fold["outer_fold"], "chosen": fold["chosen"]}
        row.update({f"inner_mean {metric} {n}": round(fold["inner"][n]["mean"], 6) for n in names})
        row.update({f"outer {m} chosen": round(v, 6) for m, v in fold["outer"][fold["chosen"]].items()})
        row.update({f"outer {metric} {n}": round(fold["outer"][n][metric], 6) for n in names if n in fold["outer"]})
        rows.append(row)
    # Without reference runs, which candidates have an outer score differs between folds: empty cells then.
    write_csv(cv_dir / "nested_cv.csv", rows, list(dict.fromkeys(key for row in rows for key in row)))
    estimates = [("nested: chosen by inner CV", report["nested"])]
    estimates += [(f"plain outer CV: {name}", s) for name, s in report.get("reference", {}).items()]
    summary_rows = [
        {"estimate": label, "metric": m, **{stat: round(values[stat], 6) for stat in STATISTICS}}
        for label, s in estimates
        for m, values in s["metrics"].items()
    ]
    write_csv(cv_dir / "nested_cv_summary.csv", summary_rows, ["estimate", "metric", *STATISTICS])


def format_report(report: dict) -> str:
    """The choice per outer fold, the nested estimate and, for reference, each candidate's plain outer CV."""
    metric, mode = report["metric"], report["mode"]
    lines = [
        f"nested cross-validation: {report['outer_folds']} outer x {report['inner_folds']} inner folds, "
        f"{len(report['candidates'])} candidates, chosen per outer fold by the mean inner {metric} ({mode})"
    ]
    for fold in report["folds"]:
        inner = ", ".join(f"{n} {v['mean']:.4f}" for n, v in fold["inner"].items())
        score = fold["outer"][fold["chosen"]].get(metric, float("nan"))
        lines.append(
            f"  outer fold {fold['outer_fold']}: chose {fold['chosen']} (inner {metric}: {inner}); outer {metric} "
            f"{score:.4f}"
        )
    lines += [
        "nested estimate: the chosen candidate's outer scores (not chosen on themselves)",
        format_summary(report["nested"]),
    ]
    if "reference" in report:
        best = report.get("best_by_outer_scores")
        lines.append(f"each candidate's plain outer CV, for reference only: picking {best} by these is optimistic")
        width = max(len(n) for n in report["reference"])
        for name, summary in report["reference"].items():
            s = summary["metrics"].get(metric)
            if s is not None:
                flag = "  (optimistic)" if name == best else ""
                lines.append(
                    f"  {name:<{width}}  {metric} {s['mean']:.4f} ± {s['std']:.4f}  corrected "
                    f"{s['ci95_corrected_low']:.4f} to {s['ci95_corrected_high']:.4f}{flag}"
                )
    return "\n".join(lines)
