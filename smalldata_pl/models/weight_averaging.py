"""Weight-space averaging of a fine-tuned network with the network it started from (WiSE-FT).

A fine-tune on one or two real images fits them and forgets part of what its start knew. When the start is already a
whole segmenter (synthetic pre-training, a distilled student), averaging the two weight by weight keeps some of that
knowledge at no extra training (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022). A fine-tune
stays near its start, so the two can be averaged; a network it did not start from is elsewhere, and averaging with it
gives no working network.
"""

from collections.abc import Mapping
from pathlib import Path

import torch

from smalldata_pl.io.images import atomic_path
from smalldata_pl.models.checkpoint_files import read_checkpoint

KEEP_BN_OVERLAY = "configs/overlays/keep_pretrained_bn.yaml"


class MismatchedLayers(ValueError):
    """The two networks differ in their tensors' names or shapes (``keys``: those tensors)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"the two networks differ in {len(keys)} tensors, e.g. {keys[0]}")
        self.keys = keys


class MovedStatistics(ValueError):
    """The fine-tune re-estimated BatchNorm running statistics (``keys``: those statistics)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"the two networks differ in {len(keys)} BatchNorm statistics, e.g. {keys[0]}")
        self.keys = keys


def is_statistic(key: str) -> bool:
    """Whether ``key`` names a BatchNorm running statistic (``running_mean``, ``running_var``)."""
    return "running_" in key


def average_weights(
    start: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * tuned`` for every learnt weight; everything else is ``tuned``'s.

    BatchNorm running statistics are not averaged: they must be equal in both (a fine-tune that kept its start's
    statistics), since averaged weights would otherwise meet statistics estimated for neither network.

    Args:
        start: State dict of the network the fine-tune started from.
        tuned: State dict of the fine-tuned network.
        alpha: Weight of the fine-tune, in (0, 1]; 1 returns the fine-tune.

    Raises:
        ValueError: If ``alpha`` is out of range.
        MismatchedLayers: If the two differ in tensors or shapes.
        MovedStatistics: If their BatchNorm statistics differ.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha is the fine-tune's weight, in (0, 1]; got {alpha}")
    if mismatch := sorted(set(start) ^ set(tuned)) or [k for k in tuned if start[k].shape != tuned[k].shape]:
        raise MismatchedLayers(mismatch)
    if moved := [k for k in tuned if is_statistic(k) and not torch.equal(tuned[k], start[k])]:
        raise MovedStatistics(moved)
    return {
        # Statistics are equal (checked); integer buffers such as num_batches_tracked are the fine-tune's.
        key: torch.lerp(start[key].to(value.dtype), value, alpha)
        if value.is_floating_point() and not is_statistic(key)
        else value
        for key, value in tuned.items()
    }


def average_checkpoints(start: Path, tuned: Path, alpha: float, out: Path) -> Path:
    """Write ``tuned`` with its weights averaged with ``start``'s (:func:`average_weights`) to ``out``.

    Everything else in ``out`` is ``tuned``'s (hyperparameters, preprocessing), so ``smalldata apply``,
    ``validate`` and ``test`` take it as they take ``tuned``.

    Raises:
        ValueError: Naming both files and the fix, if the two cannot be averaged.
    """
    tuned_checkpoint = read_checkpoint(tuned)
    start_checkpoint = read_checkpoint(start)
    try:
        state = average_weights(
            start_checkpoint.get("state_dict", start_checkpoint), tuned_checkpoint["state_dict"], alpha
        )
    except MismatchedLayers as error:
        raise ValueError(
            f"cannot average {tuned} with {start}: they differ in {len(error.keys)} tensors (e.g. {error.keys[0]}); "
            f"average a fine-tune with the checkpoint it started from (--model.init_args.init_weights)"
        ) from error
    except MovedStatistics as error:
        raise ValueError(
            f"cannot average {tuned} with {start}: the fine-tune re-estimated {len(error.keys)} BatchNorm statistics "
            f"(e.g. {error.keys[0]}), which averaged weights would not match; fine-tune from {start} again with "
            f"-c {KEEP_BN_OVERLAY} (statistics kept), then average"
        ) from error
    with atomic_path(out) as temporary:
        torch.save({**tuned_checkpoint, "state_dict": state}, temporary)
    return out
