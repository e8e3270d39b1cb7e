"""Real image/mask pairs from a manifest: checked masks, random training crops, whole-image evaluation."""

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from smalldata_pl.data.base import MicrographDataModule
from smalldata_pl.data.io import read_image
from smalldata_pl.data.physics import LabelInvariances
from smalldata_pl.data.sampling import split_key
from smalldata_pl.data.splits import check_no_group_leak, fold_indices
from smalldata_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePipeline, sample_seed


@dataclass(frozen=True)
class MaskRecord:
    """One image with its mask file, its group and its upstream split tags."""

    image: Path
    mask: Path
    group: str
    splits: str = ""


def read_mask(path: Path, num_classes: int, image_shape: tuple[int, ...], image_path: Path) -> np.ndarray:
    """Read a class-index mask and check it against the class list and its image.

    Raises:
        ValueError: If the mask's size differs from the image's, or it holds a value outside the classes.
    """
    mask = np.asarray(Image.open(path))
    if mask.ndim == 3:
        raise ValueError(f"mask {path} has {mask.shape[2]} channels; store class indices as a single-channel PNG")
    if mask.shape != tuple(image_shape[:2]):
        raise ValueError(
            f"mask {path} is {mask.shape[0]}x{mask.shape[1]} but image {image_path} is "
            f"{image_shape[0]}x{image_shape[1]}; masks must match their images pixel for pixel"
        )
    unknown = sorted(set(np.unique(mask).tolist()) - set(range(num_classes)))
    if unknown:
        raise ValueError(
            f"mask {path} contains value(s) {unknown} outside the {num_classes} classes 0..{num_classes - 1}; "
            "fix the mask or extend class_names"
        )
    return mask.astype(np.int64)


class SegmentationDataset(Dataset):
    """Image/mask samples; training crops come from the pipeline's augmentation."""

    def __init__(
        self,
        records: Sequence[MaskRecord],
        pipeline: ImagePipeline,
        num_classes: int,
        seed: int = 0,
        repeats: int = 1,
    ) -> None:
        self.records, self.pipeline, self.num_classes, self.seed = list(records), pipeline, num_classes, seed
        self.repeats = repeats  # several random crops of each image per epoch (one-shot and few-shot training)

    def __len__(self) -> int:
        return len(self.records) * self.repeats

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = split_key(key)
        record = self.records[index % len(self.records)]
        image = read_image(record.image)
        mask = read_mask(record.mask, self.num_classes, image.shape, record.image)
        sample = self.pipeline(image, mask=mask, seed=sample_seed(self.seed, epoch, index))
        sample.update(group=record.group, path=str(record.image))
        return sample


class SegmentationFolder(MicrographDataModule):
    """Segmentation data from a manifest with columns ``image``, ``mask``, ``group`` (paths relative to root).

    Splits are group K-fold, or an upstream split named in an ``official_splits`` column
    (``Name:train;Other:val``). Training uses random crops of ``crop_size``; evaluation uses whole images.

    Args:
        root: Folder the manifest paths are relative to.
        manifest: CSV manifest; default ``root/manifest.csv``.
        class_names: Class names; mask value ``k`` is class ``k``.
        crop_size: Side of the random training crops.
        augmentation: Extra training augmentation (applied to image and mask together).
        official_split: Use this upstream split from the manifest instead of K-fold.
        num_folds: K of the group K-fold.
        fold: Validation fold.
        train_limit: Keep only the first N training images (one-shot and few-shot studies).
        crops_per_image: Random training crops drawn from each image per epoch.
        batch_size: Samples per batch (whole-image evaluation uses batch size 1).
        num_workers: Loader workers.
        in_chans: Channels delivered to the model.
        seed: Split, crop and augmentation seed.
        mean: RGB normalisation mean of the backbone.
        std: RGB normalisation std of the backbone.
    """

    def __init__(
        self,
        root: str | Path,
        class_names: Sequence[str],
        manifest: str | Path | None = None,
        crop_size: int = 256,
        augmentation: str | dict | list | None = None,
        official_split: str | None = None,
        num_folds: int = 5,
        fold: int = 0,
        train_limit: int | None = None,
        crops_per_image: int = 1,
        batch_size: int = 8,
        num_workers: int = 0,
        in_chans: int = 1,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(class_names, batch_size, num_workers, in_chans, None, seed, mean, std)
        self.save_hyperparameters(ignore=["class_names"])
        self.root = Path(root).expanduser()
        self.manifest = Path(manifest).expanduser() if manifest else self.root / "manifest.csv"
        self.crop_size, self.augmentation = crop_size, augmentation
        self.official_split, self.num_folds, self.fold = official_split, num_folds, fold
        self.train_limit = train_limit
        self.crops_per_image = crops_per_image
        self.records = self._read_manifest()
        self.split = "group"

    def _read_manifest(self) -> list[MaskRecord]:
        if not self.manifest.is_file():
            raise FileNotFoundError(f"segmentation manifest {self.manifest} does not exist")
        with self.manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        records = []
        for line, row in enumerate(rows, start=2):
            for column in ("image", "mask"):
                if not (self.root / row.get(column, "")).is_file():
                    raise FileNotFoundError(
                        f"{self.manifest}:{line}: {column} file {self.root / row.get(column, '')} does not exist"
                    )
            records.append(
                MaskRecord(
                    self.root / row["image"],
                    self.root / row["mask"],
                    row.get("group") or row["image"],
                    row.get("official_splits", ""),
                )
            )
        return records

    def _split_records(self) -> tuple[list[MaskRecord], list[MaskRecord], list[MaskRecord]]:
        if self.official_split:

            def tagged(tag: str) -> list[MaskRecord]:
                return [r for r in self.records if f"{self.official_split}:{tag}" in r.splits.split(";")]

            train, val, test = tagged("train"), tagged("val"), tagged("test")
            if not train:
                raise ValueError(f"no rows tagged {self.official_split}:train in {self.manifest}")
            return train, val, test or val
        groups = [r.group for r in self.records]
        train_idx, val_idx = fold_indices([0] * len(groups), groups, self.num_folds, self.fold, "group", self.seed)
        val = [self.records[i] for i in val_idx]
        return [self.records[i] for i in train_idx], val, val

    def setup(self, stage: str) -> None:
        train, val, test = self._split_records()
        if self.train_limit is not None:
            train = train[: self.train_limit]
        check_no_group_leak([r.group for r in train], [r.group for r in val])
        extra = self.train_augmentation(self.augmentation)
        crop = A.RandomCrop(self.crop_size, self.crop_size, pad_if_needed=True, p=1.0)
        augment = A.Compose([crop, *(extra.transforms if extra is not None else [])])
        self.train_dataset = SegmentationDataset(
            train, self.pipeline(augment), self.num_classes, self.seed, self.crops_per_image
        )
        self.val_dataset = SegmentationDataset(val, self.pipeline(None), self.num_classes, self.seed)
        self.test_dataset = SegmentationDataset(test, self.pipeline(None), self.num_classes, self.seed)
        self.predict_dataset = self.test_dataset

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._whole_images(self.val_dataset)

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self._whole_images(self.test_dataset)

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        return self._whole_images(self.predict_dataset)

    def _whole_images(self, dataset: Dataset | None) -> torch.utils.data.DataLoader:
        # Whole images may differ in size, so they go one at a time.
        return self._loader(dataset, "evaluation", batch_size=1)


class Superalloy(SegmentationFolder):
    """Ni-based superalloy SEM images with gamma/gamma' masks (23 images, 512x512; MIT, Stuckner et al. 2022).

    ``official_split`` reproduces the upstream settings: ``Super1`` (train spots 3-7, val spot 1, test spot 2),
    ``Super3`` (one-shot: a single training image), ``Super4`` (test on five out-of-distribution images).

    Args:
        root: Folder with ``manifest.csv``, ``images/`` and ``masks/``.
        official_split: Upstream split, or ``None`` for group K-fold over specimen spots.
        crop_size: Training crop side.
        augmentation: Extra training augmentation.
        num_folds: K of the group K-fold.
        fold: Validation fold.
        train_limit: Keep only the first N training images.
        crops_per_image: Random training crops drawn from each image per epoch.
        batch_size: Training crops per batch.
        num_workers: Loader workers.
        in_chans: Channels delivered to the model.
        seed: Seed.
    """

    invariances = LabelInvariances(rotation=True, mirror=True, scale=True, intensity=True, colour=False)

    def __init__(
        self,
        root: str | Path = "data/superalloy",
        official_split: str | None = "Super1",
        crop_size: int = 256,
        augmentation: str | dict | list | None = None,
        num_folds: int = 5,
        fold: int = 0,
        train_limit: int | None = None,
        crops_per_image: int = 1,
        batch_size: int = 8,
        num_workers: int = 0,
        in_chans: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            root,
            ("matrix", "secondary", "tertiary"),
            official_split=official_split,
            crop_size=crop_size,
            augmentation=augmentation,
            num_folds=num_folds,
            fold=fold,
            train_limit=train_limit,
            crops_per_image=crops_per_image,
            batch_size=batch_size,
            num_workers=num_workers,
            in_chans=in_chans,
            seed=seed,
        )
