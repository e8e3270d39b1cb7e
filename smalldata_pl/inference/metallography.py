"""Quantitative metallography of label masks: grains, Heyn intercepts, ASTM E112 G, phase fractions, particles.

Numpy/scipy/scikit-image on arrays, so benchmarks and notebooks can score masks from any source; the match counts
come from the segmenter's own metric, so a benchmark and ``val/boundary_f1`` agree. The boundary score: both masks
thinned to one-pixel skeletons, precision the share of predicted skeleton pixels within ``tolerance`` px of a true
one, recall the converse, counts summed over images; grain size the Heyn mean linear intercept on every
``line_spacing``-th row and column of the skeleton.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from skimage.measure import label, regionprops
from skimage.morphology import skeletonize
from skimage.segmentation import expand_labels

from smalldata_pl.models.metrics import skeleton_matches

LINE_SPACING = 8
TOLERANCE = 3.0


@dataclass(frozen=True)
class Intercepts:
    """Heyn test lines laid over a boundary skeleton.

    Args:
        crossings: Boundary crossings summed over all test lines (a run of skeleton pixels is one crossing).
        line_length: Total length of the test lines in pixels.
        chords: Distances in pixels between consecutive crossings on a line (the individual intercepts; the
            pieces before the first and after the last crossing of a line are cut by the image edge and left out).
    """

    crossings: int
    line_length: int
    chords: np.ndarray

    @property
    def mean(self) -> float:
        """Mean linear intercept in pixels (line length over crossings); NaN when no line crosses a boundary."""
        return self.line_length / self.crossings if self.crossings else math.nan


@dataclass(frozen=True)
class GrainMeasurement:
    """Grain statistics of one boundary mask.

    Args:
        grains: Grains found (4-connected regions enclosed by the skeleton), border grains included.
        border_grains: Grains touching the image edge; they are cut, so :attr:`areas` leaves them out.
        areas: Areas in pixels of the grains inside the image (each skeleton pixel given to its nearest grain).
        intercepts: The Heyn test-line result.
    """

    grains: int
    border_grains: int
    areas: np.ndarray
    intercepts: Intercepts

    @property
    def mean_area(self) -> float:
        """Mean area in pixels of the grains that do not touch the edge; NaN when every grain does."""
        return float(self.areas.mean()) if self.areas.size else math.nan


@dataclass(frozen=True)
class PhaseMeasurement:
    """Area fractions and particles of one phase mask.

    Args:
        fractions: Share of the image's pixels in each class.
        particles: One row per particle (connected region) of every class but the matrix: ``class``, ``area``
            (px), ``equivalent_diameter`` (px, the diameter of the disc of the same area) and ``border`` (it
            touches the image edge, so its size is cut).
    """

    fractions: np.ndarray
    particles: list[dict[str, float | int | bool]] = field(default_factory=list)


def boundary_skeleton(boundaries: np.ndarray) -> np.ndarray:
    """One-pixel-wide (8-connected) skeleton of a boundary mask; any nonzero pixel is boundary."""
    return skeletonize(np.asarray(boundaries).astype(bool))


def drop_boundary_fragments(boundaries: np.ndarray, min_length: int) -> np.ndarray:
    """The boundary mask without its isolated short pieces: 8-connected parts whose skeleton is under ``min_length`` px.

    Grain boundaries form a connected network; a short piece standing alone (an etch pit, a scratch segment, a
    spot of noise) closes no grain, yet adds false boundary length and false Heyn crossings. Pieces touching the
    image edge are judged by their length inside the image like the others.

    Example:
        >>> mask = np.zeros((32, 32), dtype=bool)
        >>> mask[:, 8] = True  # a boundary across the image
        >>> mask[20, 20:23] = True  # a 3 px speck
        >>> int(drop_boundary_fragments(mask, 5).sum())
        32

    Args:
        boundaries: Boundary mask; any nonzero pixel is boundary.
        min_length: Pieces with fewer skeleton pixels are removed; 0 keeps every piece.
    """
    mask = np.asarray(boundaries).astype(bool)
    if min_length <= 0:
        return mask
    pieces = label(mask, connectivity=2)
    length = np.bincount(pieces[boundary_skeleton(mask)], minlength=int(pieces.max()) + 1)
    keep = length >= min_length
    keep[0] = False
    return keep[pieces]


def connected_regions(mask: np.ndarray, min_area: int = 0) -> np.ndarray:
    """The 4-connected regions of ``mask`` labelled ``1..N``, those of fewer than ``min_area`` pixels dropped (0)."""
    regions = label(mask, connectivity=1)
    if min_area > 0:
        small = np.bincount(regions.ravel()) < min_area
        small[0] = False
        regions = label(np.where(small[regions], 0, regions) > 0, connectivity=1)
    return regions


def grain_labels(boundaries: np.ndarray, min_area: int = 0) -> np.ndarray:
    """Grains as labels ``1..N`` covering the whole image; any nonzero pixel of ``boundaries`` is boundary.

    The interiors are the 4-connected regions free of boundary (an 8-connected boundary line separates only
    4-connected regions); the boundary pixels then go to their nearest interior, which splits a wide boundary
    down its middle like its skeleton does. Labelling the mask rather than its skeleton keeps grains cut by the
    image edge apart: thinning shortens a wide boundary where it leaves the image and would merge them.

    Args:
        boundaries: Boundary mask.
        min_area: Interiors of fewer pixels are taken for holes in a wide boundary (annotation or prediction
            noise) and given to the grains around them.
    """
    boundaries = np.asarray(boundaries).astype(bool)
    interiors = connected_regions(~boundaries, min_area)
    return expand_labels(interiors, distance=sum(boundaries.shape))  # far enough to fill every boundary pixel


def heyn_intercepts(skeleton: np.ndarray, line_spacing: int = LINE_SPACING) -> Intercepts:
    """Lay test lines on every ``line_spacing``-th row and column (from the first) and count crossings.

    Each run of consecutive skeleton pixels along a line is one crossing, so a boundary met at a slant (two or
    three pixels wide along the line) counts once.
    """
    lines = [*skeleton[::line_spacing], *skeleton.T[::line_spacing]]
    crossings, chords = 0, []
    for line in lines:
        padded = np.concatenate([[False], line, [False]]).astype(np.int8)
        starts = np.flatnonzero(np.diff(padded) == 1)
        ends = np.flatnonzero(np.diff(padded) == -1)
        crossings += starts.size
        centres = (starts + ends - 1) / 2.0
        chords.append(np.diff(centres))
    length = sum(line.size for line in lines)
    return Intercepts(crossings, length, np.concatenate(chords) if chords else np.zeros(0))


def measure_grains(
    boundaries: np.ndarray, line_spacing: int = LINE_SPACING, min_grain_area: int = 0, min_fragment: int = 0
) -> GrainMeasurement:
    """Grain count, areas of the grains inside the image and Heyn intercepts of a boundary mask (nonzero = boundary).

    Isolated boundary pieces shorter than ``min_fragment`` px are dropped first (:func:`drop_boundary_fragments`);
    grains come from the mask (:func:`grain_labels`, interiors under ``min_grain_area`` px merged into their
    neighbours), intercepts from its skeleton (:func:`heyn_intercepts`).

    Example:
        >>> grid = np.zeros((64, 64), dtype=bool)
        >>> grid[2::16], grid[:, 2::16] = True, True  # squares of side 16, cut by the edge around them
        >>> m = measure_grains(grid)
        >>> m.grains, m.border_grains, m.mean_area, m.intercepts.mean
        (25, 16, 256.0, 16.0)
    """
    boundaries = drop_boundary_fragments(boundaries, min_fragment)
    grains = grain_labels(boundaries, min_grain_area)
    edge = np.concatenate([grains[0], grains[-1], grains[:, 0], grains[:, -1]])
    border = np.unique(edge[edge > 0])
    areas = np.bincount(grains.ravel())[1:]
    inside = np.setdiff1d(np.arange(1, areas.size + 1), border)
    return GrainMeasurement(
        grains=int(areas.size),
        border_grains=int(border.size),
        areas=areas[inside - 1].astype(np.float64),
        intercepts=heyn_intercepts(boundary_skeleton(boundaries), line_spacing),
    )


def astm_grain_size_number(mean_intercept_mm: float) -> float:
    """ASTM E112 grain-size number G from the mean lineal intercept in millimetres.

    The intercept-procedure relation of ASTM E112-13 (Standard Test Methods for Determining Average Grain Size):
    G = -6.643856 * log10(l) - 3.288 with l the mean lineal intercept in mm; G = 0 at l = 0.320 mm, and each step
    of G shrinks l by a factor of sqrt(2).
    """
    if not mean_intercept_mm > 0:  # also NaN: no boundary crossed, no grain size
        return math.nan
    return -6.643856 * math.log10(mean_intercept_mm) - 3.288


def measure_phases(mask: np.ndarray, num_classes: int, matrix_class: int = 0) -> PhaseMeasurement:
    """Area fraction of every class and the particles (8-connected regions) of every class but the matrix.

    Raises:
        ValueError: If the mask holds a value outside ``0..num_classes - 1``.
    """
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() >= num_classes):
        raise ValueError(f"mask holds values outside the {num_classes} classes 0..{num_classes - 1}")
    fractions = np.bincount(mask.ravel(), minlength=num_classes) / max(mask.size, 1)
    particles: list[dict[str, float | int | bool]] = []
    height, width = mask.shape
    for index in np.unique(mask).tolist():  # the classes present: a 0/255 mask labels twice, not 255 times
        if index == matrix_class:
            continue
        for region in regionprops(label(mask == index)):
            top, left, bottom, right = region.bbox
            particles.append(
                {
                    "class": index,
                    "area": int(region.area),
                    "equivalent_diameter": float(region.equivalent_diameter_area),
                    "border": bool(top == 0 or left == 0 or bottom == height or right == width),
                }
            )
    return PhaseMeasurement(fractions.astype(np.float64), particles)


@dataclass(frozen=True)
class BoundaryScore:
    """Skeleton boundary precision, recall and F1 from counts summed over images, and the grain-size error.

    Args:
        precision: Matched predicted skeleton pixels over all predicted skeleton pixels (0 without any).
        recall: Matched true skeleton pixels over all true skeleton pixels (0 without any).
        f1: Harmonic mean of the two.
        counts: Summed ``(matched predicted, unmatched predicted, matched true, missed true)`` pixels.
        intercept_errors: Per image ``|l_pred - l_true| / l_true`` of the Heyn mean intercepts; ``inf`` when the
            prediction crosses no test line, NaN when the truth does not (no true grain size to compare).
        median_intercept_error: Median over the images with a true grain size; NaN when none has one.
    """

    precision: float
    recall: float
    f1: float
    counts: tuple[int, int, int, int]
    intercept_errors: np.ndarray
    median_intercept_error: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (per-image errors as a list, ``inf`` and NaN as ``None``)."""
        finite = [float(e) if math.isfinite(e) else None for e in self.intercept_errors]
        median = self.median_intercept_error
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "counts": list(self.counts),
            "median_intercept_error": median if math.isfinite(median) else None,
            "intercept_errors": finite,
        }


def score_boundaries(
    predicted_masks: Sequence[np.ndarray],
    true_masks: Sequence[np.ndarray],
    tolerance: float = TOLERANCE,
    line_spacing: int = LINE_SPACING,
) -> BoundaryScore:
    """Score predicted boundary masks against true ones (nonzero = boundary): skeleton F1 and grain-size error.

    Both masks of an image are skeletonised; the four match counts are summed over all images before
    precision, recall and F1 are taken, so large images weigh more than a mean of per-image F1s would let them.

    Example:
        >>> truth = np.zeros((32, 32), dtype=bool)
        >>> truth[:, 10:14] = True
        >>> score_boundaries([np.roll(truth, 2, axis=1)], [truth]).f1
        1.0

    Raises:
        ValueError: If the two lists differ in length or a pair differs in shape.
    """
    if len(predicted_masks) != len(true_masks):
        raise ValueError(f"{len(predicted_masks)} predicted masks but {len(true_masks)} true masks")
    counts = np.zeros(4, dtype=np.int64)
    errors = []
    for index, (predicted, true) in enumerate(zip(predicted_masks, true_masks, strict=True)):
        if np.shape(predicted) != np.shape(true):
            raise ValueError(
                f"pair {index}: predicted mask {np.shape(predicted)} and true mask {np.shape(true)} differ in shape"
            )
        predicted_skeleton, true_skeleton = boundary_skeleton(predicted), boundary_skeleton(true)
        counts += skeleton_matches(predicted_skeleton, true_skeleton, tolerance)
        true_intercept = heyn_intercepts(true_skeleton, line_spacing).mean
        predicted_intercept = heyn_intercepts(predicted_skeleton, line_spacing).mean
        if math.isnan(true_intercept):
            errors.append(math.nan)
        elif math.isnan(predicted_intercept):
            errors.append(math.inf)
        else:
            errors.append(abs(predicted_intercept - true_intercept) / true_intercept)
    matched_predicted, unmatched, matched_true, missed = (int(c) for c in counts)
    precision = matched_predicted / max(matched_predicted + unmatched, 1)
    recall = matched_true / max(matched_true + missed, 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_image = np.asarray(errors, dtype=np.float64)
    scored = per_image[~np.isnan(per_image)]
    return BoundaryScore(
        precision=precision,
        recall=recall,
        f1=f1,
        counts=(matched_predicted, unmatched, matched_true, missed),
        intercept_errors=per_image,
        median_intercept_error=float(np.median(scored)) if scored.size else math.nan,
    )
