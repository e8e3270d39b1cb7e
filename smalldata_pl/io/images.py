"""Reading micrographs correctly: PNG, JPEG and TIFF, 8/16-bit and float, grey, RGB and RGBA."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", *TIFF_SUFFIXES)


class ImageReadError(OSError):
    """An image file could not be read; the message names the file and the fix."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as float32 in [0, 1], shape ``(H, W)`` or ``(H, W, C)``.

    Integer images are scaled by their storage bit depth (8-bit by 255, 16-bit by 65535), so a 16-bit SEM
    image keeps its dynamic range. Float TIFFs already in [0, 1] are kept; other float ranges are min-max
    scaled (the absolute scale of such data is not an intensity).

    Raises:
        ImageReadError: If the file is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tiff:
                _single_frame(path, len(tiff.pages))
                array = tiff.asarray(key=0)
        else:
            with Image.open(path) as image:
                _single_frame(path, getattr(image, "n_frames", 1))
                image.load()  # decode now so truncation surfaces here, not later in a worker
                array = np.asarray(image.convert("RGB") if image.mode in ("P", "CMYK", "YCbCr") else image)
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            f"image {path} is larger than Pillow's safety limit ({error}); cut it into tiles, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file; strict=False skips it."
        ) from error
    except (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError) as error:
        raise ImageReadError(
            f"cannot read image {path}: {error}. Re-export the file (PNG or TIFF), or remove it from the dataset; "
            "strict=False skips unreadable files and reports each one."
        ) from error
    return to_unit_float(array, path)


def _single_frame(path: Path, frames: int) -> None:
    # A stack (time series, focus series, 3 frames that would pass for RGB) is not one micrograph.
    if frames > 1:
        raise ImageReadError(
            f"image {path} holds {frames} frames; save the frame you mean as its own file (one micrograph per file)"
        )


def to_unit_float(array: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Scale an integer or float image array to float32 in [0, 1] by its bit depth."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channel-first TIFF
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3):
        raise ImageReadError(f"image {path} has shape {array.shape}; expected (H, W) or (H, W, C)")
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        # PIL returns 16-bit PNGs as int32; their range is still 16 bits.
        depth_max = 65535 if array.dtype.itemsize > 2 and array.max() <= 65535 else np.iinfo(array.dtype).max
        return (array.astype(np.float64) / depth_max).astype(np.float32)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ImageReadError(f"image {path} contains NaN or infinite values; clean or re-export it")
    low, high = float(array.min()), float(array.max())
    if low >= 0.0 and high <= 1.0:
        return array
    return (array - low) / max(high - low, 1e-12)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path``; once the block succeeds it replaces ``path`` in one step.

    An error inside the block leaves ``path`` as it was (the old file, or none) and removes the temporary
    file, so readers never see a truncated image, table or manifest. The temporary name ends in ``.tmp``, so
    one left by a killed process is never taken for an image; writers that pick the format by the extension
    must be told it (:func:`pil_format`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_unit_image(path: Path, image: np.ndarray, bits: int = 8) -> None:
    """Write a float image in [0, 1] atomically: 8-bit PNG (grey or RGB), or 16-bit (PNG, or TIFF for ``.tif``)."""
    image = np.clip(image, 0.0, 1.0)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    with atomic_path(path) as temporary:
        if bits == 16 and path.suffix.lower() in TIFF_SUFFIXES:
            tifffile.imwrite(temporary, (image * 65535).round().astype(np.uint16))
        elif bits == 16 and image.ndim == 2:
            Image.fromarray((image * 65535).round().astype(np.uint16)).save(temporary, format=pil_format(path))
        else:
            Image.fromarray((image * 255).round().astype(np.uint8)).save(temporary, format=pil_format(path))


def write_probability_stack(path: Path, probabilities: np.ndarray, class_names: list[str]) -> None:
    """Write per-class probability maps ``[K, H, W]`` atomically as one float32 TIFF, a page per class.

    The class names travel in the file's JSON description (``tifffile.TiffFile(path).shaped_metadata[0]``, key
    ``class_names``), so the stack reads back without the model; ImageJ and napari open it as a stack.

    Raises:
        ValueError: If the stack is not ``[K, H, W]`` with one page per class name.
    """
    stack = np.asarray(probabilities, dtype=np.float32)
    if stack.ndim != 3 or len(stack) != len(class_names):
        raise ValueError(f"{path}: expected probabilities [{len(class_names)}, H, W], got shape {list(stack.shape)}")
    with atomic_path(path) as temporary:
        tifffile.imwrite(temporary, stack, metadata={"axes": "CYX", "class_names": list(class_names)})


# Distinct colours for class indices 0, 1, 2 …; class 0 (often matrix or grain interior) is black.
BASE_COLOURS = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240))


def class_palette(count: int) -> np.ndarray:
    """``[count, 3]`` uint8 RGB colours of class indices: fixed distinct ones first, then seeded random ones."""
    extra = np.random.default_rng(0).integers(0, 256, (max(0, count - len(BASE_COLOURS)), 3))
    return np.vstack([np.asarray(BASE_COLOURS), extra])[:count].astype(np.uint8)


def write_label_image(path: Path, labels: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write a class-index mask atomically as a single-channel PNG (8-bit, or 16-bit above 255 classes).

    With a ``palette`` (``[K, 3]`` uint8, see :func:`class_palette`) an 8-bit mask is a palette PNG: the pixel
    values stay the class indices, and any image viewer shows the colours. Values from ``K`` up (e.g. unlabelled
    pixels) are black unless the palette has a row for them.
    """
    labels = np.asarray(labels)
    dtype = np.uint8 if labels.size == 0 or int(labels.max()) < 256 else np.uint16
    image = Image.fromarray(labels.astype(dtype))
    if palette is not None and dtype == np.uint8:
        image = image.convert("P")  # an "L" image of indices becomes a "P" image with the same indices
        # A full 256-entry palette: PNG saves a shorter one as fewer bits, which would remap values beyond it.
        rows = np.asarray(palette, dtype=np.uint8)[:256]
        full = np.zeros((256, 3), np.uint8)
        full[: len(rows)] = rows
        image.putpalette(full.ravel().tolist())
    with atomic_path(path) as temporary:
        image.save(temporary, format=pil_format(path))


def pil_format(path: Path) -> str:
    """Pillow's format name for the extension of ``path`` (``PNG`` for ``.png``)."""
    formats = Image.registered_extensions()
    if path.suffix.lower() not in formats:
        raise ValueError(f"cannot write {path}: unknown image extension {path.suffix!r}; use .png or .tif")
    return formats[path.suffix.lower()]
