"""Segmentation losses for rare classes: weighted cross-entropy and soft Dice."""

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient; every class counts equally, however rare."""
    probabilities = logits.softmax(dim=1)
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probabilities.dtype)
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    union = probabilities.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2 * intersection + eps) / (union + eps)).mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, kind: str = "ce+dice", class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``ce``, ``dice`` or ``ce+dice`` (the sum) for ``[B, K, H, W]`` logits and ``[B, H, W]`` targets."""
    if kind not in ("ce", "dice", "ce+dice"):
        raise ValueError(f"unknown segmentation loss {kind!r}; choose ce, dice or ce+dice")
    loss = logits.new_zeros(())
    if "ce" in kind:
        loss = loss + F.cross_entropy(logits, target, weight=class_weights)
    if "dice" in kind:
        loss = loss + soft_dice_loss(logits, target)
    return loss


def boundary_f1(
    prediction: torch.Tensor, target: torch.Tensor, boundary_class: int = 1, tolerance: int = 2
) -> torch.Tensor:
    """F1 of boundary pixels, a predicted pixel counting as correct within ``tolerance`` px of a true one."""
    pred = (prediction == boundary_class).float()[:, None]
    true = (target == boundary_class).float()[:, None]
    size = 2 * tolerance + 1
    near_true = F.max_pool2d(true, size, stride=1, padding=tolerance)
    near_pred = F.max_pool2d(pred, size, stride=1, padding=tolerance)
    precision = (pred * near_true).sum() / pred.sum().clamp(min=1)
    recall = (true * near_pred).sum() / true.sum().clamp(min=1)
    return 2 * precision * recall / (precision + recall).clamp(min=1e-8)
