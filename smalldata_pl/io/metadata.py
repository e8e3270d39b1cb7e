"""A micrograph's physical pixel size and data-bar height, read from its file (FEI/Thermo, Zeiss, ImageJ, TIFF)."""

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tifffile

from smalldata_pl.io.images import TIFF_SUFFIXES, ImageReadError

log = logging.getLogger(__name__)

# Length units as instruments and ImageJ write them, in micrometres.
UNIT_IN_MICROMETRES = {
    "m": 1e6,
    "cm": 1e4,
    "mm": 1e3,
    "um": 1.0,
    "µm": 1.0,  # micro sign U+00B5
    "μm": 1.0,  # Greek mu U+03BC
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "pm": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
}
# TIFF ResolutionUnit codes with a length: 2 inch, 3 centimetre (1 means "no unit").
RESOLUTION_UNIT_IN_MICROMETRES = {2: 25400.0, 3: 10000.0}
# Image editors write 72-300 dpi whatever the picture shows; resolution tags at or below this density are a
# screen or print default, not a physical scale (1200 dpi is 21 µm per pixel, coarser than a micrograph's pixel).
MAX_DEFAULT_DPI = 1200.0


@dataclass(frozen=True)
class ImageMetadata:
    """What a micrograph file says about its geometry.

    Attributes:
        pixel_size: Micrometres per pixel, or ``None`` when the file does not say.
        data_bar: Rows at the bottom of the image holding the instrument's data bar; 0 when none is recorded.
        source: The metadata the pixel size came from (``FEI``, ``Zeiss SEM``, ``ImageJ``, ``TIFF resolution``).
    """

    pixel_size: float | None = None
    data_bar: int = 0
    source: str = ""


def read_metadata(path: str | Path) -> ImageMetadata:
    """Pixel size and data-bar height of a TIFF from its metadata; other formats carry none we trust.

    Sources, first found wins: FEI/Thermo Fisher (``[Scan] PixelWidth`` in metres; the data bar is
    ``[PrivateFei] DatabarHeight`` or the rows beyond ``[Image] ResolutionY``), Zeiss SmartSEM
    (``AP_IMAGE_PIXEL_SIZE`` with its unit; the data bar is the rows beyond ``DP_IMAGE_STORE``), ImageJ (``unit``
    plus ``XResolution``), and plain resolution tags in inch or centimetre above :data:`MAX_DEFAULT_DPI`.

    Raises:
        ImageReadError: If the file cannot be opened as a TIFF.
    """
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return ImageMetadata()
    try:
        with tifffile.TiffFile(path) as tiff:
            page: Any = tiff.pages[0]
            rows = int(page.imagelength)
            found = [
                _fei(tiff.fei_metadata, rows, path),
                _zeiss(tiff.sem_metadata, rows),
                _imagej(tiff.imagej_metadata, page, path),
                _resolution_tags(page, path),
            ]
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise ImageReadError(f"cannot read the metadata of {path}: {error}; re-export the file as TIFF") from error
    pixel = next((m for m in found if m.pixel_size is not None), ImageMetadata())
    bar = next((m.data_bar for m in found if m.data_bar > 0), 0)
    return ImageMetadata(pixel.pixel_size, bar, pixel.source)


def _fei(metadata: Mapping[str, Any] | None, rows: int, path: Path) -> ImageMetadata:
    """FEI/Thermo Fisher SEM and FIB (tags FEI_SFEG, FEI_HELIOS): an INI text with sizes in metres."""
    if not metadata:
        return ImageMetadata()
    scan = metadata.get("Scan") or metadata.get("EScan") or {}
    width, height = _positive(scan.get("PixelWidth")), _positive(scan.get("PixelHeight"))
    pixel_size = None if width is None else _square(width * 1e6, height and height * 1e6, path, "FEI")
    bar = _positive(metadata.get("PrivateFei", {}).get("DatabarHeight"))
    if bar is None:  # the recorded scan has ResolutionY rows; what the file holds beyond them is the data bar
        scanned = _positive(metadata.get("Image", {}).get("ResolutionY")) or _positive(scan.get("ResolutionY"))
        bar = rows - scanned if scanned is not None and scanned < rows else 0
    return ImageMetadata(pixel_size, int(bar) if bar < rows else 0, "FEI")


def _zeiss(metadata: Mapping[str, Any] | None, rows: int) -> ImageMetadata:
    """Zeiss SmartSEM (tag CZ_SEM): ``(label, value, unit)`` entries such as ``('Image Pixel Size', 2.8, 'nm')``."""
    if not metadata:
        return ImageMetadata()
    pixel_size = None
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        entry = metadata.get(key)
        if isinstance(entry, tuple) and len(entry) >= 3 and _positive(entry[1]) is not None:
            scale = UNIT_IN_MICROMETRES.get(_unit(str(entry[2])))
            if scale is not None:
                pixel_size = float(entry[1]) * scale
                break
    bar = 0
    store = metadata.get("dp_image_store")  # ('Store resolution', '1024 * 768'): the scanned frame
    match = re.search(r"(\d+)\s*\*\s*(\d+)", str(store[1])) if isinstance(store, tuple) and len(store) > 1 else None
    if match and 0 < int(match.group(2)) < rows:
        bar = rows - int(match.group(2))
    return ImageMetadata(pixel_size, bar, "Zeiss SEM")


def _imagej(metadata: Mapping[str, Any] | None, page: Any, path: Path) -> ImageMetadata:
    """ImageJ/Fiji: the ``unit`` of the description and ``XResolution`` pixels per unit."""
    if not metadata or "unit" not in metadata or 282 not in page.tags:
        return ImageMetadata()
    scale = UNIT_IN_MICROMETRES.get(_unit(str(metadata["unit"])))
    x, y = page.resolution
    if scale is None or not x > 0:
        return ImageMetadata()
    return ImageMetadata(_square(scale / x, scale / y if y > 0 else None, path, "ImageJ"), 0, "ImageJ")


def _resolution_tags(page: Any, path: Path) -> ImageMetadata:
    """Baseline TIFF ``XResolution``/``YResolution`` in inch or centimetre, unless they are an editor's default."""
    scale = RESOLUTION_UNIT_IN_MICROMETRES.get(int(page.resolutionunit))
    if scale is None or 282 not in page.tags:
        return ImageMetadata()
    x, y = page.resolution
    if not x > 0:
        return ImageMetadata()
    if x * 25400.0 / scale <= MAX_DEFAULT_DPI:
        log.debug("ignoring the resolution tags of %s (%.0f dpi): a screen or print default", path, x * 25400 / scale)
        return ImageMetadata()
    return ImageMetadata(
        _square(scale / x, scale / y if y > 0 else None, path, "TIFF resolution"), 0, "TIFF resolution"
    )


def _square(width: float, height: float | None, path: Path, source: str) -> float:
    """The pixel width; non-square pixels (rare, a scan setting) are named, since one scale is used for both axes."""
    if height is not None and abs(height - width) > 0.01 * width:
        log.warning(
            "%s: %s metadata gives non-square pixels (%.4g x %.4g µm); using the width for both axes",
            path,
            source,
            width,
            height,
        )
    return width


def _unit(text: str) -> str:
    # ImageJ escapes the micro sign in its description ("\u00B5m"); units are compared in lower case.
    return text.replace("\\u00B5", "µ").replace("\\u03BC", "μ").strip().lower()


def _positive(value: Any) -> float | None:
    """A number greater than zero, or ``None`` (missing, text, zero)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value > 0 else None
