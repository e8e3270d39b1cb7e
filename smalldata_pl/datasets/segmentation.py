"""Image/mask pairs on disk: manifest records, checked masks and the segmentation Dataset."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from smalldata_pl.datasets.folder import Record, manifest_pixel_size, read_manifest
from smalldata_pl.datasets.sampling import split_key
from smalldata_pl.io.images import read_image
from smalldata_pl.transforms.pipeline import IGNORE_INDEX, ImagePipeline, PhysicalScale, sample_seed

UNLABELLED = 255
"""The mask value smalldata writes for pixels with no label (the PASCAL VOC convention), read back with
``ignore_value`` 255: where ``smalldata apply --unsure_below``'s model was unsure, and the borders that ``smalldata
augment``'s geometric transforms invent."""


@dataclass(frozen=True)
class MaskRecord:
    """One image with its mask file, its group, its upstream split tags and its physical scale."""

    image: Path
    mask: Path
    group: str
    splits: str = ""
    pixel_size: float | None = None  # µm per pixel: the manifest's, or the file's metadata once resolved
    data_bar: int = 0  # rows of instrument data bar at the bottom of image and mask, cropped before anything else


def source_image(record: Record | MaskRecord) -> Path:
    """The image file of a labelled record (``path``) or of an image/mask pair (``image``)."""
    return record.image if isinstance(record, MaskRecord) else record.path


def read_mask(
    path: Path, num_classes: int, image_shape: tuple[int, ...], image_path: Path, ignore_value: int | None = None
) -> np.ndarray:
    """Read a class-index mask and check it against the class list and its image.

    Args:
        path: The mask file.
        num_classes: Mask values must lie in ``0..num_classes - 1``, or be ``ignore_value``.
        image_shape: The shape of its image, which the mask must match.
        image_path: Its image, named in errors.
        ignore_value: The value of unlabelled pixels, returned as ``IGNORE_INDEX`` (in neither loss nor metrics);
            ``None``: every pixel is labelled.

    Raises:
        ValueError: If the mask cannot be read, has several channels, differs in size from its image, or holds a
            value outside the classes; the message names the mask, its image and the fix.
    """
    try:
        with Image.open(path) as opened:
            mask = np.asarray(opened)
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(
            f"cannot read mask {path} (of image {image_path}): {error}; re-export it as a single-channel PNG"
        ) from error
    if mask.ndim == 3:
        raise ValueError(
            f"mask {path} (of image {image_path}) has {mask.shape[2]} channels; "
            "store class indices as a single-channel (greyscale or palette) PNG"
        )
    if mask.shape != tuple(image_shape[:2]):
        raise ValueError(
            f"mask {path} is {mask.shape[0]}x{mask.shape[1]} but image {image_path} is "
            f"{image_shape[0]}x{image_shape[1]}; masks must match their images pixel for pixel"
        )
    unknown = sorted(set(np.unique(mask).tolist()) - set(range(num_classes)) - {ignore_value})
    if unknown:
        hint = ""
        if UNLABELLED in unknown:
            hint = f" (or set ignore_value: {UNLABELLED} if it marks unlabelled pixels)"
        raise ValueError(
            f"mask {path} (of image {image_path}) contains value(s) {unknown} outside the {num_classes} classes "
            f"0..{num_classes - 1}; fix the mask or extend class_names{hint}"
        )
    labels = mask.astype(np.int64)
    if ignore_value is not None:
        labels[mask == ignore_value] = IGNORE_INDEX
    return labels


def check_records(
    records: Iterable[MaskRecord], num_classes: int, ignore_value: int | None = None
) -> dict[MaskRecord, tuple[int, int]]:
    """Read every image and mask once and check each pair, so a bad file fails before training starts.

    Returns:
        The ``(height, width)`` of each record's image.

    Raises:
        ValueError: For the first bad mask (see :func:`read_mask`).
        ImageReadError: For an unreadable image.
    """
    sizes = {}
    for record in records:
        shape = read_image(record.image).shape
        read_mask(record.mask, num_classes, shape, record.image, ignore_value)
        sizes[record] = (int(shape[0]), int(shape[1]))
    return sizes


class SegmentationDataset(Dataset):
    """Image/mask samples; training crops come from the pipeline's augmentation.

    Args:
        records: The image/mask pairs.
        pipeline: Augmentation (training) or evaluation pipeline.
        num_classes: Mask values must lie in ``0..num_classes - 1``, or be ``ignore_value``.
        seed: Seed of the per-sample augmentation draws.
        repeats: Samples drawn from each image per epoch.
        scale: Data-bar crop and resampling to one pixel size (masks nearest-neighbour), before the pipeline.
        ignore_value: Mask value of unlabelled pixels, which the samples carry as ``IGNORE_INDEX``.
    """

    def __init__(
        self,
        records: Sequence[MaskRecord],
        pipeline: ImagePipeline,
        num_classes: int,
        seed: int = 0,
        repeats: int = 1,
        scale: PhysicalScale | None = None,
        ignore_value: int | None = None,
    ) -> None:
        self.records, self.pipeline, self.num_classes, self.seed = list(records), pipeline, num_classes, seed
        self.ignore_value = ignore_value
        self.repeats = repeats  # several random crops of each image per epoch (one-shot and few-shot training)
        self.scale = scale or PhysicalScale()

    def __len__(self) -> int:
        return len(self.records) * self.repeats

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = split_key(key)
        record = self.records[index % len(self.records)]
        image = read_image(record.image)
        mask = read_mask(record.mask, self.num_classes, image.shape, record.image, self.ignore_value)
        image, scaled_mask = self.scale(image, record.pixel_size, record.data_bar, mask, source=record.image)
        sample = self.pipeline(image, mask=scaled_mask, seed=sample_seed(self.seed, epoch, index))
        sample.update(group=record.group, path=str(record.image))
        return sample


def read_mask_manifest(manifest: Path, root: Path) -> list[MaskRecord]:
    """Records of a CSV ``image,mask[,group][,official_splits][,pixel_size]`` whose paths are relative to ``root``."""
    records = []
    for line, row in enumerate(read_manifest(manifest, ("image", "mask")), start=2):
        for column in ("image", "mask"):
            if not (root / row.get(column, "")).is_file():
                raise FileNotFoundError(f"{manifest}:{line}: {column} file {root / row.get(column, '')} does not exist")
        records.append(
            MaskRecord(
                root / row["image"],
                root / row["mask"],
                row.get("group") or row["image"],
                row.get("official_splits", ""),
                manifest_pixel_size(row, manifest, line),
            )
        )
    return records
