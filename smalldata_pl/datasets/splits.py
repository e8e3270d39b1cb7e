"""Cross-validation folds made on source samples with scikit-learn's splitters, and the group-leak check."""

from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

SplitKind = Literal["stratified", "group", "stratified_group"]


class GroupLeakError(ValueError):
    """A physical specimen or micrograph has samples on both sides of a split."""


def fold_indices(
    labels: Sequence[int],
    groups: Sequence[str],
    num_folds: int,
    fold: int,
    split: SplitKind = "stratified_group",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices of fold ``fold`` out of ``num_folds``.

    Args:
        labels: Class index per source sample.
        groups: Group id per source sample (specimen, field of view, source micrograph of a tile).
        num_folds: Number of folds (K).
        fold: Which fold is the validation set, ``0 <= fold < num_folds``.
        split: ``stratified`` (class balance, ignores groups: only for independent images),
            ``group`` (no group on both sides) or ``stratified_group`` (both; the default).
        seed: Shuffling seed of the splitter.

    Raises:
        ValueError: If the fold index is out of range or a class has too few groups for K folds.
        GroupLeakError: If a group ends up on both sides (only possible with ``stratified``).
    """
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold={fold} is outside 0..{num_folds - 1} for num_folds={num_folds}")
    y, g = np.asarray(labels), np.asarray(groups)
    if split in ("group", "stratified_group"):
        _check_groups_per_class(y, g, num_folds, stratified=split == "stratified_group")
    splitters = {
        "stratified": StratifiedKFold(num_folds, shuffle=True, random_state=seed),
        "group": GroupKFold(num_folds, shuffle=True, random_state=seed),
        "stratified_group": StratifiedGroupKFold(num_folds, shuffle=True, random_state=seed),
    }
    if split not in splitters:
        raise ValueError(f"unknown split {split!r}; choose stratified, group or stratified_group")
    train, val = list(splitters[split].split(np.zeros(len(y)), y, g))[fold]
    if split != "stratified":
        check_no_group_leak(g[train], g[val])
    return train, val


def _check_groups_per_class(labels: np.ndarray, groups: np.ndarray, num_folds: int, stratified: bool) -> None:
    total = len(np.unique(groups))
    if total < num_folds:
        raise ValueError(f"only {total} distinct groups for {num_folds} folds; lower num_folds or add groups")
    if not stratified:
        return
    for label in np.unique(labels):
        count = len(np.unique(groups[labels == label]))
        if count < num_folds:
            raise ValueError(
                f"class {label} has only {count} group(s), fewer than num_folds={num_folds}: some validation folds "
                "would miss the class. Lower num_folds, add specimens of this class, or use split='group'."
            )


def check_no_group_leak(train_groups: Sequence[str], val_groups: Sequence[str], what: str = "validation") -> None:
    """Raise :class:`GroupLeakError` if any group appears in both training and ``what`` samples."""
    shared = sorted(set(map(str, train_groups)) & set(map(str, val_groups)))
    if shared:
        raise GroupLeakError(
            f"{len(shared)} group(s) appear in both training and {what} data (e.g. {shared[:5]}): the same specimen "
            "would be scored as unseen. Split by group (split='group' or 'stratified_group')."
        )
