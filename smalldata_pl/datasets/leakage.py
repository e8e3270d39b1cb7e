"""Near-duplicate micrographs across splits: candidates by texture statistics, confirmed by template matching.

Two images count as the same micrograph when a central window of one, at one of 8 orientations (flips and 90°
rotations) and 3 scales (±10 %), correlates strongly with the other after removing slow illumination: that
survives flips, rotations, small crops, resizes and brightness/contrast/gamma changes, while distinct
micrographs of the same class correlate weakly (their texture agrees, their exact structure does not).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.feature import match_template
from skimage.transform import rescale, resize

from smalldata_pl.io.images import read_image

LeakageMode = Literal["error", "warn", "off"]
SIDE = 64  # short side of the comparison images
THRESHOLD = 0.7  # correlation above which two images are the same micrograph
SCALES = (0.9, 1.0, 1 / 0.9)


class LeakageError(ValueError):
    """Near-identical micrographs sit in different splits."""


@dataclass(frozen=True)
class DuplicatePair:
    """A training image and an image of another split that show the same micrograph."""

    first: str
    second: str
    correlation: float


@dataclass
class Signature:
    """What the search compares: the illumination-flattened small image and its texture descriptor."""

    image: np.ndarray
    descriptor: np.ndarray


def signature(image: np.ndarray) -> Signature:
    """Reduce an image to grey at ``SIDE`` px, remove slow illumination, standardise; add its descriptor."""
    grey = image[..., :3].mean(axis=2) if image.ndim == 3 else image
    h, w = grey.shape
    factor = SIDE / min(h, w)
    small = resize(grey, (max(SIDE, round(h * factor)), max(SIDE, round(w * factor))), anti_aliasing=True)
    small = small - gaussian_filter(small, SIDE / 16)  # gradients and charging would dominate the correlation
    small = (small - small.mean()) / (small.std() + 1e-8)
    return Signature(small, _descriptor(small))


def _descriptor(image: np.ndarray) -> np.ndarray:
    """Radial power spectrum of the central square plus an intensity histogram: D4- and shift-invariant."""
    h, w = image.shape
    top, left = (h - SIDE) // 2, (w - SIDE) // 2
    power = np.abs(np.fft.fftshift(np.fft.fft2(image[top : top + SIDE, left : left + SIDE]))) ** 2
    rows, cols = np.indices(power.shape)
    radius = np.hypot(rows - SIDE // 2, cols - SIDE // 2).astype(int).ravel()
    counts = np.maximum(np.bincount(radius)[1 : SIDE // 2], 1)
    radial = np.log(np.bincount(radius, power.ravel())[1 : SIDE // 2] / counts + 1e-8)
    radial -= radial.mean()
    histogram = np.histogram(np.clip(image, -3, 3), bins=16, range=(-3, 3), density=True)[0]
    return np.concatenate([radial / (np.linalg.norm(radial) + 1e-8), histogram / (np.linalg.norm(histogram) + 1e-8)])


def correlation(reference: np.ndarray, query: np.ndarray) -> float:
    """Best normalised cross-correlation of the query's central 60 % window inside the reference."""
    best = -1.0
    for scale in SCALES:
        scaled = rescale(query, scale, anti_aliasing=True) if scale != 1.0 else query
        h, w = scaled.shape
        th, tw = int(h * 0.6), int(w * 0.6)
        template = scaled[(h - th) // 2 : (h - th) // 2 + th, (w - tw) // 2 : (w - tw) // 2 + tw]
        for k in range(4):
            for transpose in (False, True):
                view = np.rot90(reference, k)
                view = view.T if transpose else view
                if view.shape[0] >= template.shape[0] and view.shape[1] >= template.shape[1]:
                    best = max(best, float(match_template(view, template).max()))
    return best


def find_duplicates(
    reference: Sequence[Signature], queries: Sequence[Signature], candidates: int = 10, threshold: float = THRESHOLD
) -> list[tuple[int, int, float]]:
    """``(reference index, query index, correlation)`` for each query that duplicates a reference image.

    Only the ``candidates`` references with the most similar descriptors are template-matched per query.
    """
    if not reference or not queries:
        return []
    descriptors = np.stack([s.descriptor for s in reference])
    found = []
    for j, query in enumerate(queries):
        nearest = np.argsort(np.linalg.norm(descriptors - query.descriptor, axis=1))[:candidates]
        scores = [(int(i), correlation(reference[i].image, query.image)) for i in nearest]
        i, score = max(scores, key=lambda pair: pair[1])
        if score >= threshold:
            found.append((i, j, score))
    return found


def find_leaks(
    train_paths: Sequence[str | Path],
    other_paths: Sequence[str | Path],
    candidates: int = 10,
    threshold: float = THRESHOLD,
) -> list[DuplicatePair]:
    """Pairs of (training image, other-split image) that are the same micrograph."""
    train = [signature(read_image(p)) for p in train_paths]
    other = [signature(read_image(p)) for p in other_paths]
    pairs = find_duplicates(train, other, candidates, threshold)
    return [DuplicatePair(str(train_paths[i]), str(other_paths[j]), score) for i, j, score in pairs]


def describe(pairs: Sequence[DuplicatePair], limit: int = 10) -> str:
    """Human-readable list of duplicate pairs."""
    lines = [f"  {p.first}  <->  {p.second}  (correlation {p.correlation:.2f})" for p in pairs[:limit]]
    more = f"\n  … and {len(pairs) - limit} more" if len(pairs) > limit else ""
    return "\n".join(lines) + more
