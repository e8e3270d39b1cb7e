"""Leakage audit: group overlap and transformed copies across train and validation of every fold."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from smalldata_pl.datasets.folder import Record
from smalldata_pl.datasets.leakage import THRESHOLD, find_duplicates, signature
from smalldata_pl.datasets.segmentation import MaskRecord, source_image
from smalldata_pl.datasets.splits import GroupLeakError, SplitKind, check_no_group_leak, fold_indices
from smalldata_pl.io.images import read_image
from smalldata_pl.transforms.pipeline import PhysicalScale

AUDIT_FIELDS = ["fold", "kind", "train", "validation", "correlation"]

# (name, training indices, validation indices) of one split of the records.
Split = tuple[int | str, Sequence[int], Sequence[int]]


def audit_folds(
    records: Sequence[Record | MaskRecord],
    num_folds: int,
    split: SplitKind,
    seed: int,
    candidates: int = 30,
    threshold: float = THRESHOLD,
    scale: PhysicalScale | None = None,
) -> list[dict]:
    """Every leak in every fold of a K-fold split: rows with the fields of :data:`AUDIT_FIELDS`.

    Image/mask records (segmentation) have no class label; they are split as their DataModule splits them,
    group K-fold with one constant label.

    Args:
        records: The labelled images (or image/mask pairs), before tiling and augmentation.
        num_folds: K of the split.
        split: The split kind of the DataModule.
        seed: The split seed of the DataModule.
        candidates: Images template-matched per query.
        threshold: Correlation that counts as a copy.
        scale: The DataModule's physical-scale step, whose data-bar crop is applied before fingerprinting.
    """
    labels = [r.label if isinstance(r, Record) else 0 for r in records]
    groups = [r.group for r in records]
    folds: list[Split] = []
    for fold in range(num_folds):
        train, val = fold_indices(labels, groups, num_folds, fold, split, seed)
        folds.append((fold, train.tolist(), val.tolist()))
    return audit_splits(records, folds, candidates, threshold, scale)


def tagged_splits(records: Sequence[MaskRecord], name: str) -> list[Split]:
    """The ``<name>:val`` and ``<name>:test`` sides of an upstream split (those that exist) against its train side."""
    tags = [r.splits.split(";") for r in records]
    sides = {side: [i for i, t in enumerate(tags) if f"{name}:{side}" in t] for side in ("train", "val", "test")}
    if not sides["train"]:
        raise ValueError(f"no records tagged {name}:train; check official_split")
    return [(f"{name}:{side}", sides["train"], sides[side]) for side in ("val", "test") if sides[side]]


def audit_splits(
    records: Sequence[Record | MaskRecord],
    splits: Sequence[Split],
    candidates: int = 30,
    threshold: float = THRESHOLD,
    scale: PhysicalScale | None = None,
) -> list[dict]:
    """Every group overlap and transformed copy between the two sides of each split.

    Images are fingerprinted without their data bar (``scale``'s crop, else the record's own ``data_bar``): the
    bar is alike in every image of an instrument and would make unrelated micrographs look like copies.
    """
    paths = [source_image(r) for r in records]
    signatures = [
        signature(_without_data_bar(r, p, scale))
        for r, p in tqdm(list(zip(records, paths, strict=True)), desc="fingerprinting", unit="image")
    ]
    groups = [r.group for r in records]
    rows: list[dict] = []
    for name, train, val in splits:
        try:
            check_no_group_leak([groups[i] for i in train], [groups[i] for i in val])
        except GroupLeakError as error:
            rows.append({"fold": name, "kind": "group", "train": str(error), "validation": "", "correlation": ""})
        pairs = find_duplicates([signatures[i] for i in train], [signatures[i] for i in val], candidates, threshold)
        for i, j, score in pairs:
            rows.append(
                {
                    "fold": name,
                    "kind": "copy",
                    "train": str(paths[train[i]]),
                    "validation": str(paths[val[j]]),
                    "correlation": f"{score:.3f}",
                }
            )
    return rows


def _without_data_bar(record: Record | MaskRecord, path: Path, scale: PhysicalScale | None) -> np.ndarray:
    image = read_image(path)
    bar = scale.resolve(path, record.pixel_size)[1] if scale is not None else record.data_bar
    return image[: image.shape[0] - bar]
