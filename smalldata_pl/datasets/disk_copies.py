"""Samples written to disk in the real-data layout: augmented copies of records and procedural samples."""

from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import numpy as np
from PIL import Image

from smalldata_pl.datasets.folder import Record
from smalldata_pl.generators.grains import GRAIN_MORPHOLOGIES
from smalldata_pl.generators.imaging import IMAGING_PRESETS
from smalldata_pl.generators.renderers import GrainBoundaryRenderer, GrainClassRenderer, PrecipitateRenderer, Renderer
from smalldata_pl.io.images import read_image, write_unit_image
from smalldata_pl.io.tables import write_csv
from smalldata_pl.transforms.pipeline import sample_seed

SYNTHETIC_KINDS = ("grains", "boundaries", "precipitates")


def write_augmented(
    records: Sequence[Record], augment: A.Compose, class_names: Sequence[str], copies: int, out: Path, seed: int = 0
) -> Path:
    """Write ``copies`` augmented versions of every record plus ``manifest.csv`` (file,label,group,source).

    Each copy keeps its source's group, so splits and the leakage guard treat copies and source as one
    micrograph. Copy ``k`` of record ``i`` is drawn with the seed of epoch ``k``, sample ``i``.

    Returns:
        The manifest path.
    """
    rows = []
    for index, record in enumerate(records):
        image = read_image(record.path)
        image = image[:, :, :3] if image.ndim == 3 else image[:, :, None]
        for copy in range(copies):
            augment.set_random_seed(sample_seed(seed, copy, index))
            augmented = augment(image=image.astype(np.float32))["image"]
            name = f"{class_names[record.label]}/{record.path.stem}_aug{copy}.png"
            write_unit_image(out / name, augmented)
            rows.append(
                {"file": name, "label": class_names[record.label], "group": record.group, "source": str(record.path)}
            )
    return write_csv(out / "manifest.csv", rows, ["file", "label", "group", "source"])


def write_synthetic(kind: str, count: int, out: Path, size: int, imaging: str | None, seed: int, bits: int) -> Path:
    """Write ``count`` procedural samples; returns the manifest path.

    ``grains`` gives ``<class>/<name>.png`` with ``manifest.csv`` (file,label,group) for MicrographFolder;
    ``boundaries`` and ``precipitates`` give ``images/``, ``masks/`` and ``manifest.csv`` (image,mask,group)
    for SegmentationFolder. ``bits=16`` writes 16-bit TIFF images.
    """
    if count < 1 or size < 8:
        raise ValueError(f"count must be at least 1 and size at least 8 pixels, got count={count}, size={size}")
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {SYNTHETIC_KINDS}")
    if imaging is not None and imaging not in IMAGING_PRESETS:
        raise ValueError(f"unknown imaging preset {imaging!r}; choose one of {sorted(IMAGING_PRESETS)}")
    factories: dict[str, Callable[[], Renderer]] = {
        "grains": lambda: GrainClassRenderer(size, imaging or "optical"),
        "boundaries": lambda: GrainBoundaryRenderer(size, imaging or "optical", 2),
        "precipitates": lambda: PrecipitateRenderer(size, imaging or "sem_se"),
    }
    renderer = factories[kind]()
    suffix = ".tif" if bits == 16 else ".png"
    rows = []
    for index in range(count):
        image, target = renderer(np.random.default_rng([seed, index]), index)
        group = f"synthetic-{kind}-{seed}-{index}"
        if kind == "grains":
            name = f"{GRAIN_MORPHOLOGIES[int(target)].name}/{kind}_{index:05d}{suffix}"
            write_unit_image(out / name, image, bits)
            rows.append({"file": name, "label": GRAIN_MORPHOLOGIES[int(target)].name, "group": group})
        else:
            image_name, mask_name = f"images/{kind}_{index:05d}{suffix}", f"masks/{kind}_{index:05d}.png"
            write_unit_image(out / image_name, image, bits)
            (out / mask_name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(target, dtype=np.uint8)).save(out / mask_name)
            rows.append({"image": image_name, "mask": mask_name, "group": group})
    return write_csv(out / "manifest.csv", rows)
