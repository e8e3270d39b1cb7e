"""Cross-validation: every fold with a fresh model, out-of-fold predictions and the summary."""

from pathlib import Path
from typing import Any

import torch

from smalldata_pl.evaluation.runs import Run, RunFactory
from smalldata_pl.evaluation.summary import collect_folds, summarize, write_summary
from smalldata_pl.io.tables import write_csv


def run_cross_validation(new_run: RunFactory, cv_dir: Path) -> dict:
    """Fit every fold, save out-of-fold predictions and write the summary files into ``cv_dir``.

    Args:
        new_run: Builds a fresh run (model, trainer, callbacks) from overrides; called once per fold.
        cv_dir: Parent folder of the fold runs (``fold_<k>/``) and of the summary files.

    Returns:
        The summary: mean, std and interval of every final validation metric.
    """
    cv_dir.mkdir(parents=True, exist_ok=True)
    oof_rows: list[dict] = []
    fold, num_folds = 0, 1
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
        run.trainer.fit(run.model, datamodule=run.datamodule)
        oof_rows += _predictions(run, fold)
        fold += 1
    _write_rows(cv_dir / "oof_predictions.csv", oof_rows)
    summary = summarize(collect_folds(cv_dir))
    write_summary(cv_dir, summary)
    return summary


def _predictions(run: Run, fold: int) -> list[dict]:
    """Validation-fold predictions of the final model (no best-epoch selection on the fold it is scored on)."""
    model = run.model
    batches: list[dict[str, Any]] = run.trainer.predict(model, dataloaders=run.datamodule.val_dataloader()) or []  # type: ignore[assignment]
    names = getattr(model, "class_names", None)
    rows = []
    for batch in batches:
        for i in range(len(batch["prediction"])):
            row = {"fold": fold, "group": batch["group"][i], "path": batch.get("path", [""] * (i + 1))[i]}
            if "label" in batch:
                row["label"] = int(batch["label"][i])
            row["prediction"] = int(batch["prediction"][i])
            probabilities: torch.Tensor = batch["probabilities"][i]
            for k, p in enumerate(probabilities.tolist()):
                row[f"p_{names[k] if names else k}"] = round(p, 6)
            rows.append(row)
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    write_csv(path, rows)
