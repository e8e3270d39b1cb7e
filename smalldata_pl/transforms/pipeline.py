"""Image pipelines: Albumentations augmentation plus the deterministic resize, channel and normalisation steps."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import numpy as np
import torch

from smalldata_pl.io.metadata import read_metadata

# How whole images meet a fixed network input: stretched to a square, or scaled by the shorter side.
ResizePolicy = Literal["squash", "shortest_side"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601 luma weights: a grey micrograph fed to an RGB-pretrained stem acts like R = G = B, and timm's
# in_chans=1 adaptation sums the stem kernels over RGB, so the grey statistics are the luma-weighted ones.
LUMA = (0.299, 0.587, 0.114)
# Mask value of pixels without a label, such as the padding around a crop larger than its image: segmentation
# losses and metrics skip them. PyTorch's cross-entropy default, and never a class index whatever num_classes is.
IGNORE_INDEX = -100


def normalization_stats(
    in_chans: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std for ``in_chans`` channels derived from RGB statistics.

    For one channel the luma-weighted mean and the luma-weighted root-mean-square std are returned
    (ImageNet: 0.4590 and 0.2256) instead of skipping normalisation.
    """
    if in_chans == len(mean):
        return tuple(mean), tuple(std)
    if in_chans == 1 and len(mean) == 3:
        grey_mean = sum(w * m for w, m in zip(LUMA, mean, strict=True))
        grey_std = float(np.sqrt(sum(w * s**2 for w, s in zip(LUMA, std, strict=True))))
        return (grey_mean,), (grey_std,)
    raise ValueError(f"cannot derive {in_chans}-channel statistics from {len(mean)}-channel ones")


def to_channels(image: np.ndarray, in_chans: int) -> np.ndarray:
    """Convert an ``(H, W)`` or ``(H, W, C)`` float image to ``(H, W, in_chans)``.

    Greyscale is replicated to RGB; RGB becomes grey by luma; an alpha channel is dropped.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] in (2, 4):  # grey+alpha or RGBA: alpha carries no microstructure
        image = image[:, :, :-1]
    channels = image.shape[2]
    if channels == in_chans:
        return image
    if channels == 1 and in_chans == 3:
        return np.repeat(image, 3, axis=2)
    if channels == 3 and in_chans == 1:
        return (image @ np.asarray(LUMA, dtype=image.dtype))[:, :, None]
    raise ValueError(f"cannot convert a {channels}-channel image to in_chans={in_chans}")


class PixelSizeError(ValueError):
    """An image's pixel size is unknown but a target pixel size needs it; the message names the file and the fix."""


@dataclass(frozen=True)
class PhysicalScale:
    """The first geometric step: crop the instrument's data bar, then resample to one physical pixel size.

    Every image (and its mask, nearest-neighbour) is resampled by ``pixel_size / target_pixel_size`` before any
    augmentation, tiling or resize, so a feature of a given size in micrometres spans the same number of pixels in
    every image. Applied identically in training, evaluation and ``smalldata apply``.

    Args:
        target_pixel_size: Micrometres per pixel of every image after resampling; ``None`` keeps each image's own.
        crop_data_bar: Cut off the data bar when the file's metadata gives its height.

    Raises:
        ValueError: If ``target_pixel_size`` is not positive.
    """

    target_pixel_size: float | None = None
    crop_data_bar: bool = True

    def __post_init__(self) -> None:
        if self.target_pixel_size is not None and not self.target_pixel_size > 0:
            raise ValueError(f"target_pixel_size must be positive (µm per pixel), got {self.target_pixel_size}")

    def resolve(self, path: str | Path, pixel_size: float | None = None) -> tuple[float | None, int]:
        """``(pixel size, data-bar rows to crop)`` of a file; a given ``pixel_size`` (manifest) beats the metadata.

        The file is opened only when its metadata matters: for the data-bar height, or for a pixel size that a
        target pixel size needs and the manifest does not give.

        Raises:
            ImageReadError: If the file's metadata cannot be read.
        """
        if not self.crop_data_bar and (pixel_size is not None or self.target_pixel_size is None):
            return pixel_size, 0
        metadata = read_metadata(path)
        return (pixel_size if pixel_size is not None else metadata.pixel_size), (
            metadata.data_bar if self.crop_data_bar else 0
        )

    def factor(self, pixel_size: float | None, source: str | Path = "<array>") -> float:
        """The resampling factor ``pixel_size / target_pixel_size`` (1 without a target).

        Raises:
            PixelSizeError: If a target is set and ``pixel_size`` is unknown.
        """
        if self.target_pixel_size is None:
            return 1.0
        if pixel_size is None:
            raise PixelSizeError(
                f"{source} has no known pixel size, but target_pixel_size={self.target_pixel_size} µm needs one: add a "
                "pixel_size column (µm per pixel) to the manifest, pass --pixel_size to `smalldata apply`, or keep "
                "the instrument's TIFF metadata (FEI, Zeiss, ImageJ or resolution tags)"
            )
        return pixel_size / self.target_pixel_size

    def shape(
        self, shape: Sequence[int], pixel_size: float | None, data_bar: int = 0, source: str | Path = "<array>"
    ) -> tuple[int, int]:
        """``(height, width)`` that :meth:`__call__` gives an image of ``shape``, without touching pixels."""
        factor = self.factor(pixel_size, source)
        height, width = int(shape[0]) - data_bar, int(shape[1])
        if factor == 1.0:
            return height, width
        return max(1, round(height * factor)), max(1, round(width * factor))

    def __call__(
        self,
        image: np.ndarray,
        pixel_size: float | None = None,
        data_bar: int = 0,
        mask: np.ndarray | None = None,
        source: str | Path = "<array>",
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Crop ``data_bar`` rows off the bottom and resample ``image`` (and ``mask``) to the target pixel size.

        Raises:
            PixelSizeError: If a target is set and ``pixel_size`` is unknown.
        """
        height, width = self.shape(image.shape, pixel_size, data_bar, source)
        if data_bar:
            image = image[: image.shape[0] - data_bar]
            mask = None if mask is None else mask[: mask.shape[0] - data_bar]
        if (height, width) == image.shape[:2]:
            return image, mask
        # Area averaging when shrinking (no aliasing of fine lamellae), bilinear when enlarging; masks nearest.
        resize = A.Resize(height, width, area_for_downscale="image")
        data = resize(image=image) if mask is None else resize(image=image, mask=mask)
        return data["image"], None if mask is None else data["mask"].astype(mask.dtype)


class ImagePipeline:
    """Augment (optional), resize, normalise and convert one sample to tensors.

    Resizing follows ``resize``: ``squash`` stretches every image to an ``image_size`` square (the aspect ratio is
    lost, so a 645x475 micrograph is shrunk 1.44x across but 1.06x down); ``shortest_side`` scales the shorter
    side to ``image_size`` and keeps the aspect ratio, so evaluation sees the whole image at the pixel scale of
    the largest training crops (global pooling takes any size). Training pipelines (``train=True``) then cut the
    central ``image_size`` square, a no-op after a crop augmentation that already delivers one.

    Args:
        in_chans: Channels the model expects.
        image_size: Output side (``squash``) or shorter side (``shortest_side``); ``None`` keeps the input size.
        augment: Albumentations transform applied first (training only); ``None`` for evaluation.
        mean: Per-channel normalisation mean for ``in_chans`` channels.
        std: Per-channel normalisation std.
        resize: ``squash`` or ``shortest_side``.
        train: A training pipeline (square outputs, so batches stack).
    """

    def __init__(
        self,
        in_chans: int,
        image_size: int | None,
        augment: A.BasicTransform | None,
        mean: Sequence[float],
        std: Sequence[float],
        resize: ResizePolicy = "squash",
        train: bool = False,
    ) -> None:
        if resize not in ("squash", "shortest_side"):
            raise ValueError(f"resize must be 'squash' or 'shortest_side', got {resize!r}")
        self.in_chans = in_chans
        self.augment = augment
        final: list[Any] = []
        if image_size is not None and resize == "squash":
            final.append(A.Resize(image_size, image_size))
        elif image_size is not None:
            final.append(A.SmallestMaxSize(max_size=image_size))
            if train:
                final.append(A.CenterCrop(image_size, image_size))
        final.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=1.0))
        self.finish = A.Compose(final)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, seed: int | None = None) -> dict:
        """Transform a float image in [0, 1] (and its mask); ``seed`` fixes the augmentation draw.

        Returns:
            ``{"image": float32 [C, H, W]}`` plus ``"mask"`` (int64 ``[H, W]``) when a mask was given; padding
            added by the augmentation carries whatever ``fill_mask`` it was given (``IGNORE_INDEX`` for crops).
        """
        data: dict[str, np.ndarray] = {"image": to_channels(image.astype(np.float32), self.in_chans)}
        if mask is not None:
            data["mask"] = mask
        if self.augment is not None:
            if seed is not None:
                self.augment.set_random_seed(seed)
            data = self.augment(**data)
            data["image"] = np.clip(data["image"], 0.0, 1.0)
        data = self.finish(**data)
        out = {"image": torch.from_numpy(np.ascontiguousarray(data["image"].transpose(2, 0, 1)))}
        if mask is not None:
            out["mask"] = torch.from_numpy(np.ascontiguousarray(data["mask"])).long()
        return out


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that is a pure function of ``(seed, epoch, index)``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])
