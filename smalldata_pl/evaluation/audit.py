"""Leakage audit: group overlap and transformed copies across train and validation of every fold."""

from collections.abc import Sequence

from smalldata_pl.datasets.folder import Record
from smalldata_pl.datasets.leakage import THRESHOLD, find_duplicates, signature
from smalldata_pl.datasets.splits import GroupLeakError, SplitKind, check_no_group_leak, fold_indices
from smalldata_pl.io.images import read_image

AUDIT_FIELDS = ["fold", "kind", "train", "validation", "correlation"]


def audit_folds(
    records: Sequence[Record],
    num_folds: int,
    split: SplitKind,
    seed: int,
    candidates: int = 30,
    threshold: float = THRESHOLD,
) -> list[dict]:
    """Every leak in every fold of a split: rows with the fields of :data:`AUDIT_FIELDS`.

    Args:
        records: The labelled images, before tiling and augmentation.
        num_folds: K of the split.
        split: The split kind of the DataModule.
        seed: The split seed of the DataModule.
        candidates: Images template-matched per query.
        threshold: Correlation that counts as a copy.
    """
    signatures = [signature(read_image(r.path)) for r in records]
    labels, groups = [r.label for r in records], [r.group for r in records]
    rows: list[dict] = []
    for fold in range(num_folds):
        train, val = fold_indices(labels, groups, num_folds, fold, split, seed)
        try:
            check_no_group_leak([groups[i] for i in train], [groups[i] for i in val])
        except GroupLeakError as error:
            rows.append({"fold": fold, "kind": "group", "train": str(error), "validation": "", "correlation": ""})
        pairs = find_duplicates([signatures[i] for i in train], [signatures[i] for i in val], candidates, threshold)
        for i, j, score in pairs:
            rows.append(
                {
                    "fold": fold,
                    "kind": "copy",
                    "train": str(records[train[i]].path),
                    "validation": str(records[val[j]].path),
                    "correlation": f"{score:.3f}",
                }
            )
    return rows
