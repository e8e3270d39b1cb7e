"""Specimen-preparation artefacts a segmenter must not call boundaries: scratches, etch pits, pores, inclusions.

Each function returns a darkening map in [0, 1] (the image is multiplied by ``1 - darkening``) and the bool
footprint of what it drew; counts are absolute numbers for this image.
"""

from collections.abc import Callable

import numpy as np

Artefact = tuple[np.ndarray, np.ndarray]
# Darkening of one artefact in a window: (row offsets, column offsets) from its centre -> darkening there.
Profile = Callable[[np.ndarray, np.ndarray], np.ndarray]


def scratches(rng: np.random.Generator, shape: tuple[int, int], count: int) -> Artefact:
    """Long thin dark lines, straight as polishing scratches are, most of them near one polishing direction."""
    darkening, footprint = np.zeros(shape), np.zeros(shape, bool)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    polishing = rng.uniform(0.0, np.pi)
    for _ in range(count):
        # Most scratches follow the last polishing direction; a few stray ones cross it.
        theta = polishing + rng.normal(0.0, np.deg2rad(12)) if rng.random() < 0.75 else rng.uniform(0.0, np.pi)
        centre = rng.random(2) * np.array(shape)
        half_length = rng.uniform(0.15, 0.8) * max(shape)
        width, depth = rng.uniform(0.4, 1.3), rng.uniform(0.12, 0.4)
        along = (rows - centre[0]) * np.sin(theta) + (cols - centre[1]) * np.cos(theta)
        across = (cols - centre[1]) * np.sin(theta) - (rows - centre[0]) * np.cos(theta)
        # Tapered ends and a depth that wavers along the line, as a dragged abrasive grain leaves it.
        taper = np.clip((half_length - np.abs(along)) / (0.15 * half_length), 0.0, 1.0)
        waver = 0.75 + 0.25 * np.cos(along / rng.uniform(8.0, 30.0) + rng.uniform(0.0, 2.0 * np.pi))
        line = depth * waver * taper * np.exp(-((across / width) ** 2))
        darkening = np.maximum(darkening, line)
        footprint |= line > 0.02
    return darkening, footprint


def etch_pits(rng: np.random.Generator, shape: tuple[int, int], count: int) -> Artefact:
    """Small dark Gaussian spots where the etchant attacked dislocations or impurities."""
    darkening, footprint = np.zeros(shape), np.zeros(shape, bool)
    for _ in range(count):
        radius, depth = rng.uniform(0.5, 1.6), rng.uniform(0.3, 0.8)
        _stamp(darkening, footprint, rng.random(2) * np.array(shape), 3 * radius, _gaussian(radius, depth))
    return darkening, footprint


def pores(rng: np.random.Generator, shape: tuple[int, int], count: int) -> Artefact:
    """Near-black blobs with irregular outlines (porosity, pull-outs)."""
    darkening, footprint = np.zeros(shape), np.zeros(shape, bool)
    for _ in range(count):
        radius = float(np.clip(rng.lognormal(np.log(3.0), 0.45), 1.5, 12.0))
        amplitudes, phases = rng.uniform(0.0, 0.2, 2), rng.uniform(0.0, 2.0 * np.pi, 2)
        blob = _blob(radius, amplitudes, phases, rng.uniform(0.8, 0.95))
        _stamp(darkening, footprint, rng.random(2) * np.array(shape), 1.5 * radius + 1, blob)
    return darkening, footprint


def inclusions(rng: np.random.Generator, shape: tuple[int, int], count: int) -> Artefact:
    """Dark grey ellipses elongated along one rolling direction (sulphide and oxide stringers)."""
    darkening, footprint = np.zeros(shape), np.zeros(shape, bool)
    rolling = rng.uniform(0.0, np.pi)
    for _ in range(count):
        length = rng.uniform(2.0, 8.0)
        thickness = max(0.8, length / rng.uniform(2.0, 5.0))
        theta = rolling + rng.normal(0.0, np.deg2rad(5))
        ellipse = _ellipse(length, thickness, theta, rng.uniform(0.4, 0.7))
        _stamp(darkening, footprint, rng.random(2) * np.array(shape), length + 1, ellipse)
    return darkening, footprint


def _gaussian(radius: float, depth: float) -> Profile:
    def profile(dr: np.ndarray, dc: np.ndarray) -> np.ndarray:
        return depth * np.exp(-(dr**2 + dc**2) / (2 * radius**2))

    return profile


def _blob(radius: float, amplitudes: np.ndarray, phases: np.ndarray, depth: float) -> Profile:
    """A disc whose radius wobbles with the angle (second and third harmonics), with an antialiased rim."""

    def profile(dr: np.ndarray, dc: np.ndarray) -> np.ndarray:
        phi = np.arctan2(dr, dc)
        wobble = amplitudes[0] * np.cos(2 * phi + phases[0]) + amplitudes[1] * np.cos(3 * phi + phases[1])
        return depth * np.clip(radius * (1 + wobble) - np.hypot(dr, dc) + 0.5, 0.0, 1.0)

    return profile


def _ellipse(length: float, thickness: float, theta: float, depth: float) -> Profile:
    """A filled ellipse of semi-axes ``length`` along ``theta`` and ``thickness`` across, with a soft rim."""

    def profile(dr: np.ndarray, dc: np.ndarray) -> np.ndarray:
        along = dr * np.sin(theta) + dc * np.cos(theta)
        across = dc * np.sin(theta) - dr * np.cos(theta)
        return depth * np.clip(1.5 * (1.0 - np.hypot(along / length, across / thickness)) + 0.5, 0.0, 1.0)

    return profile


def _stamp(darkening: np.ndarray, footprint: np.ndarray, centre: np.ndarray, reach: float, profile: Profile) -> None:
    """Draw ``profile`` in the window of half-size ``reach`` around ``centre`` (in place, darkest wins)."""
    top, left = (max(0, int(np.floor(c - reach))) for c in centre)
    bottom, right = (min(n, int(np.ceil(c + reach)) + 1) for c, n in zip(centre, darkening.shape, strict=True))
    if top >= bottom or left >= right:
        return
    dr, dc = np.mgrid[top:bottom, left:right].astype(np.float64)
    values = profile(dr - centre[0], dc - centre[1])
    window = (slice(top, bottom), slice(left, right))
    darkening[window] = np.maximum(darkening[window], values)
    footprint[window] |= values > 0.02
