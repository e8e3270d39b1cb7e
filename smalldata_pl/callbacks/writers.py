"""Prediction writers: class-index mask PNGs for segmenters, a CSV for classifiers."""

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

from smalldata_pl.io.images import write_label_image
from smalldata_pl.io.output_folder import mask_file_name  # also re-exported: its home was this module
from smalldata_pl.io.tables import write_csv

# Columns of the per-rank shards that restore the dataset order on merging; not part of predictions.csv.
ORDER_FIELDS = ("loader", "index")


class PredictionWriter(BasePredictionWriter):
    r"""Write predictions: ``masks/<name>.png`` for segmentation, ``predictions.csv`` for classification.

    A mask is named after its image's stem; an image whose stem an earlier image of the same run already took
    (``a/img.png`` and ``b/img.png``, or ``img.png`` and ``img.tif``) gets ``<stem>-<digest of its path>.png``
    instead (see :func:`mask_file_name`), so no mask overwrites another and a rerun gives the same names. Under
    DDP, where a rank cannot see the names the others took, every mask carries the digest. For segmentation
    ``predictions.csv`` lists each image with its mask file.

    Every file is written atomically (a temporary file renamed into place), and ``predictions.csv`` only once,
    at the end of the prediction epoch, so a crash never leaves a truncated table. Under DDP each rank writes
    its rows to ``predictions.rank<k>.csv``; after a barrier rank 0 merges them, in dataset order, into
    ``predictions.csv`` and deletes them. File names that are not valid UTF-8 are written as ``\xNN`` escapes.

    Args:
        output_dir: Target folder; default ``<log dir>/predictions``.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self._rows: list[dict] = []
        self._dir: Path | None = None
        self._mask_sources: dict[str, str] = {}  # mask file name -> the sample it was written for, this epoch

    def _folder(self, trainer: Trainer) -> Path:
        if self._dir is None:  # trainer.log_dir is a collective under DDP: every rank resolves it once, together
            self._dir = Path(self.output_dir or Path(trainer.log_dir or ".") / "predictions")
            self._dir.mkdir(parents=True, exist_ok=True)
        return self._dir

    @override
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._dir, self._rows, self._mask_sources = None, [], {}
        self._shard(self._folder(trainer), trainer.global_rank).unlink(missing_ok=True)  # a crashed run's leftover

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
        paths = prediction.get("path")
        names = paths or [str(g).replace(":", "_") for g in prediction["group"]]
        predicted = prediction["prediction"].cpu().numpy()
        indices = list(batch_indices) if batch_indices is not None else [None] * len(names)
        if predicted.ndim == 3:  # masks
            for name, index, mask in zip(names, indices, predicted, strict=True):
                position = _dataset_index(index, len(self._rows))
                # Without paths, samples of one group share a name: the dataset index tells them apart.
                source = name if paths else f"{name}#{dataloader_idx}:{position}"
                file_name = self._mask_name(Path(name).stem, source, trainer.world_size > 1)
                write_label_image(self._folder(trainer) / "masks" / file_name, mask)
                self._rows.append({"loader": dataloader_idx, "index": position, "sample": name, "mask": file_name})
            return
        classes = getattr(pl_module, "class_names", None)
        scores = prediction["probabilities"].cpu().numpy()
        for name, index, label, probabilities in zip(names, indices, predicted, scores, strict=True):
            row = {"loader": dataloader_idx, "index": _dataset_index(index, len(self._rows)), "sample": name}
            row["prediction"] = classes[label] if classes else int(label)
            row.update(
                {
                    f"p_{c}": round(float(p), 6)
                    for c, p in zip(classes or range(len(probabilities)), probabilities, strict=True)
                }
            )
            self._rows.append(row)

    def _mask_name(self, stem: str, source: str, distributed: bool) -> str:
        def taken(name: str) -> bool:
            return self._mask_sources.get(name, source) != source

        name = mask_file_name(stem, source, taken, always_digest=distributed)
        self._mask_sources[name] = source
        return name

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder, rows, self._rows = self._folder(trainer), self._rows, []
        target = folder / "predictions.csv"
        if trainer.world_size == 1:
            if rows:
                write_csv(target, [_without_index(r) for r in rows])
            return
        if rows:
            write_csv(self._shard(folder, trainer.global_rank), rows)
        trainer.strategy.barrier("prediction_shards")
        if trainer.global_rank == 0:
            merge_shards([self._shard(folder, rank) for rank in range(trainer.world_size)], target)
        trainer.strategy.barrier("prediction_merge")  # every rank returns with predictions.csv complete

    @staticmethod
    def _shard(folder: Path, rank: int) -> Path:
        return folder / f"predictions.rank{rank}.csv"


def merge_shards(shards: list[Path], target: Path) -> None:
    """Merge per-rank prediction tables into ``target`` in dataset order, then delete them (missing ones: no rows)."""
    rows: list[dict] = []
    fields: list[str] = []
    for shard in shards:
        if shard.is_file():
            with shard.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                fields = fields or list(reader.fieldnames or [])
                rows += list(reader)
    if rows:
        rows.sort(key=lambda r: (int(r["loader"]), int(r["index"])))
        write_csv(target, [_without_index(r) for r in rows], [f for f in fields if f not in ORDER_FIELDS])
    for shard in shards:
        shard.unlink(missing_ok=True)


def _dataset_index(index: Any, fallback: int) -> int:
    """The dataset index of a sampler item: an int, or the index of an ``(epoch, index)`` pair."""
    if index is None:
        return fallback
    return int(index[1]) if isinstance(index, tuple | list) else int(index)


def _without_index(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ORDER_FIELDS}
