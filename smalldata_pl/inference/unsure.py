"""Which pixels of a segmentation its model is unsure of, so that pseudo-labels can leave them unlabelled.

Two rules. A fixed probability (``unsure_below=0.9``) marks every pixel whose written class the model gives less;
with the soft probabilities of an ensemble averaged over views and zooms that can be most of the image, texture
in grain interiors included. ``"auto"`` needs no threshold: for each class of each image it marks as many of the
class's least sure pixels as the model itself expects to be wrong there, the sum of one minus the probability of
the class over its pixels (the count that confident learning prunes, Northcutt et al., JAIR 2021, here per image
and with the model's probabilities as its estimate). A calibrated model's wrong pixels are likeliest among its
least sure ones, so those are left out, and no more of them than it expects.
"""

from typing import Literal

import numpy as np

UnsureBelow = float | Literal["auto"]


def check_unsure_below(unsure_below: UnsureBelow) -> UnsureBelow:
    """``unsure_below`` if it is a probability in (0, 1) or ``"auto"``.

    Raises:
        ValueError: Otherwise, naming both choices.
    """
    if unsure_below != "auto" and not (isinstance(unsure_below, int | float) and 0 < unsure_below < 1):
        raise ValueError(
            "unsure_below marks a segmenter's pixels below a probability between 0 and 1, or with 'auto' as many "
            f"as it expects to be wrong; got {unsure_below!r}"
        )
    return unsure_below


def unsure_pixels(probabilities: np.ndarray, mask: np.ndarray, unsure_below: UnsureBelow) -> np.ndarray:
    """``True`` where the model is unsure of the class ``mask`` gives a pixel.

    Args:
        probabilities: Class probabilities ``[K, H, W]``.
        mask: The written class of each pixel ``[H, W]`` (after any redrawing, so a pixel a redrawn boundary took
            from the model's decision has a low probability for its class).
        unsure_below: A probability: pixels whose class has less are unsure. ``"auto"``: per class, the
            ``round(sum(1 - p))`` pixels of the class with the lowest ``p``, the number the model expects to be
            wrong (ties broken in reading order).

    Returns:
        Boolean ``[H, W]``.
    """
    confidence = np.take_along_axis(probabilities, mask[None].astype(np.int64), axis=0)[0]
    if unsure_below != "auto":
        return confidence < unsure_below
    labels, confidence = mask.ravel(), confidence.ravel()
    unsure = np.zeros(labels.size, bool)
    for label in np.unique(labels):
        pixels = np.flatnonzero(labels == label)
        expected_wrong = round(float((1.0 - confidence[pixels].astype(np.float64)).sum()))
        least_sure = np.argsort(confidence[pixels], kind="stable")[:expected_wrong]
        unsure[pixels[least_sure]] = True
    return unsure.reshape(mask.shape)
