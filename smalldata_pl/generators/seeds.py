"""Seed-point processes for tessellations: Poisson, hard-core and clustered placement."""

from typing import Literal

import numpy as np

Placement = Literal["poisson", "hardcore", "clustered"]


def place_seeds(
    rng: np.random.Generator,
    count: int,
    shape: tuple[int, int],
    placement: Placement = "poisson",
    hardcore_fraction: float = 0.7,
    cluster_count: int = 4,
    cluster_spread: float = 0.12,
) -> np.ndarray:
    """Draw `count` seed points inside an image of `shape`.

    Args:
        rng: Random generator; the only source of randomness.
        count: Number of seeds.
        shape: Image height and width in pixels.
        placement: ``poisson`` (complete spatial randomness, broad grain-size spread), ``hardcore`` (a minimum
            distance between seeds, giving the narrow size spread of well-annealed equiaxed grains) or
            ``clustered`` (seeds gathered around a few centres: fine grains in patches among coarse ones).
        hardcore_fraction: For ``hardcore``, the minimum distance as a fraction of the mean seed spacing.
        cluster_count: For ``clustered``, the number of cluster centres.
        cluster_spread: For ``clustered``, each cluster's standard deviation as a fraction of the image size.

    Returns:
        Array of shape ``(count, 2)`` with (row, column) coordinates.
    """
    if count < 1:
        raise ValueError(f"need at least one seed, got count={count}")
    height, width = shape
    scale = np.array([height, width], dtype=np.float64)
    if placement == "poisson":
        return rng.random((count, 2)) * scale
    if placement == "hardcore":
        return _hardcore(rng, count, scale, hardcore_fraction)
    if placement == "clustered":
        centres = rng.random((cluster_count, 2)) * scale
        members = centres[rng.integers(0, cluster_count, count)]
        points = members + rng.normal(0.0, cluster_spread * scale.mean(), (count, 2))
        return np.mod(points, scale)
    raise ValueError(f"unknown placement {placement!r}; choose poisson, hardcore or clustered")


def _hardcore(rng: np.random.Generator, count: int, scale: np.ndarray, fraction: float) -> np.ndarray:
    """Random sequential adsorption: accept candidates farther than a minimum distance from all accepted ones.

    A grid of cells one minimum distance wide means each candidate is checked against its 3x3 neighbourhood only.
    """
    spacing = np.sqrt(scale.prod() / count)
    min_distance = fraction * spacing
    cells: dict[tuple[int, int], list[np.ndarray]] = {}
    accepted: list[np.ndarray] = []
    # Batches of candidates keep the loop short; the attempt cap guards against impossible packings.
    for _ in range(200):
        for candidate in rng.random((4 * count, 2)) * scale:
            cy, cx = int(candidate[0] // min_distance), int(candidate[1] // min_distance)
            neighbours = [p for dy in (-1, 0, 1) for dx in (-1, 0, 1) for p in cells.get((cy + dy, cx + dx), ())]
            if all((p[0] - candidate[0]) ** 2 + (p[1] - candidate[1]) ** 2 >= min_distance**2 for p in neighbours):
                accepted.append(candidate)
                cells.setdefault((cy, cx), []).append(candidate)
                if len(accepted) == count:
                    return np.array(accepted)
    # A packing this dense cannot be completed; fill the rest at random rather than loop forever.
    return np.vstack([np.array(accepted).reshape(-1, 2), rng.random((count - len(accepted), 2)) * scale])
