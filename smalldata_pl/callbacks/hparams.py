"""The TensorBoard HParams tab: each run's settings beside its final metrics, so runs compare at a glance."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from smalldata_pl.io.output_folder import SETTINGS_FILE  # also re-exported: its home was this module
from smalldata_pl.io.tables import write_json


def comparable_settings(model: Any, datamodule: Any, trainer: Any) -> dict[str, Any]:
    """Scalar settings that tell runs apart: backbone, pretrained weights, LR, image size, batch size, epochs."""
    settings: dict[str, Any] = {"model": type(model).__name__, "data": type(datamodule).__name__}
    for prefix, hparams in (("model", getattr(model, "hparams", {})), ("data", getattr(datamodule, "hparams", {}))):
        for key, value in dict(hparams).items():
            if isinstance(value, bool | int | float | str) and key not in ("class_names", "root", "manifest"):
                settings[f"{prefix}.{key}"] = value
    optimizers = getattr(trainer, "optimizers", None) or []
    if optimizers:
        settings["optimizer"] = type(optimizers[0]).__name__
        settings["lr"] = float(optimizers[0].defaults.get("lr", 0.0))
    settings["max_epochs"] = int(getattr(trainer, "max_epochs", 0) or 0)
    return settings


class HParamsSummary(Callback):
    """At the end of ``fit``, log the run's settings with its final ``val/*`` (or ``train/*``) metrics as HParams."""

    @override
    @rank_zero_only
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or trainer.fast_dev_run:  # type: ignore[attr-defined]
            return
        metrics = _final_metrics(trainer.callback_metrics)
        settings = comparable_settings(pl_module, trainer.datamodule, trainer)  # type: ignore[attr-defined]
        logger.log_hyperparams(settings, metrics)
        write_json(Path(logger.log_dir) / SETTINGS_FILE, settings)


def _final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    chosen = {k: float(v) for k, v in metrics.items() if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1}
    if not chosen:  # no validation loop (num_folds: null): the final training metrics
        chosen = {k: float(v) for k, v in metrics.items() if k.startswith("train/") and k.endswith("_epoch")}
    return {f"final/{k}": v for k, v in chosen.items()}
