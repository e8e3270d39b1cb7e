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


def layer_mismatch(start: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor]) -> list[str]:
    """Tensors that one network has and the other lacks, or has in another shape."""
    return sorted(set(start) ^ set(tuned)) or [k for k in tuned if start[k].shape != tuned[k].shape]


def moved_statistics(start: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor]) -> list[str]:
    """BatchNorm running statistics that the fine-tune changed."""
    return [k for k in tuned if "running_" in k and not torch.equal(tuned[k], start[k])]


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
        ValueError: If ``alpha`` is out of range, the two differ in layers or shapes, or their statistics differ.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha is the fine-tune's weight, in (0, 1]; got {alpha}")
    if mismatch := layer_mismatch(start, tuned):
        raise ValueError(f"the two networks differ in {len(mismatch)} tensors, e.g. {mismatch[0]}")
    if moved := moved_statistics(start, tuned):
        raise ValueError(f"the two networks differ in {len(moved)} BatchNorm statistics, e.g. {moved[0]}")
    return {
        # Statistics are equal (checked); integer buffers such as num_batches_tracked are the fine-tune's.
        key: torch.lerp(start[key].to(value.dtype), value, alpha)
        if value.is_floating_point() and "running_" not in key
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
    start_state = start_checkpoint.get("state_dict", start_checkpoint)
    tuned_state = tuned_checkpoint["state_dict"]
    if mismatch := layer_mismatch(start_state, tuned_state):
        raise ValueError(
            f"cannot average {tuned} with {start}: they differ in {len(mismatch)} tensors (e.g. {mismatch[0]}); "
            f"average a fine-tune with the checkpoint it started from (--model.init_args.init_weights)"
        )
    if moved := moved_statistics(start_state, tuned_state):
        raise ValueError(
            f"cannot average {tuned} with {start}: the fine-tune re-estimated {len(moved)} BatchNorm statistics "
            f"(e.g. {moved[0]}), which averaged weights would not match; fine-tune from {start} again with "
            f"-c {KEEP_BN_OVERLAY} (statistics kept), then average"
        )
    state = average_weights(start_state, tuned_state, alpha)
    with atomic_path(out) as temporary:
        torch.save({**tuned_checkpoint, "state_dict": state}, temporary)
    return out
