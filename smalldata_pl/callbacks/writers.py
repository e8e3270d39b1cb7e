"""Prediction writers: class-index mask PNGs for segmenters, a CSV for classifiers."""

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from typing_extensions import override

from smalldata_pl.io.tables import write_csv


class PredictionWriter(BasePredictionWriter):
    """Write predictions: ``masks/<name>.png`` for segmentation, ``predictions.csv`` for classification.

    Args:
        output_dir: Target folder; default ``<log dir>/predictions``.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self._rows: list[dict] = []

    def _folder(self, trainer: Trainer) -> Path:
        folder = Path(self.output_dir or Path(trainer.log_dir or ".") / "predictions")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        names = prediction.get("path") or [str(g).replace(":", "_") for g in prediction["group"]]
        predicted = prediction["prediction"].cpu().numpy()
        if predicted.ndim == 3:  # masks
            for name, mask in zip(names, predicted, strict=True):
                path = self._folder(trainer) / "masks" / f"{Path(name).stem}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8)).save(path)
            return
        classes = getattr(pl_module, "class_names", None)
        for name, index, scores in zip(names, predicted, prediction["probabilities"].cpu().numpy(), strict=True):
            row = {"sample": name, "prediction": classes[index] if classes else int(index)}
            row.update(
                {f"p_{c}": round(float(p), 6) for c, p in zip(classes or range(len(scores)), scores, strict=True)}
            )
            self._rows.append(row)

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._rows:
            write_csv(self._folder(trainer) / "predictions.csv", self._rows)
            self._rows = []
