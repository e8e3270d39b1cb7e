"""Samples written to disk in the real-data layout: augmented copies of records and procedural samples."""

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import numpy as np
from tqdm import tqdm

from smalldata_pl.datasets.folder import Record
from smalldata_pl.datasets.segmentation import UNLABELLED, MaskRecord, read_mask, source_image
from smalldata_pl.generators.grains import GRAIN_MORPHOLOGIES
from smalldata_pl.generators.imaging import IMAGING_PRESETS
from smalldata_pl.generators.renderers import GrainBoundaryRenderer, GrainClassRenderer, PrecipitateRenderer, Renderer
from smalldata_pl.io.images import read_image, write_label_image, write_unit_image
from smalldata_pl.io.output_folder import prepare_output
from smalldata_pl.io.tables import write_csv
from smalldata_pl.transforms.pipeline import IGNORE_INDEX, PhysicalScale, sample_seed

log = logging.getLogger(__name__)

SYNTHETIC_KINDS = ("grains", "boundaries", "precipitates")


def write_augmented(
    records: Sequence[Record | MaskRecord],
    augment: A.Compose,
    class_names: Sequence[str],
    copies: int,
    out: Path,
    seed: int = 0,
    root: Path | None = None,
    overwrite: bool = False,
    scale: PhysicalScale | None = None,
    ignore_value: int | None = None,
) -> Path:
    """Write ``copies`` augmented versions of every record plus ``manifest.csv``; returns the manifest path.

    Labelled records (:class:`Record`) give ``<class>/<source path>_aug<k>.png`` and a manifest
    ``file,label,group,source``; image/mask records (:class:`MaskRecord`) give ``images/<source path>_aug<k>.png``
    and ``masks/<source path>_aug<k>.png``, transformed together, and a manifest ``image,mask,group,source``.
    ``<source path>`` is the source's path relative to ``root`` without its suffix, so sources of the same name
    in different folders get different copies. Each copy keeps its source's group, so splits and the leakage
    guard treat copies and source as one micrograph. Copy ``k`` of record ``i`` is drawn with the seed of
    epoch ``k``, sample ``i``. Each source first goes through ``scale`` (data-bar crop, resampling to the target
    pixel size), as the training datasets do, so the copies show what training sees.

    Args:
        records: The sources (all of one kind).
        augment: The training augmentation.
        class_names: Classes in index order (labels of :class:`Record`, mask values of :class:`MaskRecord`).
        copies: Augmented copies per source.
        out: Target folder; must be empty unless ``overwrite``.
        seed: Seed of the draws.
        root: Folder the sources' paths are taken relative to (the DataModule's ``root``); default: their
            common parent folder.
        overwrite: Delete what ``out`` holds first.
        scale: The DataModule's physical-scale step; ``None`` keeps the images as they are on disk.
        ignore_value: The mask value of the sources' unlabelled pixels (the DataModule's). Unlabelled pixels of a
            copy, the sources' and the borders a transform invents (its ``fill_mask`` ``IGNORE_INDEX``), are written
            as it, or as ``UNLABELLED`` (255) without one; a warning then says to train with ``ignore_value``.

    Raises:
        FileExistsError: If ``out`` is not empty and ``overwrite`` is false.
        ValueError: If a copy has unlabelled pixels, no ``ignore_value`` is set and 255 is a class.
    """
    masks = all(isinstance(r, MaskRecord) for r in records)
    if not masks and not all(isinstance(r, Record) for r in records):
        raise TypeError("records must be all labelled records or all image/mask records")
    sources = [source_image(r) for r in records]
    prepare_output(out, overwrite, sources)
    stems = _unique_stems(sources, root)
    rows = []
    unlabelled = UNLABELLED if ignore_value is None else ignore_value
    partly_labelled = 0  # copies with unlabelled pixels
    pairs = tqdm(list(zip(records, stems, strict=True)), desc="augment", unit="image")
    for index, (record, stem) in enumerate(pairs):
        image = read_image(sources[index])
        mask = (
            read_mask(record.mask, len(class_names), image.shape, record.image, ignore_value)
            if isinstance(record, MaskRecord)
            else None
        )
        if scale is not None:
            pixel_size, data_bar = scale.resolve(sources[index], record.pixel_size)
            image, mask = scale(image, pixel_size, data_bar, mask, source=sources[index])
        image = image[:, :, :3] if image.ndim == 3 else image[:, :, None]
        data = {"image": image.astype(np.float32)}
        if mask is not None:
            data["mask"] = mask
        for copy in range(copies):
            augment.set_random_seed(sample_seed(seed, copy, index))
            augmented = augment(**data)
            if isinstance(record, MaskRecord):
                image_name, mask_name = f"images/{stem}_aug{copy}.png", f"masks/{stem}_aug{copy}.png"
                write_unit_image(out / image_name, augmented["image"])
                missing = augmented["mask"] == IGNORE_INDEX
                has_missing = bool(missing.any())
                if has_missing and ignore_value is None and len(class_names) > UNLABELLED:
                    raise ValueError(
                        f"the augmentation invents mask pixels with no label in copies of {record.mask}, and "
                        f"{UNLABELLED} is one of the {len(class_names)} classes: set data.init_args.ignore_value to "
                        "a value outside them, or use borders that reflect the image (border_mode 4)"
                    )
                partly_labelled += has_missing
                mask_copy = np.where(missing, unlabelled, augmented["mask"]) if has_missing else augmented["mask"]
                write_label_image(out / mask_name, mask_copy)
                source = str(record.image)
                rows.append({"image": image_name, "mask": mask_name, "group": record.group, "source": source})
            else:
                label = class_names[record.label]
                name = f"{label}/{stem}_aug{copy}.png"
                write_unit_image(out / name, augmented["image"])
                rows.append({"file": name, "label": label, "group": record.group, "source": str(record.path)})
    if partly_labelled and ignore_value is None:
        log.warning(
            "%d of %d augmented masks in %s have unlabelled pixels (%d: borders the augmentation invented); train "
            "on them with data.init_args.ignore_value: %d",
            partly_labelled, len(rows), out / "masks", unlabelled, unlabelled,
        )  # fmt: skip
    fields = ["image", "mask", "group", "source"] if masks else ["file", "label", "group", "source"]
    return write_csv(out / "manifest.csv", rows, fields)


def _unique_stems(paths: Sequence[Path], root: Path | None) -> list[str]:
    """Each path relative to ``root`` without its suffix (``a.png`` and ``a.tif`` side by side keep it: ``a_tif``)."""
    if root is None:
        root = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path()

    def relative(path: Path) -> Path:
        try:
            return path.relative_to(root)
        except ValueError:  # outside root (an absolute manifest path): mirror the absolute path
            return Path("_external", *path.resolve().parts[1:])

    relatives = [relative(p) for p in paths]
    stems = [r.with_suffix("").as_posix() for r in relatives]
    counts = Counter(stems)
    stems = [
        (r.with_suffix("").as_posix() + "_" + r.suffix.lstrip(".")) if counts[s] > 1 else s
        for r, s in zip(relatives, stems, strict=True)
    ]
    clashes = [s for s, n in Counter(stems).items() if n > 1]
    if clashes:
        raise ValueError(f"several sources would write the copies {clashes[0]}_aug<k>.png; rename one of them")
    return stems


def write_synthetic(
    kind: str, count: int, out: Path, size: int, imaging: str | None, seed: int, bits: int, overwrite: bool = False
) -> Path:
    """Write ``count`` procedural samples; returns the manifest path.

    ``grains`` gives ``<class>/<name>.png`` with ``manifest.csv`` (file,label,group) for MicrographFolder;
    ``boundaries`` and ``precipitates`` give ``images/``, ``masks/`` and ``manifest.csv`` (image,mask,group)
    for SegmentationFolder. ``bits=16`` writes 16-bit TIFF images. ``out`` must be empty unless ``overwrite``
    (which deletes what it holds first).

    Raises:
        FileExistsError: If ``out`` is not empty and ``overwrite`` is false.
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
    prepare_output(out, overwrite)
    for index in tqdm(range(count), desc=f"synth {kind}", unit="sample"):
        image, target = renderer(np.random.default_rng([seed, index]), index)
        group = f"synthetic-{kind}-{seed}-{index}"
        if kind == "grains":
            name = f"{GRAIN_MORPHOLOGIES[int(target)].name}/{kind}_{index:05d}{suffix}"
            write_unit_image(out / name, image, bits)
            rows.append({"file": name, "label": GRAIN_MORPHOLOGIES[int(target)].name, "group": group})
        else:
            image_name, mask_name = f"images/{kind}_{index:05d}{suffix}", f"masks/{kind}_{index:05d}.png"
            write_unit_image(out / image_name, image, bits)
            write_label_image(out / mask_name, np.asarray(target, dtype=np.uint8))
            rows.append({"image": image_name, "mask": mask_name, "group": group})
    return write_csv(out / "manifest.csv", rows)
