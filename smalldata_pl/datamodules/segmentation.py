"""Real image/mask pairs from a manifest: checked masks, random training crops, whole-image evaluation."""

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import albumentations as A
import torch
from torch.utils.data import Dataset
from typing_extensions import override

from smalldata_pl.datamodules.base import MicrographDataModule
from smalldata_pl.datasets.folder import MicrographFolderDataset, Record, resolve_image_set, unlabelled_records
from smalldata_pl.datasets.segmentation import (
    MaskRecord,
    SegmentationDataset,
    check_records,
    read_mask_manifest,
    source_image,
)
from smalldata_pl.datasets.splits import check_no_group_leak, fold_indices
from smalldata_pl.transforms.invariances import LabelInvariances
from smalldata_pl.transforms.pipeline import IGNORE_INDEX, ImagePipeline

log = logging.getLogger(__name__)

RecordT = TypeVar("RecordT", Record, MaskRecord)


class SegmentationFolder(MicrographDataModule):
    """Segmentation data from a manifest with columns ``image``, ``mask``, ``group`` (paths relative to root).

    An optional ``pixel_size`` column (µm per pixel) is preferred to the images' metadata when
    ``target_pixel_size`` resamples every image and mask to one physical scale; crops are cut after that step.

    Splits are group K-fold, or an upstream split named in an ``official_splits`` column
    (``Name:train;Other:val``). Training uses random crops of ``crop_size``; evaluation uses whole images.
    ``setup`` reads every image and mask of the train, validation and test splits once and fails on the first
    bad mask, so a broken validation mask stops the run before the first training step, not after an epoch.
    An image smaller than ``crop_size`` is padded: its padding is ``IGNORE_INDEX`` in the mask, which the loss
    and the metrics skip, and ``setup`` logs a warning naming it.

    Args:
        root: Folder the manifest paths are relative to.
        manifest: CSV manifest; default ``root/manifest.csv``.
        class_names: Class names; mask value ``k`` is class ``k``.
        crop_size: Side of the random training crops.
        augmentation: Extra training augmentation (applied to image and mask together).
        official_split: Use this upstream split from the manifest instead of K-fold.
        num_folds: K of the group K-fold; ``None`` trains on every image with no validation loop.
        fold: Validation fold.
        test_manifest: CSV ``image,mask[,group]`` of a labelled held-out set (paths relative to the CSV's folder),
            scored by ``smalldata test``.
        predict_root: Folder of unlabelled images for ``smalldata predict`` (searched recursively), or what
            ``predict_manifest`` paths are relative to; without it, predict covers the test split.
        predict_manifest: CSV with a ``file`` column listing the images to predict.
        train_limit: Keep only the first N training images (one-shot and few-shot studies).
        crops_per_image: Random training crops drawn from each image per epoch.
        batch_size: Samples per batch (whole-image evaluation uses batch size 1).
        ignore_value: Mask value of unlabelled pixels, which count in neither the loss nor the metrics: e.g. 255,
            which ``smalldata apply --unsure_below`` writes where its model was unsure. ``None``: every mask pixel
            is a class.
        **kwargs: Loader, channel and normalisation options of :class:`MicrographDataModule`.
    """

    def __init__(
        self,
        root: str | Path,
        class_names: Sequence[str],
        manifest: str | Path | None = None,
        crop_size: int = 256,
        augmentation: str | dict | list | None = None,
        official_split: str | None = None,
        num_folds: int | None = 5,
        fold: int = 0,
        test_manifest: str | Path | None = None,
        predict_root: str | Path | None = None,
        predict_manifest: str | Path | None = None,
        train_limit: int | None = None,
        crops_per_image: int = 1,
        batch_size: int = 8,
        ignore_value: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(class_names, batch_size=batch_size, image_size=None, **kwargs)
        self.save_hyperparameters(ignore=["class_names"])
        if ignore_value is not None and 0 <= ignore_value < self.num_classes:
            raise ValueError(
                f"ignore_value {ignore_value} is the mask value of class {class_names[ignore_value]!r}; unlabelled "
                f"pixels need a value outside 0..{self.num_classes - 1} (e.g. 255)"
            )
        self.ignore_value = ignore_value
        self.root = Path(root).expanduser()
        self.manifest = Path(manifest).expanduser() if manifest else self.root / "manifest.csv"
        self.crop_size, self.augmentation = crop_size, augmentation
        self.official_split, self.num_folds, self.fold = official_split, num_folds, fold
        self.train_limit = train_limit
        self.crops_per_image = crops_per_image
        self.records = self._resolved(read_mask_manifest(self.manifest, self.root))
        self.split = "group"
        self._image_sizes: dict[MaskRecord, tuple[int, int]] = {}  # records already checked: setup runs per stage
        self._trained_crop_size: int | None = None  # read once: it depends on crop_size and augmentation only
        held_out = Path(test_manifest).expanduser() if test_manifest else None
        self.held_out = self._resolved(read_mask_manifest(held_out, held_out.parent)) if held_out else None
        self.unlabelled = resolve_image_set(predict_root, predict_manifest, "predict")

    def _resolved(self, records: Sequence[RecordT]) -> list[RecordT]:
        """The records with each image's pixel size (manifest first, then metadata) and data-bar height."""
        resolved = []
        for record in records:
            pixel_size, bar = self.physical_scale.resolve(source_image(record), record.pixel_size)
            resolved.append(replace(record, pixel_size=pixel_size, data_bar=bar))
        return resolved

    def _split_records(self) -> tuple[list[MaskRecord], list[MaskRecord], list[MaskRecord]]:
        if self.official_split:

            def tagged(tag: str) -> list[MaskRecord]:
                return [r for r in self.records if f"{self.official_split}:{tag}" in r.splits.split(";")]

            train, val, test = tagged("train"), tagged("val"), tagged("test")
            if not train:
                raise ValueError(f"no rows tagged {self.official_split}:train in {self.manifest}")
            return train, val, test or val
        if self.num_folds is None:
            return list(self.records), [], []
        groups = [r.group for r in self.records]
        train_idx, val_idx = fold_indices([0] * len(groups), groups, self.num_folds, self.fold, "group", self.seed)
        val = [self.records[i] for i in val_idx]
        return [self.records[i] for i in train_idx], val, val

    def setup(self, stage: str) -> None:
        train, val, test = self._split_records()
        if self.train_limit is not None:
            train = train[: self.train_limit]
        check_no_group_leak([r.group for r in train], [r.group for r in val])
        if self.held_out is not None:
            test = self.held_out
        self._check(train, val, test)
        if stage == "fit":
            self._warn_on_one_image_batchnorm(train)
        scale, ignore = self.physical_scale, self.ignore_value
        self.train_dataset = SegmentationDataset(
            train, self.pipeline(self._crop_and_augment()), self.num_classes, self.seed, self.crops_per_image, scale,
            ignore,
        )  # fmt: skip
        evaluate = self.pipeline(None)
        self.val_dataset, self.test_dataset = (
            SegmentationDataset(records, evaluate, self.num_classes, self.seed, scale=scale, ignore_value=ignore)
            if records
            else None
            for records in (val, test)
        )
        self.predict_dataset = self.test_dataset
        if stage == "predict" and self.unlabelled is not None:
            records = self._resolved(unlabelled_records(*self.unlabelled))
            self.check_pixel_sizes([(r.path, r.pixel_size) for r in records])
            self.predict_dataset = MicrographFolderDataset(records, evaluate, self.seed, scale)

    def _warn_on_one_image_batchnorm(self, train: list[MaskRecord]) -> None:
        """Warn when BatchNorm would take its statistics from a single training image.

        Measured on the superalloy one-shot split: the same fine-tune scores 0.55 mean IoU with BatchNorm training
        and 0.83 with the pretrained statistics kept (benchmarks/README.md); with two images the two tie.
        """
        callbacks = self.trainer.callbacks if self.trainer is not None else []  # type: ignore[attr-defined]
        if len(train) == 1 and not any(getattr(c, "keep_bn_eval", False) for c in callbacks):
            log.warning(
                "training on a single image (%s): BatchNorm statistics estimated on its crops do not stand for other "
                "images. With a pretrained start, keep the pretrained statistics: add "
                "`-c configs/overlays/keep_pretrained_bn.yaml` (StagedUnfreezing with keep_bn_eval)",
                train[0].image,
            )

    @property
    def trained_crop_size(self) -> int | None:
        """Side of the training samples the network sees; ``None`` before ``setup``.

        It is ``crop_size`` unless the augmentation resizes the crops (a zoom such as ``RandomResizedCrop`` to another
        size). Checkpoints record it as the training crop, the window ``apply`` slides over larger images and that the
        members of an ensemble must share. Read once, from the first training sample (epoch 0), a pure function of the
        seed, since every checkpoint written asks for it.
        """
        if self._trained_crop_size is None and self.train_dataset is not None:
            self._trained_crop_size = int(self.train_dataset[0]["image"].shape[-1])
        return self._trained_crop_size

    def _crop_and_augment(self) -> A.Compose:
        """The training transform: a random ``crop_size`` crop, then the training augmentation."""
        extra = self.train_augmentation(self.augmentation)
        # Padding is image 0 and mask IGNORE_INDEX: never trained or scored as class 0.
        crop = A.RandomCrop(self.crop_size, self.crop_size, pad_if_needed=True, fill=0, fill_mask=IGNORE_INDEX, p=1.0)
        return A.Compose([crop, *(extra.transforms if extra is not None else [])])

    @override
    def target_pipeline(self) -> ImagePipeline:
        """Pseudo-labelled target images (self-training) are cropped and augmented like the training images."""
        return self.pipeline(self._crop_and_augment())

    def _check(self, train: list[MaskRecord], val: list[MaskRecord], test: list[MaskRecord]) -> None:
        unchecked = [r for r in dict.fromkeys([*train, *val, *test]) if r not in self._image_sizes]
        self.check_pixel_sizes([(r.image, r.pixel_size) for r in unchecked])
        self._image_sizes.update(check_records(unchecked, self.num_classes, self.ignore_value))
        for record in dict.fromkeys(train):
            # What the crops are cut from: after the data-bar crop and the resampling to target_pixel_size.
            height, width = self.physical_scale.shape(self._image_sizes[record], record.pixel_size, record.data_bar)
            if record in unchecked and min(height, width) < self.crop_size:
                log.warning(
                    "image %s is %dx%d, smaller than crop_size=%d: its training crops are padded, and the padding "
                    "is ignored by the loss and the metrics (set a smaller data.crop_size to avoid padding)",
                    record.image,
                    height,
                    width,
                    self.crop_size,
                )

    def val_dataloader(self) -> Any:
        # No validation loop when training on everything (num_folds: null): Lightning skips an empty list.
        return [] if self.val_dataset is None else self._whole_images(self.val_dataset)

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        if self.test_dataset is None:
            raise ValueError(
                "no test images: training on everything (num_folds: null) leaves none; set data.test_manifest"
            )
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
        **kwargs: Crop, split, loader and normalisation options of :class:`SegmentationFolder`.
    """

    invariances = LabelInvariances(rotation=True, mirror=True, scale=True, intensity=True, colour=False)

    def __init__(
        self, root: str | Path = "data/superalloy", official_split: str | None = "Super1", **kwargs: Any
    ) -> None:
        super().__init__(root, ("matrix", "secondary", "tertiary"), official_split=official_split, **kwargs)
