"""Segmentation metrics that sum counts over the epoch (and over DDP ranks) and divide once at the end."""

from typing import Any

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from skimage.morphology import skeletonize
from torchmetrics import Metric

from smalldata_pl.transforms.pipeline import IGNORE_INDEX


class ClassIoU(Metric):
    """Per-class intersection over union from pixel counts summed over the epoch.

    A class absent from both prediction and truth has no union: its IoU is NaN, and :meth:`mean` leaves it out
    instead of counting it as 0 or 1. Pixels whose target is ``ignore_index`` are not counted.

    Example:
        >>> iou = ClassIoU(3)
        >>> iou.update(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, 1]]))
        >>> iou.compute()
        tensor([0.5000, 0.6667,    nan])

    Args:
        num_classes: Number of classes.
        ignore_index: Target value of unlabelled pixels.
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    intersection: torch.Tensor
    union: torch.Tensor

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("intersection", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("union", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted class indices and target masks of the same shape."""
        if preds.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(preds.shape)} differs from target shape {tuple(target.shape)}")
        valid = target != self.ignore_index
        pred, true = preds[valid].long(), target[valid].long()
        if true.numel() and (true.min() < 0 or true.max() >= self.num_classes):
            raise ValueError(f"target holds values outside 0..{self.num_classes - 1} and ignore_index")
        k = self.num_classes
        intersection = torch.bincount(true[pred == true], minlength=k)
        self.intersection += intersection
        self.union += torch.bincount(pred, minlength=k) + torch.bincount(true, minlength=k) - intersection

    def compute(self) -> torch.Tensor:
        """IoU of each class; NaN for a class with no predicted and no true pixel."""
        iou = self.intersection.double() / self.union.double()  # 0/0 = NaN for absent classes
        return iou.float()

    @staticmethod
    def mean(per_class: torch.Tensor) -> torch.Tensor:
        """Mean IoU over the classes present in prediction or truth (NaN entries left out)."""
        return per_class.nanmean()


class BoundaryF1(Metric):
    """Boundary F1 with a pixel tolerance, from counts summed over every image of the epoch.

    The masks of ``boundary_class`` in prediction and truth are thinned to one-pixel skeletons. Precision is the
    share of predicted skeleton pixels within ``tolerance`` px (Euclidean) of a true skeleton pixel; recall is
    the share of true skeleton pixels within ``tolerance`` px of a predicted one. The four counts (matched and
    unmatched predicted pixels, matched and missed true pixels) are summed over all images and DDP ranks, and F1
    is computed once from the sums, so it is not a mean of per-batch F1s. Pixels whose target is
    ``ignore_index`` are removed from the prediction. Without any predicted (true) pixel precision (recall) is 0.

    Example:
        >>> truth = torch.zeros(1, 16, 16, dtype=torch.long)
        >>> truth[:, :, 8] = 1
        >>> metric = BoundaryF1(boundary_class=1, tolerance=3)
        >>> metric.update(torch.roll(truth, 2, dims=2), truth)
        >>> metric.compute()
        tensor(1.)

    Args:
        boundary_class: Class index of the boundary pixels.
        tolerance: Largest distance in pixels at which a boundary pixel still counts as found.
        ignore_index: Target value of unlabelled pixels.
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    tp_precision: torch.Tensor
    fp: torch.Tensor
    tp_recall: torch.Tensor
    fn: torch.Tensor

    def __init__(
        self, boundary_class: int = 1, tolerance: float = 3, ignore_index: int = IGNORE_INDEX, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.boundary_class, self.tolerance, self.ignore_index = boundary_class, tolerance, ignore_index
        for name in ("tp_precision", "fp", "tp_recall", "fn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add predicted class indices and target masks, ``[B, H, W]`` or ``[H, W]``."""
        if preds.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(preds.shape)} differs from target shape {tuple(target.shape)}")
        valid = target != self.ignore_index
        pred = ((preds == self.boundary_class) & valid).reshape(-1, *preds.shape[-2:]).cpu().numpy()
        true = (target == self.boundary_class).reshape(-1, *target.shape[-2:]).cpu().numpy()
        counts = np.zeros(4, dtype=np.int64)
        for p, t in zip(pred, true, strict=True):
            counts += boundary_counts(p, t, self.tolerance)
        self.tp_precision += int(counts[0])
        self.fp += int(counts[1])
        self.tp_recall += int(counts[2])
        self.fn += int(counts[3])

    def compute(self) -> torch.Tensor:
        """F1 of the summed precision and recall counts."""
        precision = self.tp_precision / (self.tp_precision + self.fp).clamp(min=1)
        recall = self.tp_recall / (self.tp_recall + self.fn).clamp(min=1)
        return (2 * precision * recall / (precision + recall).clamp(min=1e-12)).float()


def boundary_counts(prediction: np.ndarray, truth: np.ndarray, tolerance: float) -> tuple[int, int, int, int]:
    """Matched and unmatched predicted skeleton pixels, matched and missed true ones, for two bool masks."""
    return skeleton_matches(skeletonize(prediction), skeletonize(truth), tolerance)


def skeleton_matches(predicted: np.ndarray, true: np.ndarray, tolerance: float) -> tuple[int, int, int, int]:
    """Matched and unmatched predicted skeleton pixels, matched and missed true ones, of two skeletons."""
    near_true, near_predicted = _within(true, tolerance), _within(predicted, tolerance)
    matched_predicted = int((predicted & near_true).sum())
    matched_true = int((true & near_predicted).sum())
    return matched_predicted, int(predicted.sum()) - matched_predicted, matched_true, int(true.sum()) - matched_true


def _within(skeleton: np.ndarray, tolerance: float) -> np.ndarray:
    # Pixels at most `tolerance` px from a skeleton pixel; none without one (the transform needs a zero).
    if not skeleton.any():
        return np.zeros_like(skeleton, dtype=bool)
    return distance_transform_edt(~skeleton) <= tolerance
