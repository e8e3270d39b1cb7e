"""Segmentation losses for rare classes: weighted cross-entropy and soft Dice, both blind to unlabelled pixels."""

import torch
import torch.nn.functional as F

from smalldata_pl.transforms.pipeline import IGNORE_INDEX


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient; every class counts equally, however rare.

    Pixels whose target is ``ignore_index`` add nothing to either the intersection or the union.
    """
    valid = (target != ignore_index)[:, None]
    probabilities = logits.softmax(dim=1) * valid
    one_hot = F.one_hot(target.masked_fill(~valid[:, 0], 0), logits.shape[1]).permute(0, 3, 1, 2)
    one_hot = one_hot.to(probabilities.dtype) * valid
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    union = probabilities.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2 * intersection + eps) / (union + eps)).mean()


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Cross-entropy averaged over the labelled pixels (weighted like ``F.cross_entropy``); 0 if there are none.

    ``F.cross_entropy`` returns NaN for a batch whose pixels are all ``ignore_index``.
    """
    valid = target != ignore_index
    total = F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore_index, reduction="sum")
    if class_weights is None:
        count = valid.sum().to(total.dtype)
    else:
        count = (class_weights[target.masked_fill(~valid, 0)] * valid).sum()
    return total / count.clamp(min=torch.finfo(total.dtype).tiny)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    kind: str = "ce+dice",
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """``ce``, ``dice`` or ``ce+dice`` (the sum) for ``[B, K, H, W]`` logits and ``[B, H, W]`` targets.

    Pixels whose target is ``ignore_index`` (crop padding) are left out, so the loss equals the loss of the
    labelled pixels alone; a batch without any labelled pixel gives 0, not NaN.
    """
    if kind not in ("ce", "dice", "ce+dice"):
        raise ValueError(f"unknown segmentation loss {kind!r}; choose ce, dice or ce+dice")
    loss = logits.new_zeros(())
    if "ce" in kind:
        loss = loss + masked_cross_entropy(logits, target, class_weights, ignore_index)
    if "dice" in kind:
        loss = loss + soft_dice_loss(logits, target, ignore_index=ignore_index)
    return loss
