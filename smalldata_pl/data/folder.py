"""Users' own micrographs: a folder of class sub-folders or a CSV manifest, split into leak-free folds."""

import csv
import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from smalldata_pl.data.base import MicrographDataModule
from smalldata_pl.data.io import IMAGE_SUFFIXES, ImageReadError, read_image
from smalldata_pl.data.leakage import (
    DuplicatePair,
    LeakageError,
    LeakageMode,
    Signature,
    describe,
    find_duplicates,
    signature,
)
from smalldata_pl.data.physics import LabelInvariances
from smalldata_pl.data.sampling import split_key
from smalldata_pl.data.splits import SplitKind, check_no_group_leak, fold_indices
from smalldata_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePipeline, sample_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One labelled micrograph (or one tile of it)."""

    path: Path
    label: int
    group: str
    tile: tuple[int, int, int, int] | None = None  # (top, left, height, width)


class MicrographFolderDataset(Dataset):
    """Reads records through a pipeline; samples carry ``image``, ``label``, ``group`` and ``path``.

    Args:
        records: The samples.
        pipeline: Augmentation (training) or evaluation pipeline.
        seed: Seed of the per-sample augmentation draws.
    """

    def __init__(self, records: Sequence[Record], pipeline: ImagePipeline, seed: int = 0) -> None:
        self.records = list(records)
        self.pipeline = pipeline
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = split_key(key)
        record = self.records[index]
        image = read_image(record.path)
        if record.tile is not None:
            top, left, height, width = record.tile
            image = image[top : top + height, left : left + width]
        sample = self.pipeline(image, seed=sample_seed(self.seed, epoch, index))
        sample.update(label=torch.tensor(record.label), group=record.group, path=str(record.path))
        return sample


class MicrographFolder(MicrographDataModule):
    """Labelled micrographs from ``root/<class>/*.png`` or a CSV manifest ``file,label[,group]``.

    Every file is opened at setup, so a corrupt image, a missing file or a wrong label stops the run before
    training with the file's name. Splits are K-fold over source images (before tiling and augmentation) and
    a group on both sides of a split is an error.

    Example:
        >>> dm = MicrographFolder(root="my_micrographs", class_names=["ferrite", "pearlite"])  # doctest: +SKIP

    Args:
        root: Folder of class sub-folders, or the folder that manifest paths are relative to.
        manifest: CSV with columns ``file``, ``label`` (class name or index) and optionally ``group``.
        class_names: Classes in index order; ``None`` takes sorted sub-folder names or manifest labels.
        augmentation: Training augmentation: preset name, Albumentations dict, or list of transforms.
        num_folds: K of the K-fold split.
        fold: Which fold validates (and tests, unless a held-out set is given).
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
        epoch_samples: Least number of training samples per epoch (small subsets are drawn in several passes).
        batch_size: Samples per batch.
        num_workers: Loader workers.
        in_chans: Channels delivered to the model.
        image_size: Side of the delivered images; ``None`` keeps sizes (they must then agree).
        seed: Split, shuffle and augmentation seed.
        mean: RGB normalisation mean of the backbone.
        std: RGB normalisation std of the backbone.
    """

    def __init__(
        self,
        root: str | Path,
        manifest: str | Path | None = None,
        class_names: Sequence[str] | None = None,
        augmentation: str | dict | list | None = None,
        num_folds: int = 5,
        fold: int = 0,
        split: SplitKind = "stratified_group",
        tile_size: int | None = None,
        tile_stride: int | None = None,
        strict: bool = True,
        invariances: LabelInvariances | None = None,
        leakage_check: LeakageMode = "error",
        train_per_class: int | None = None,
        subsample_seed: int = 0,
        epoch_samples: int | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        in_chans: int = 1,
        image_size: int | None = 224,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.root = Path(root).expanduser()
        self.manifest = Path(manifest).expanduser() if manifest else None
        self.records = self.read_records(class_names)
        super().__init__(
            self._class_names, batch_size, num_workers, in_chans, image_size, seed, mean, std, epoch_samples
        )
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

    # --------------------------------------------------------------------------------------------- discovery
    def read_records(self, class_names: Sequence[str] | None) -> list[Record]:
        """Find the labelled files (no image is decoded here) and fix ``class_names``."""
        rows = self._manifest_rows() if self.manifest is not None else self._folder_rows()
        labels = [label for _, label, _ in rows]
        names = list(class_names) if class_names else sorted({str(x) for x in labels}, key=_natural)
        self._class_names = names
        records = []
        for path, label, group in rows:
            records.append(Record(path, self._label_index(label, names, path), group))
        counts = Counter(r.label for r in records)
        empty = [names[i] for i in range(len(names)) if counts[i] == 0]
        if empty:
            where = self.manifest or self.root
            raise ValueError(f"class(es) {empty} have no images in {where}; add images or drop them from class_names")
        return records

    def _folder_rows(self) -> list[tuple[Path, str, str]]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"data folder {self.root} does not exist; set data.root to your micrograph folder")
        rows = []
        for class_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    rows.append((path, class_dir.name, f"{class_dir.name}/{path.stem}"))
        if not rows:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders of {self.root}")
        return rows

    def _manifest_rows(self) -> list[tuple[Path, str, str]]:
        assert self.manifest is not None
        if not self.manifest.is_file():
            raise FileNotFoundError(f"manifest {self.manifest} does not exist")
        with self.manifest.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"file", "label"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"manifest {self.manifest} lacks column(s) {sorted(missing)}; need file,label[,group]")
            rows = []
            for line, row in enumerate(reader, start=2):
                path = self.root / row["file"]
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{self.manifest}:{line}: file {path} does not exist; fix the path or delete the row"
                    )
                rows.append((path, row["label"], row.get("group") or str(Path(row["file"]).with_suffix(""))))
        return rows

    def _label_index(self, label: str, names: Sequence[str], path: Path) -> int:
        if label in names:
            return names.index(label)
        if label.isdigit() and int(label) < len(names) and not any(n.isdigit() for n in names):
            return int(label)
        raise ValueError(
            f"label {label!r} of {path} is not in the class list {list(names)}; fix the label or class_names"
        )

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        records = self._verified(self.records)
        labels = [r.label for r in records]
        groups = [r.group for r in records]
        train_idx, val_idx = fold_indices(labels, groups, self.num_folds, self.fold, self.split, self.seed)
        train_records = self._subsample([records[i] for i in train_idx])
        self.check_leakage(train_records, [records[i] for i in val_idx])
        train = self._tiled(train_records)
        val = self._tiled([records[i] for i in val_idx])
        if self.split != "stratified":
            check_no_group_leak([r.group for r in train], [r.group for r in val])
        augment = self.train_augmentation(self.augmentation)
        self.train_dataset = MicrographFolderDataset(train, self.pipeline(augment), self.seed)
        self.val_dataset = MicrographFolderDataset(val, self.pipeline(None), self.seed)
        self.test_dataset = self.val_dataset
        self.predict_dataset = self.val_dataset

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

    def check_leakage(self, train: list[Record], val: list[Record]) -> None:
        """Stop (or warn) when a validation micrograph is a transformed copy of a training one."""
        if self.leakage_check == "off":
            return
        found = find_duplicates([self._signatures[r.path] for r in train], [self._signatures[r.path] for r in val])
        pairs = [DuplicatePair(str(train[i].path), str(val[j].path), score) for i, j, score in found]
        if not pairs:
            return
        message = (
            f"{len(pairs)} validation image(s) are the same micrograph as a training image (flipped, rotated, "
            f"cropped or re-exposed):\n{describe(pairs)}\nGive each pair the same group in the manifest so the "
            "split keeps them together, or set data.leakage_check=warn to accept it."
        )
        if self.leakage_check == "error":
            raise LeakageError(message)
        log.warning(message)

    def _verified(self, records: list[Record]) -> list[Record]:
        """Open every image once: bad files and mixed sizes are caught here, with their names.

        The same read yields the leakage signatures, so the leakage check decodes nothing again.
        """
        good, shapes = [], {}
        self._signatures: dict[Path, Signature] = {}
        for record in records:
            try:
                image = read_image(record.path)
                shapes[record.path] = image.shape[:2]
                if self.leakage_check != "off":
                    self._signatures[record.path] = signature(image)
                good.append(record)
            except ImageReadError as error:
                if self.strict:
                    raise
                self.skipped.append(str(record.path))
                log.warning("skipping %s", error)
        if self.skipped:
            log.warning("skipped %d unreadable image(s): %s", len(self.skipped), ", ".join(self.skipped))
        if self.image_size is None and self.tile_size is None and len(set(shapes.values())) > 1:
            by_shape: dict[tuple[int, ...], Path] = {}
            for path, shape in shapes.items():
                by_shape.setdefault(shape, path)
            examples = "; ".join(f"{p} is {s[0]}x{s[1]}" for s, p in list(by_shape.items())[:3])
            raise ValueError(f"images have different sizes ({examples}); set data.image_size to resize them")
        self._shapes = shapes
        return good

    def _tiled(self, records: list[Record]) -> list[Record]:
        if self.tile_size is None:
            return records
        size, stride = self.tile_size, self.tile_stride or self.tile_size
        tiles = []
        for record in records:
            height, width = self._shapes[record.path]
            if height < size or width < size:
                raise ValueError(f"image {record.path} ({height}x{width}) is smaller than tile_size={size}")
            for top in range(0, height - size + 1, stride):
                for left in range(0, width - size + 1, stride):
                    tiles.append(replace(record, tile=(top, left, size, size)))
        return tiles


def _natural(text: str) -> tuple:
    """Sort key putting 'class2' before 'class10'."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))
