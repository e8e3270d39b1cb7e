"""From a grain-boundary probability map to a boundary mask: the micrograph's own edges, and closed grains.

A network trained on synthetic grains has learnt what a boundary looks like, but on a real specimen it is
unsure of faint boundaries and places the sure ones as its training images did. The micrograph's own colour
gradient is a second, independent witness of where this image's edges are: :func:`fuse_edges` mixes the two,
either in a fixed share or (``weight="auto"``, :func:`calibrated_edges`) by Bayes' rule once the edges have been
put into the network's own units on that very image, so no labelled image sets the share.
Metallography wants closed grains, while a thresholded map leaves gaps (two grains counted as one) and spurs
(boundary pieces that close nothing): :func:`close_boundaries` grows grains from their sure interiors by
watershed and keeps a dividing line only where the map backs it.
"""

from typing import Literal

import numpy as np
import torch
from scipy.ndimage import binary_dilation, distance_transform_edt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, logit
from skimage.measure import label
from skimage.morphology import h_maxima, skeletonize
from skimage.segmentation import watershed
from sklearn.isotonic import IsotonicRegression

from smalldata_pl.inference.metallography import connected_regions
from smalldata_pl.models.edge_input import EDGE_SIGMA, EdgeStrength

# Probabilities enter Bayes' rule clipped to [EPS, 1 - EPS]: neither witness's certainty can veto the other outright.
EPS = 1e-3
CALIBRATION_PIXELS = 2**18  # at most this many pixels fit the edge calibration (a regular subsample of larger maps)

EdgeWeight = float | Literal["auto"]


def edge_strength(image: np.ndarray, sigma: float = EDGE_SIGMA) -> np.ndarray:
    """The image's gradient magnitude scaled to [0, 1] so that the image's own Otsu threshold of it lands on 0.5.

    Each channel is smoothed and Sobel-filtered and the magnitudes are added in quadrature, so a boundary between
    two grains of equal brightness but different etch colour counts as an edge. Scaling by the Otsu threshold
    makes the map's 0.5 mean "edge" on every image, whatever its contrast, so that it can be mixed with a
    probability. It is the map an ``edge_input`` segmenter computes in its graph (:class:`EdgeStrength`).

    Example:
        >>> image = np.zeros((32, 32, 3))
        >>> image[:, 16:, 0], image[:, :16, 2] = 1.0, 1.0  # red beside blue: one brightness
        >>> strength = edge_strength(image)
        >>> bool(strength[:, 15:17].min() > 0.5), bool(strength[:, :8].max() < 0.5)
        (True, True)

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` in [0, 1].
        sigma: Gaussian smoothing in pixels before the gradient (noise and etch pits are smaller).

    Returns:
        ``(H, W)`` float32; all zeros for an image without any gradient.
    """
    image = np.asarray(image, dtype=np.float32)
    channels = image[..., None] if image.ndim == 2 else image
    with torch.no_grad():
        strength = EdgeStrength(sigma)(torch.from_numpy(np.ascontiguousarray(channels.transpose(2, 0, 1)))[None])
    return strength[0, 0].numpy()


def fuse_edges(probability: np.ndarray, image: np.ndarray, weight: EdgeWeight, sigma: float = EDGE_SIGMA) -> np.ndarray:
    """The network's boundary probability backed by the image's own edges.

    A number mixes them in a fixed share, ``(1 - weight) * probability + weight * edge_strength(image)``.
    ``"auto"`` needs no share: the edges are first calibrated against the network on this image
    (:func:`calibrated_edges`), then the two witnesses are combined by Bayes' rule as if independent given the
    truth, ``logit(fused) = logit(probability) + logit(calibrated) - logit(prior)``, with the network's mean
    boundary probability on the image as the prior. Edges that do not follow the network's boundaries calibrate to
    the prior and leave the map as it is; edges that do raise a faint boundary the network half saw and lower a
    spot it half imagined. Texture edges as strong as the boundaries (heavy scratches, mottle) get some of the
    boundaries' weight: the calibration sees only edge strength.

    Example:
        >>> image = np.zeros((32, 32))
        >>> image[:, 16:] = 1.0  # one sharp edge
        >>> probability = np.full((32, 32), 0.1)
        >>> probability[:, 15:17] = 0.9
        >>> probability[:8, 15:17] = 0.4  # where the network is unsure of it
        >>> bool(fuse_edges(probability, image, "auto")[:8, 15:17].min() > 0.5)
        True

    Args:
        probability: Boundary probability ``(H, W)`` at the image's own size.
        image: The micrograph as read, ``(H, W)`` or ``(H, W, C)`` in [0, 1].
        weight: Share of the image's edges, 0 (the network alone) to 1 (the edges alone), or ``"auto"``.
        sigma: Smoothing of the edge map, as in :func:`edge_strength`.

    Raises:
        ValueError: If ``weight`` is neither in [0, 1] nor ``"auto"``, or the image and the map differ in size.
    """
    check_edge_weight(weight)
    if tuple(np.shape(image)[:2]) != tuple(np.shape(probability)):
        raise ValueError(f"image {np.shape(image)[:2]} and boundary map {np.shape(probability)} differ in size")
    probability = np.asarray(probability, dtype=np.float64)
    if weight == "auto":
        prior = np.clip(probability.mean(), EPS, 1 - EPS)
        calibrated = calibrated_edges(probability, image, sigma)
        odds = logit(np.clip(probability, EPS, 1 - EPS)) + logit(np.clip(calibrated, EPS, 1 - EPS)) - logit(prior)
        return expit(odds).astype(np.float32)
    if weight == 0:
        return probability.astype(np.float32)
    return ((1 - weight) * probability + weight * edge_strength(image, sigma)).astype(np.float32)


def fuse_class_edges(
    probabilities: np.ndarray, image: np.ndarray, boundary_class: int, weight: EdgeWeight
) -> np.ndarray:
    """Every class's probability with the boundary class's fused with the image's edges (:func:`fuse_edges`).

    The other classes keep their odds against each other: they share what the fused boundary leaves.

    Args:
        probabilities: ``(C, H, W)`` class probabilities at the image's own size.
        image: The micrograph as read, ``(H, W)`` or ``(H, W, C)`` in [0, 1].
        boundary_class: Index of the grain-boundary class.
        weight: As in :func:`fuse_edges`.

    Returns:
        ``(C, H, W)`` float32, summing to one at each pixel as the input did.
    """
    boundary = np.asarray(probabilities[boundary_class], dtype=np.float64)
    fused = fuse_edges(boundary, image, weight)
    scaled = probabilities * ((1 - fused) / np.maximum(1 - boundary, 1e-6))
    scaled[boundary_class] = fused
    return scaled.astype(np.float32)


def check_edge_weight(weight: EdgeWeight) -> EdgeWeight:
    """``weight`` if it is a share in [0, 1] or ``"auto"``.

    Raises:
        ValueError: Otherwise, naming both choices.
    """
    if weight != "auto" and not (isinstance(weight, int | float) and 0 <= weight <= 1):
        raise ValueError(f"edge weight must be in [0, 1] (0: the network alone) or 'auto', got {weight!r}")
    return weight


def calibrated_edges(probability: np.ndarray, image: np.ndarray, sigma: float = EDGE_SIGMA) -> np.ndarray:
    """The image's edge strength in the network's units: the mean boundary probability at each edge strength.

    A monotone (isotonic) regression of the network's probability on :func:`edge_strength`, fitted on this image
    alone, needs no label: if the image's strong edges are where the network sees boundaries, a strong edge maps
    to a high probability; if they are scratches or texture the network calls grain, every strength maps to about
    the image's mean probability, and the edges carry no weight in :func:`fuse_edges`. Where both kinds of edge
    are equally strong, the map is a blend of the two.

    Args:
        probability: Boundary probability ``(H, W)`` at the image's own size.
        image: The micrograph as read, ``(H, W)`` or ``(H, W, C)`` in [0, 1].
        sigma: Smoothing of the edge map, as in :func:`edge_strength`.

    Returns:
        ``(H, W)`` float64 in [0, 1].
    """
    strength = edge_strength(image, sigma).ravel()
    target = np.asarray(probability, dtype=np.float64).ravel()
    step = max(1, -(-strength.size // CALIBRATION_PIXELS))
    fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    fit.fit(strength[::step], target[::step])
    return fit.predict(strength).reshape(np.shape(probability))


def thin_boundaries(mask: np.ndarray, probabilities: np.ndarray, boundary: int, width: int) -> np.ndarray:
    """``mask`` with its boundary class redrawn along its centre lines at the width ``SyntheticGrainBoundaries`` draws.

    The boundary's one-pixel skeleton is dilated ``width - 1`` times by one pixel, as the synthetic labels' centre
    lines are for their ``boundary_width`` (1: the skeleton; 2: about 3 px across); a pixel it leaves takes its
    likeliest other class. Labels of one width are what training needs: a network draws its boundaries several
    pixels wide, and a student trained on them beside synthetic labels would be told two widths.

    Args:
        mask: Class index per pixel ``[H, W]``.
        probabilities: Class probabilities ``[K, H, W]`` the mask was decided from.
        boundary: The boundary class index.
        width: The ``boundary_width`` to draw, at least 1.
    """
    lines = skeletonize(mask == boundary)
    if width > 1:
        lines = binary_dilation(lines, iterations=width - 1)
    thinned = likeliest_other_class(probabilities, boundary).astype(mask.dtype)
    thinned[lines] = boundary
    return thinned


def likeliest_other_class(probabilities: np.ndarray, boundary: int) -> np.ndarray:
    """Per pixel the most probable class of ``probabilities`` ``[K, H, W]`` other than ``boundary`` (``int64``).

    What a pixel is where a redrawn boundary (thinned or closed) no longer passes.
    """
    others = probabilities.copy()
    others[boundary] = -np.inf
    return others.argmax(axis=0).astype(np.int64)


def close_boundaries(
    probability: np.ndarray, threshold: float = 0.5, min_depth: float = 2.0, merge_threshold: float = 0.4
) -> np.ndarray:
    """Closed grain boundaries from a boundary probability map: marked watershed, weak divisions merged away.

    The map cut at ``threshold`` leaves the grain interiors, and every grain grows from one marker: a local maximum
    of the distance to the nearest cut boundary pixel that stands at least ``min_depth`` pixels above the saddle
    to its neighbours (the classic split of touching particles). A boundary the cut sees only in part still puts
    a neck between two grains, and so two markers, where regions of low probability would join through its gap.
    The watershed of the map grows the markers until they meet, so every line drawn is closed. Two grains whose
    shared line has a mean probability under ``merge_threshold`` are one grain split by a dip in the map, and are
    merged. The result has no gaps (the watershed closes them along the map's ridge) and no spurs (a line that
    separates nothing is not drawn). Where four grains meet at one point and the map is faint there, the two
    diagonal grains can touch along a few faint pixels and be merged; real grains meet at triple junctions, where
    every pair shares a whole boundary. The image border is no boundary: a spur close to it can close a sliver.

    Example:
        >>> probability = np.full((32, 32), 0.05)
        >>> probability[:, 15:17] = 0.9
        >>> probability[12:20, 15:17] = 0.3  # a gap in the boundary: still a valley between two grains
        >>> probability[20, 4:11] = 0.9  # a spur inside the left grain
        >>> closed = close_boundaries(probability)
        >>> bool(closed[12:20, 14:18].any(axis=1).all()), bool(closed[20, 4:11].any())
        (True, False)

    Args:
        probability: Boundary probability ``(H, W)``.
        threshold: The cut whose interiors place the markers.
        min_depth: Pixels by which a distance maximum must rise above its saddle to mark a grain of its own;
            lower splits grains at shallower necks.
        merge_threshold: Grains whose shared line averages less than this are merged.

    Returns:
        Boolean ``(H, W)`` mask, every division between two grains as a line one pixel wide (the pixels of the
        upper or left grain along it). Without any marker (the cut covers the map), the cut.
    """
    probability = np.asarray(probability, dtype=np.float64)
    interior = probability < threshold
    if not interior.any():  # nowhere grain: nothing to grow; keep what the map says
        return ~interior
    markers = label(h_maxima(distance_transform_edt(interior), min_depth), connectivity=2)
    regions = watershed(probability, markers)
    grains = _merge_weak_divisions(regions, probability, merge_threshold)
    return _division_lines(grains)


def _division_lines(grains: np.ndarray) -> np.ndarray:
    """Every division between two labels as a line one pixel wide (on its upper or left side), closed at junctions.

    Where three or four grains meet, marking one side of each division can cut a pixel or two of a grain off
    from the rest of it; such pockets are no grain, so they become part of the line.
    """
    lines = np.zeros(grains.shape, dtype=bool)
    lines[:, :-1] |= grains[:, :-1] != grains[:, 1:]
    lines[:-1] |= grains[:-1] != grains[1:]
    # A 4-connected piece off the lines never spans two grains (the pixel before a change of label is marked), so
    # each grain keeps its largest piece and the rest are pockets.
    pieces = connected_regions(~lines)
    size = np.bincount(pieces.ravel())
    owner = np.zeros(size.size, dtype=grains.dtype)
    owner[pieces.ravel()] = grains.ravel()
    order = np.lexsort((-size[1:], owner[1:])) + 1  # by grain, largest piece first
    largest = np.ones(order.size, dtype=bool)
    largest[1:] = owner[order][1:] != owner[order][:-1]
    keep = np.zeros(size.size, dtype=bool)
    keep[order[largest]] = True
    return ~keep[pieces]


def _merge_weak_divisions(regions: np.ndarray, probability: np.ndarray, merge_threshold: float) -> np.ndarray:
    """Relabel ``regions`` so that neighbours whose shared line averages under ``merge_threshold`` are one."""
    count = int(regions.max()) + 1
    pairs, strength = [], []
    # Pairs of 4-neighbours across a line between two regions: rows, then columns.
    for a, b, pa, pb in (
        (regions[:-1], regions[1:], probability[:-1], probability[1:]),
        (regions[:, :-1], regions[:, 1:], probability[:, :-1], probability[:, 1:]),
    ):
        across = a != b
        pairs.append(np.minimum(a[across], b[across]) * count + np.maximum(a[across], b[across]))
        strength.append(np.maximum(pa[across], pb[across]))  # the ridge's side of the pair
    lines, which = np.unique(np.concatenate(pairs), return_inverse=True)
    mean = np.bincount(which, weights=np.concatenate(strength)) / np.bincount(which)
    weak = lines[mean < merge_threshold]
    graph = coo_matrix((np.ones(weak.size), (weak // count, weak % count)), shape=(count, count))
    _, merged = connected_components(graph, directed=False)
    return merged[regions]
