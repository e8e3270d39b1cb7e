"""``smalldata cv`` and ``smalldata cv-report``: every fold with a fresh model, and the honest summary."""

import argparse
import time
from pathlib import Path

import torch

from smalldata_pl.data.io import write_csv
from smalldata_pl.validation.summary import collect_folds, format_summary, summarize, write_summary


def cv_command(argv: list[str]) -> dict:
    """Run all folds of a config: ``smalldata cv -c config.yaml [--cv_dir DIR] [fit options]``."""
    parser = argparse.ArgumentParser(
        prog="smalldata cv",
        description="Run every fold (data.num_folds) with a fresh model, trainer and callbacks, then summarise. "
        "All other options are `smalldata fit` options (-c config.yaml, --data.init_args.num_folds 5, ...).",
    )
    parser.add_argument(
        "--cv_dir", default=None, help="parent folder of the fold runs (default lightning_logs/cv/<time>)"
    )
    known, fit_args = parser.parse_known_args(argv)
    cv_dir = Path(known.cv_dir or f"lightning_logs/cv/{time.strftime('%Y%m%d-%H%M%S')}")
    return run_cross_validation(fit_args, cv_dir)


def run_cross_validation(fit_args: list[str], cv_dir: Path) -> dict:
    """Fit every fold, save out-of-fold predictions and write the summary files into ``cv_dir``."""
    from smalldata_pl.cli import SmallDataCLI

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
        cli = SmallDataCLI(args=[*fit_args, f"--data.init_args.fold={fold}", *logger_args], run=False)
        num_folds = getattr(cli.datamodule, "num_folds", 0)
        if num_folds < 2:
            raise ValueError(f"{type(cli.datamodule).__name__} has no num_folds >= 2; cv needs a fold-aware DataModule")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        oof_rows += _predictions(cli, fold)
        fold += 1
    _write_rows(cv_dir / "oof_predictions.csv", oof_rows)
    summary = summarize(collect_folds(cv_dir))
    write_summary(cv_dir, summary)
    print(format_summary(summary))
    return summary


def _predictions(cli: object, fold: int) -> list[dict]:
    """Validation-fold predictions of the final model (no best-epoch selection on the fold it is scored on)."""
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule  # type: ignore[attr-defined]
    batches = trainer.predict(model, dataloaders=datamodule.val_dataloader())
    names = getattr(model, "class_names", None)
    rows = []
    for batch in batches or []:
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


def cv_report_command(argv: list[str]) -> dict:
    """Aggregate fold runs made as separate jobs: ``smalldata cv-report DIR`` (DIR holds ``fold_<k>/``)."""
    parser = argparse.ArgumentParser(
        prog="smalldata cv-report",
        description="Summarise fold runs (e.g. cluster array jobs of `smalldata fit --data.init_args.fold k "
        "--trainer.logger.init_args.save_dir DIR --trainer.logger.init_args.name fold_k "
        "--trainer.logger.init_args.version ''`) into summary.json/csv.",
    )
    parser.add_argument("cv_dir", type=Path)
    cv_dir = parser.parse_args(argv).cv_dir
    summary = summarize(collect_folds(cv_dir))
    write_summary(cv_dir, summary)
    print(format_summary(summary))
    return summary
