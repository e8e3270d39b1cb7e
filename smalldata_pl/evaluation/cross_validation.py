"""Cross-validation: every fold with a fresh model, out-of-fold predictions and the summary."""

import shutil
from pathlib import Path
from typing import Any

import torch

from smalldata_pl.evaluation.progress import RunProgress
from smalldata_pl.evaluation.runs import Run, RunFactory
from smalldata_pl.evaluation.summary import collect_folds, summarize, write_summary
from smalldata_pl.io.images import write_label_image
from smalldata_pl.io.output_folder import mask_file_name
from smalldata_pl.io.tables import write_csv


def run_cross_validation(new_run: RunFactory, cv_dir: Path) -> dict:
    """Fit every fold, save out-of-fold predictions and write the summary files into ``cv_dir``.

    Out-of-fold predictions go to ``oof_predictions.csv``: one row per held-out image with the predicted class
    and the class probabilities for classifiers; for segmenters the row names the class-index mask PNG written
    to ``oof_masks/fold_<k>/``. The summary covers every ``val/*`` scalar the task logs.

    Args:
        new_run: Builds a fresh run (model, trainer, callbacks) from overrides; called once per fold.
        cv_dir: Parent folder of the fold runs (``fold_<k>/``) and of the summary files.

    Returns:
        The summary: mean, std and interval of every final validation metric.
    """
    cv_dir.mkdir(parents=True, exist_ok=True)
    oof_rows: list[dict] = []
    fold, num_folds = 0, 1
    progress: RunProgress | None = None
    while fold < num_folds:
        logger_args = [
            "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger",
            f"--trainer.logger.save_dir={cv_dir}",
            f"--trainer.logger.name=fold_{fold}",
            "--trainer.logger.version=",
            "--trainer.logger.default_hp_metric=false",
        ]
        run = new_run([f"--data.init_args.fold={fold}", *logger_args])
        num_folds = getattr(run.datamodule, "num_folds", 0)
        if num_folds < 2:
            raise ValueError(f"{type(run.datamodule).__name__} has no num_folds >= 2; cv needs a fold-aware DataModule")
        progress = progress or RunProgress("fold", num_folds)
        progress.starting(fold)
        run.trainer.fit(run.model, datamodule=run.datamodule)
        oof_rows += _predictions(run, fold, cv_dir)
        progress.finished()
        fold += 1
    _write_rows(cv_dir / "oof_predictions.csv", oof_rows)
    names = getattr(run.model, "class_names", None)
    labelled = [r for r in oof_rows if "label" in r and "mask" not in r]
    if labelled and names:
        write_pooled_report(labelled, list(names), cv_dir)
    summary = summarize(collect_folds(cv_dir, range(num_folds)))
    write_summary(cv_dir, summary)
    return summary


def write_pooled_report(rows: list[dict], class_names: list[str], cv_dir: Path) -> None:
    """The out-of-fold predictions of all folds pooled: per-class report and normalised confusion matrix.

    Every image is predicted once, by the fold model that never saw it, so the pooled table is the honest
    per-class picture (a single fold has too few images per class). Writes ``oof_report.csv`` (precision,
    recall, F1 and support per class), ``oof_confusion.csv`` (rows: true class, normalised to 1) and
    ``oof_confusion.png``.
    """
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, precision_recall_fscore_support

    true = [int(r["label"]) for r in rows]
    predicted = [int(r["prediction"]) for r in rows]
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, labels=classes, zero_division=0)
    report = [
        {"class": name, "precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
         "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    ]  # fmt: skip
    write_csv(cv_dir / "oof_report.csv", report)
    matrix = confusion_matrix(true, predicted, labels=classes, normalize="true")
    write_csv(
        cv_dir / "oof_confusion.csv",
        [{"true": name, **{p: round(float(v), 4) for p, v in zip(class_names, row, strict=True)}}
         for name, row in zip(class_names, matrix, strict=True)],
    )  # fmt: skip
    figure, axis = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(ax=axis, values_format=".2f", colorbar=False)
    axis.set_title(f"out-of-fold, {len(rows)} images, rows normalised", fontsize=9)
    figure.tight_layout()
    figure.savefig(cv_dir / "oof_confusion.png", dpi=120)
    plt.close(figure)


def _predictions(run: Run, fold: int, cv_dir: Path) -> list[dict]:
    """Validation-fold predictions of the final model (no best-epoch selection on the fold it is scored on).

    Masks (a prediction per pixel) are written as class-index PNGs under ``cv_dir/oof_masks/fold_<fold>/`` and
    their rows name the file; class predictions get their probabilities in the row.
    """
    model = run.model
    batches: list[dict[str, Any]] = run.trainer.predict(model, dataloaders=run.datamodule.val_dataloader()) or []  # type: ignore[assignment]
    names = getattr(model, "class_names", None)
    mask_dir = cv_dir / "oof_masks" / f"fold_{fold}"
    shutil.rmtree(mask_dir, ignore_errors=True)  # this fold's masks of an earlier run in the same cv_dir
    rows: list[dict] = []
    for batch in batches:
        predictions: torch.Tensor = batch["prediction"]
        for i in range(len(predictions)):
            path = batch["path"][i] if "path" in batch else ""
            row: dict[str, Any] = {"fold": fold, "group": batch["group"][i], "path": path}
            if predictions.ndim == 3:  # a class index per pixel
                mask = mask_dir / _mask_name(path or f"sample_{len(rows)}", mask_dir)
                write_label_image(mask, predictions[i].cpu().numpy())
                row["mask"] = mask.relative_to(cv_dir).as_posix()
                rows.append(row)
                continue
            if "label" in batch:
                row["label"] = int(batch["label"][i])
            row["prediction"] = int(predictions[i])
            probabilities: torch.Tensor = batch["probabilities"][i]
            for k, p in enumerate(probabilities.tolist()):
                row[f"p_{names[k] if names else k}"] = round(p, 6)
            rows.append(row)
    return rows


def _mask_name(path: str, folder: Path) -> str:
    """``<stem>.png``, or ``<stem>-<digest of path>.png`` when an image of that stem was already written to ``folder``.

    The same rule as ``smalldata predict``'s masks (:func:`mask_file_name`); ``folder`` holds only this fold's masks.
    """
    return mask_file_name(Path(path).stem, path, lambda name: (folder / name).exists())


def _write_rows(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    write_csv(path, rows)
