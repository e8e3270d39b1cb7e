"""Labelled micrographs on disk: records found in class sub-folders or a CSV manifest, read as a Dataset."""

import csv
import difflib
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from smalldata_pl.datasets.sampling import split_key
from smalldata_pl.io.images import IMAGE_SUFFIXES, read_image
from smalldata_pl.transforms.pipeline import ImagePipeline, PhysicalScale, sample_seed

log = logging.getLogger(__name__)

# A found file before labelling: (path, label as written, group, pixel size in µm or None).
Row = tuple[Path, str, str, float | None]


@dataclass(frozen=True)
class Record:
    """One labelled micrograph (or one tile of it)."""

    path: Path
    label: int
    group: str
    tile: tuple[int, int, int, int] | None = None  # (top, left, height, width), after the physical scale step
    pixel_size: float | None = None  # µm per pixel: the manifest's, or the file's metadata once resolved
    data_bar: int = 0  # rows of instrument data bar at the bottom, cropped before anything else


class MicrographFolderDataset(Dataset):
    """Reads records through a pipeline; samples carry ``image``, ``label``, ``group`` and ``path``.

    Args:
        records: The samples.
        pipeline: Augmentation (training) or evaluation pipeline.
        seed: Seed of the per-sample augmentation draws.
        scale: Data-bar crop and resampling to one pixel size, applied before tiling and the pipeline.
    """

    def __init__(
        self, records: Sequence[Record], pipeline: ImagePipeline, seed: int = 0, scale: PhysicalScale | None = None
    ) -> None:
        self.records = list(records)
        self.pipeline = pipeline
        self.seed = seed
        self.scale = scale or PhysicalScale()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = split_key(key)
        record = self.records[index]
        image, _ = self.scale(read_image(record.path), record.pixel_size, record.data_bar, source=record.path)
        if record.tile is not None:
            top, left, height, width = record.tile
            image = image[top : top + height, left : left + width]
        sample = self.pipeline(image, seed=sample_seed(self.seed, epoch, index))
        sample.update(group=record.group, path=str(record.path))
        if record.label >= 0:  # unlabelled images (prediction sets) carry label -1 and no label key
            sample["label"] = torch.tensor(record.label)
        return sample


def find_records(
    root: Path, manifest: Path | None, class_names: Sequence[str] | None, every_class: bool = True
) -> tuple[list[Record], list[str]]:
    """Find the labelled files (no image is decoded here) and fix the class list.

    Args:
        root: Folder of class sub-folders, or the folder manifest paths are relative to.
        manifest: CSV ``file,label[,group][,pixel_size]``; ``None`` reads ``root/<class>/*``.
        class_names: Classes in index order; ``None`` takes the sorted labels found.
        every_class: Require an image of every class (a held-out test set may lack one).

    Returns:
        The records and the class names in index order.

    Raises:
        ValueError: If a label is not in ``class_names`` or a class has no image.
    """
    rows = manifest_rows(manifest, root) if manifest is not None else folder_rows(root)
    names = list(class_names) if class_names else sorted({row[1] for row in rows}, key=_natural)
    if not class_names:
        _warn_near_identical(names, manifest or root)
    records = [
        Record(path, label_index(label, names, path), group, pixel_size=size) for path, label, group, size in rows
    ]
    counts = Counter(r.label for r in records)
    empty = [names[i] for i in range(len(names)) if counts[i] == 0]
    if empty and every_class:
        raise ValueError(
            f"class(es) {empty} have no images in {manifest or root}; add images or drop them from class_names"
        )
    return records, names


def _warn_near_identical(names: Sequence[str], where: Path) -> None:
    """A typo or a case difference in one label silently makes a new class; say so when classes look alike."""
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if first.casefold() == second.casefold() or difflib.SequenceMatcher(None, first, second).ratio() > 0.85:
                log.warning(
                    "classes %r and %r in %s look alike: if they are one class, fix the labels or give "
                    "data.class_names, which turns unknown labels into errors",
                    first,
                    second,
                    where,
                )


def folder_rows(root: Path) -> list[Row]:
    """Images in ``root/<class>/``; each file is its own group (``<class>/<stem>``)."""
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist; set data.root to your micrograph folder")
    rows: list[Row] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        found = [p for p in sorted(class_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise ValueError(
                f"class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it"
            )
        rows += [(path, class_dir.name, f"{class_dir.name}/{path.stem}", None) for path in found]
    if not rows:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders of {root}")
    return rows


def manifest_rows(manifest: Path, root: Path) -> list[Row]:
    """Rows of a CSV ``file,label[,group][,pixel_size]`` whose paths are relative to ``root``; every file must exist."""
    rows, seen = [], set()
    for line, row in enumerate(read_manifest(manifest, ("file", "label")), start=2):
        path = root / row["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{manifest}:{line}: file {path} does not exist; fix the path or delete the row")
        if path in seen:
            raise ValueError(f"{manifest}:{line}: {row['file']} is listed twice; delete the duplicate row")
        seen.add(path)
        group = row.get("group") or str(Path(row["file"]).with_suffix(""))
        rows.append((path, row["label"], group, manifest_pixel_size(row, manifest, line)))
    return rows


def manifest_pixel_size(row: dict[str, str], manifest: Path, line: int) -> float | None:
    """The optional ``pixel_size`` cell (µm per pixel); empty or absent means "ask the file's metadata".

    Raises:
        ValueError: For a cell that is not a positive number, naming the line.
    """
    text = row.get("pixel_size", "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(
            f"{manifest}:{line}: pixel_size {text!r} is not a positive number; write micrometres per pixel "
            "(e.g. 0.0125) or leave the cell empty to use the file's metadata"
        )
    return value


def read_manifest(manifest: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV manifest with surrounding whitespace stripped; a UTF-8 BOM (as Excel writes) is accepted.

    Raises:
        FileNotFoundError: If the manifest does not exist.
        ValueError: If it is not UTF-8 or lacks a required column; the message names the file.
    """
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} does not exist")
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip() for f in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except UnicodeDecodeError as error:
        raise ValueError(f"manifest {manifest} is not UTF-8 ({error}); save it as UTF-8 CSV") from error
    missing = sorted(set(required) - set(fields))
    if missing:
        raise ValueError(f"manifest {manifest} lacks column(s) {missing}; need {','.join(required)} (found {fields})")
    return rows


def tile_origins(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every whole ``size`` x ``size`` tile, ``stride`` apart; edge remainders are dropped."""
    return [(top, left) for top in range(0, height - size + 1, stride) for left in range(0, width - size + 1, stride)]


def resolve_image_set(
    root: str | Path | None, manifest: str | Path | None, name: str
) -> tuple[Path, Path | None] | None:
    """``(root, manifest)`` of an optional extra image set; a manifest alone is read relative to its folder."""
    if root is None and manifest is None:
        return None
    manifest_path = Path(manifest).expanduser() if manifest is not None else None
    folder = Path(root).expanduser() if root is not None else manifest_path.parent  # type: ignore[union-attr]
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}_root {folder} does not exist; fix data.{name}_root")
    return folder, manifest_path


def unlabelled_files(root: Path, manifest: Path | None = None) -> list[Path]:
    """Images to predict: the ``file`` column of a manifest (relative to ``root``), or every image under ``root``."""
    return [record.path for record in unlabelled_records(root, manifest)]


def unlabelled_records(root: Path, manifest: Path | None = None) -> list[Record]:
    """Unlabelled records (label -1, each its own group) with a manifest's optional ``pixel_size``.

    Raises:
        FileNotFoundError: For a manifest row naming a missing file.
        ValueError: For a folder without images.
    """
    if manifest is not None:
        records = []
        for line, row in enumerate(read_manifest(manifest, ("file",)), start=2):
            path = root / row["file"]
            if not path.is_file():
                raise FileNotFoundError(
                    f"{manifest}:{line}: file {path} does not exist; fix the path or delete the row"
                )
            records.append(Record(path, -1, str(path), pixel_size=manifest_pixel_size(row, manifest, line)))
        return records
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}; set data.predict_root to the folder")
    return [Record(path, -1, str(path)) for path in files]


def label_index(label: str, names: Sequence[str], path: Path) -> int:
    """Index of a label written as a class name, or as an index when no class name is a number."""
    if label in names:
        return names.index(label)
    if label.isdigit() and int(label) < len(names) and not any(n.isdigit() for n in names):
        return int(label)
    raise ValueError(f"label {label!r} of {path} is not in the class list {list(names)}; fix the label or class_names")


def _natural(text: str) -> tuple:
    """Sort key putting 'class2' before 'class10'."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))
