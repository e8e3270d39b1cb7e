"""Curved tessellations: weighted Voronoi cells on a smoothly displaced grid, and the random fields behind them."""

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import label

from smalldata_pl.generators.grains import anisotropy

# Candidate seeds per pixel for the weighted assignment: the winner of a moderately weighted tessellation is
# almost always among the nearest few in plain distance, and a k-d tree finds those in O(log n).
NEAREST_CANDIDATES = 8


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A Gaussian random field of zero mean and unit standard deviation, correlated over ``sigma`` pixels.

    A wide field is filtered on a coarser grid and interpolated up: the same look at a fraction of the cost.
    """
    step = max(1, int(sigma // 3))
    coarse = tuple(-(-n // step) + 1 for n in shape) if step > 1 else shape
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), max(sigma, 0.0) / step, mode="wrap")
    if step > 1:
        field = ndimage.zoom(field, [n / c for n, c in zip(shape, coarse, strict=True)], order=1, mode="nearest")
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def curved_tessellation(
    seeds: np.ndarray,
    shape: tuple[int, int],
    weights: np.ndarray,
    displacement: np.ndarray,
    aspect: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Multiplicatively weighted Voronoi cells evaluated on a displaced grid.

    A pixel belongs to the seed minimising ``distance / weight`` (cells grow with their weight and meet along
    circular arcs), measured from the pixel's displaced position (which bends every boundary smoothly).

    Args:
        seeds: Seed coordinates ``(N, 2)`` as (row, column).
        shape: Output height and width.
        weights: Positive weight per seed; a cell's diameter scales roughly with its weight.
        displacement: ``(2, H, W)`` row and column displacement in pixels of each pixel's sampling position.
        aspect: Elongation ratio of the grains, as in :func:`~smalldata_pl.generators.grains.tessellate`.
        angle: Elongation direction in degrees from the horizontal.

    Returns:
        int32 instance map of shape ``shape`` with contiguous ids; a cell split in two by a heavier neighbour
        becomes two grains, and fragments of a few pixels are merged into their neighbours.
    """
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    pixels = np.stack([(rows + displacement[0]).ravel(), (cols + displacement[1]).ravel()], axis=1)
    transform = anisotropy(aspect, angle)
    k = min(len(seeds), NEAREST_CANDIDATES)
    distances, candidates = cKDTree(seeds @ transform.T).query(pixels @ transform.T, k=k, workers=1)
    distances, candidates = distances.reshape(len(pixels), k), candidates.reshape(len(pixels), k)
    best = np.argmin(distances / weights[candidates], axis=1)
    nearest = candidates[np.arange(len(pixels)), best].reshape(shape)
    return connected_grains(nearest)


def connected_grains(instances: np.ndarray, min_area: int = 6) -> np.ndarray:
    """Renumber an instance map so every connected region is one grain, absorbing specks below ``min_area``.

    Specks (from displacement folds or nested weighted cells) go to the nearest larger grain, so no grain is
    too small to be a grain on its own.
    """
    regions = label(instances, background=-1, connectivity=1)
    areas = np.bincount(regions.ravel())
    speck = areas[regions] < min_area
    if speck.any() and not speck.all():
        _, (near_rows, near_cols) = ndimage.distance_transform_edt(speck, return_indices=True)
        regions = regions[near_rows, near_cols]
    _, contiguous = np.unique(regions, return_inverse=True)
    return contiguous.reshape(instances.shape).astype(np.int32)
