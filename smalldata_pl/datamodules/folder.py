"""Users' own micrographs: a folder of class sub-folders or a CSV manifest, split into leak-free folds."""

import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from smalldata_pl.datamodules.base import MicrographDataModule
from smalldata_pl.datasets.folder import (
    MicrographFolderDataset,
    Record,
    find_records,
    resolve_image_set,
    tile_origins,
    unlabelled_records,
)
from smalldata_pl.datasets.leakage import (
    DuplicatePair,
    LeakageError,
    LeakageMode,
    Signature,
    describe,
    find_duplicates,
    signature,
)
from smalldata_pl.datasets.splits import SplitKind, check_no_group_leak, fold_indices
from smalldata_pl.io.images import ImageReadError, read_image
from smalldata_pl.transforms.invariances import LabelInvariances
from smalldata_pl.transforms.pipeline import ImagePipeline

log = logging.getLogger(__name__)


class MicrographFolder(MicrographDataModule):
    """Labelled micrographs from ``root/<class>/*.png`` or a CSV manifest ``file,label[,group]``.

    Every file is opened at setup, so a corrupt image, a missing file or a wrong label stops the run before
    training with the file's name. Splits are K-fold over source images (before tiling and augmentation) and
    a group on both sides of a split is an error.

    Example:
        >>> dm = MicrographFolder(root="my_micrographs", class_names=["ferrite", "pearlite"])  # doctest: +SKIP

    Args:
        root: Folder of class sub-folders, or the folder that manifest paths are relative to.
        manifest: CSV with columns ``file``, ``label`` (class name or index) and optionally ``group`` and
            ``pixel_size`` (µm per pixel, preferred to the file's metadata; see ``target_pixel_size``).
        class_names: Classes in index order; ``None`` takes sorted sub-folder names or manifest labels.
        augmentation: Training augmentation: preset name, Albumentations dict, or list of transforms.
        num_folds: K of the K-fold split; ``None`` trains on every labelled image with no validation loop (the
            final epoch, ``last.ckpt``, is the model).
        fold: Which fold validates (and tests, unless a held-out set is given).
        test_root: Folder of a labelled held-out set (class sub-folders, or what ``test_manifest`` paths are
            relative to), scored by ``smalldata test``; no decision during training sees it.
        test_manifest: CSV ``file,label[,group]`` of the held-out set.
        predict_root: Folder of unlabelled micrographs for ``smalldata predict`` (searched recursively), or what
            ``predict_manifest`` paths are relative to. Without it, predict covers the validation fold.
        predict_manifest: CSV with a ``file`` column listing the images to predict.
        split: ``stratified``, ``group`` or ``stratified_group``.
        tile_size: Cut each micrograph into square tiles of this side (each keeps its source as group).
        tile_stride: Step between tiles; defaults to ``tile_size`` (no overlap).
        strict: Stop at the first bad file; ``False`` skips bad files and reports each one.
        invariances: What the labels do not depend on; the augmentation is checked against it at setup.
        leakage_check: Look for the same micrograph (flipped, rotated, cropped, re-exposed) in training and
            validation at setup: ``error``, ``warn`` or ``off``.
        train_per_class: Keep only this many training images per class (learning curves), drawn group by
            group so a subsample never holds part of a group while the rest sits unused in validation.
        subsample_seed: Which random subsample (repeats of a learning-curve point).
        **kwargs: Loader, size and normalisation options of :class:`MicrographDataModule`.
    """

    def __init__(
        self,
        root: str | Path,
        manifest: str | Path | None = None,
        class_names: Sequence[str] | None = None,
        augmentation: str | dict | list | None = None,
        num_folds: int | None = 5,
        fold: int = 0,
        test_root: str | Path | None = None,
        test_manifest: str | Path | None = None,
        predict_root: str | Path | None = None,
        predict_manifest: str | Path | None = None,
        split: SplitKind = "stratified_group",
        tile_size: int | None = None,
        tile_stride: int | None = None,
        strict: bool = True,
        invariances: LabelInvariances | None = None,
        leakage_check: LeakageMode = "error",
        train_per_class: int | None = None,
        subsample_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        self.root = Path(root).expanduser()
        self.manifest = Path(manifest).expanduser() if manifest else None
        self.records, names = find_records(self.root, self.manifest, class_names)
        super().__init__(names, **kwargs)
        # class_names are logged by the model (linked from here, resolved); None here would conflict with them.
        self.save_hyperparameters(ignore=["class_names"])
        self.augmentation = augmentation
        self.num_folds, self.fold, self.split = num_folds, fold, split
        self.tile_size, self.tile_stride = tile_size, tile_stride or tile_size
        self.strict = strict
        if invariances is not None:
            self.invariances = invariances
        self.leakage_check = leakage_check
        self.train_per_class, self.subsample_seed = train_per_class, subsample_seed
        self.skipped: list[str] = []
        self.held_out = resolve_image_set(test_root, test_manifest, "test")
        self.unlabelled = resolve_image_set(predict_root, predict_manifest, "predict")
        self._signatures: dict[Path, Signature] = {}
        self._shapes: dict[Path, tuple[int, ...]] = {}
        self._held_out_dataset: MicrographFolderDataset | None = None
        self._unlabelled_dataset: MicrographFolderDataset | None = None

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        self._setup_folds()
        if stage == "test" and self.held_out is not None and self._held_out_dataset is None:
            self._held_out_dataset = self._labelled_set(*self.held_out)
        if stage == "predict" and self.unlabelled is not None and self._unlabelled_dataset is None:
            root, manifest = self.unlabelled
            records = self._verified(unlabelled_records(root, manifest))
            self._unlabelled_dataset = self._dataset(self._tiled(records), self.pipeline(None))
        self.test_dataset = self._held_out_dataset or self.val_dataset
        self.predict_dataset = self._unlabelled_dataset or self.val_dataset

    def _setup_folds(self) -> None:
        """Training and validation sets of the configured fold (or all images), scanned and checked once."""
        # The file scan and leakage check cost seconds to minutes; fit then test/predict on the same split
        # (as cv does per fold) need them once.
        split_key = (self.num_folds, self.fold, self.split, self.seed, self.train_per_class, self.subsample_seed)
        if getattr(self, "_prepared_split", None) == split_key:
            return
        records = self._verified(self.records)
        labels = [r.label for r in records]
        groups = [r.group for r in records]
        if self.num_folds is None:
            train_idx, val_idx = np.arange(len(records)), np.arange(0)
        else:
            train_idx, val_idx = fold_indices(labels, groups, self.num_folds, self.fold, self.split, self.seed)
        train_records = self._subsample([records[i] for i in train_idx])
        self.check_leakage(train_records, [records[i] for i in val_idx])
        train = self._tiled(train_records)
        val = self._tiled([records[i] for i in val_idx])
        if self.split != "stratified":
            check_no_group_leak([r.group for r in train], [r.group for r in val])
        augment = self.train_augmentation(self.augmentation)
        self.train_dataset = self._dataset(train, self.pipeline(augment, train=True))
        self.val_dataset = self._dataset(val, self.pipeline(None)) if val else None
        self._train_records = train_records
        self._held_out_dataset = None
        self._unlabelled_dataset = None
        self._prepared_split = split_key

    def _labelled_set(self, root: Path, manifest: Path | None) -> MicrographFolderDataset:
        """The held-out test set: the training classes, every file verified, no copy of a training image."""
        records, _ = find_records(root, manifest, self.class_names, every_class=False)
        records = self._verified(records)
        self.check_leakage(self._train_records, records, "test")
        return self._dataset(self._tiled(records), self.pipeline(None))

    def _dataset(self, records: list[Record], pipeline: ImagePipeline) -> MicrographFolderDataset:
        return MicrographFolderDataset(records, pipeline, self.seed, self.physical_scale)

    def val_dataloader(self) -> Any:
        # No validation loop when training on everything (num_folds: null): Lightning skips an empty list.
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, "validation", batch_size=self._evaluation_batch_size())

    def test_dataloader(self) -> Any:
        return self._loader(self.test_dataset, "test", batch_size=self._evaluation_batch_size())

    def predict_dataloader(self) -> Any:
        return self._loader(self.predict_dataset, "predict", batch_size=self._evaluation_batch_size())

    def _evaluation_batch_size(self) -> int:
        """Whole images of different aspect ratios cannot share a batch once the aspect ratio is kept."""
        ratios = {round(s[1] / s[0], 3) for s in self._shapes.values()}
        mixed = self.resize == "shortest_side" and self.tile_size is None and len(ratios) > 1
        return 1 if mixed else self.batch_size

    def _subsample(self, records: list[Record]) -> list[Record]:
        """At most ``train_per_class`` images per class, taken whole group by whole group in random order."""
        if self.train_per_class is None:
            return records
        rng = random.Random(f"{self.seed}-{self.subsample_seed}")
        kept: list[Record] = []
        for label in range(self.num_classes):
            by_group: dict[str, list[Record]] = {}
            for record in records:
                if record.label == label:
                    by_group.setdefault(record.group, []).append(record)
            groups = sorted(by_group)
            rng.shuffle(groups)
            chosen: list[Record] = []
            for group in groups:
                if len(chosen) >= self.train_per_class:
                    break
                chosen += by_group[group][: self.train_per_class - len(chosen)]
            kept += chosen
        return kept

    def check_leakage(self, train: list[Record], val: list[Record], other: str = "validation") -> None:
        """Stop (or warn) when a validation (or test) micrograph is a transformed copy of a training one."""
        if self.leakage_check == "off" or not val:
            return
        found = find_duplicates([self._signatures[r.path] for r in train], [self._signatures[r.path] for r in val])
        pairs = [DuplicatePair(str(train[i].path), str(val[j].path), score) for i, j, score in found]
        if not pairs:
            return
        message = (
            f"{len(pairs)} {other} image(s) are the same micrograph as a training image (flipped, rotated, "
            f"cropped or re-exposed):\n{describe(pairs)}\nGive each pair the same group in the manifest so the "
            "split keeps them together, or set data.leakage_check=warn to accept it."
        )
        if self.leakage_check == "error":
            raise LeakageError(message)
        log.warning(message)

    def _verified(self, records: list[Record]) -> list[Record]:
        """Open every image once: bad files, unknown pixel sizes and mixed sizes are caught here, with their names.

        The same read yields the leakage signatures, so the leakage check decodes nothing again, and the
        records come back with their pixel size and data-bar height resolved from the files' metadata.
        """
        good: list[Record] = []
        shapes: dict[Path, tuple[int, ...]] = {}
        for record in records:
            try:
                image = read_image(record.path)
                pixel_size, bar = self.physical_scale.resolve(record.path, record.pixel_size)
            except ImageReadError as error:
                if self.strict:
                    raise
                self.skipped.append(str(record.path))
                log.warning("skipping %s", error)
                continue
            good.append(replace(record, pixel_size=pixel_size, data_bar=bar))
            if self.leakage_check != "off":  # the data bar is alike in every image of an instrument: not compared
                self._signatures[record.path] = signature(image[: image.shape[0] - bar])
            if pixel_size is not None or self.target_pixel_size is None:
                shapes[record.path] = self.physical_scale.shape(image.shape, pixel_size, bar, record.path)
        if self.skipped:
            log.warning("skipped %d unreadable image(s): %s", len(self.skipped), ", ".join(self.skipped))
        self.check_pixel_sizes([(r.path, r.pixel_size) for r in good])
        if self.image_size is None and self.tile_size is None and len(set(shapes.values())) > 1:
            by_shape: dict[tuple[int, ...], Path] = {}
            for path, shape in shapes.items():
                by_shape.setdefault(shape, path)
            examples = "; ".join(f"{p} is {s[0]}x{s[1]}" for s, p in list(by_shape.items())[:3])
            raise ValueError(f"images have different sizes ({examples}); set data.image_size to resize them")
        if self.target_pixel_size is not None and self.tile_size is None and len(set(shapes.values())) > 1:
            log.warning(
                "target_pixel_size=%g µm gives every image one scale, but these images differ in size and, without "
                "tile_size, each is then resized to image_size by its own factor; set data.tile_size to cut tiles "
                "at the physical scale instead",
                self.target_pixel_size,
            )
        self._warn_small(shapes)
        self._shapes.update(shapes)
        return good

    def _warn_small(self, shapes: dict[Path, tuple[int, ...]]) -> None:
        """Images (or tiles) smaller than the network input are upscaled: legal, but it invents detail."""
        side = self.tile_size or self.image_size
        small = [(p, s) for p, s in shapes.items() if side is not None and min(s) < side]
        if small and self.tile_size is None:
            examples = ", ".join(f"{p} ({s[0]}x{s[1]})" for p, s in small[:3])
            log.warning(
                "%d image(s) are smaller than image_size=%d and will be upscaled, e.g. %s; lower data.image_size "
                "if that is not intended",
                len(small),
                side,
                examples,
            )

    def _tiled(self, records: list[Record]) -> list[Record]:
        if self.tile_size is None:
            return records
        size, stride = self.tile_size, self.tile_stride or self.tile_size
        tiles = []
        for record in records:
            height, width = self._shapes[record.path]
            if height < size or width < size:
                raise ValueError(f"image {record.path} ({height}x{width}) is smaller than tile_size={size}")
            tiles += [
                replace(record, tile=(top, left, size, size)) for top, left in tile_origins(height, width, size, stride)
            ]
        return tiles
