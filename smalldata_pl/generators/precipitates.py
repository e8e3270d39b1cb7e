"""Two-phase gamma/gamma'-like precipitate microstructures: large secondary and small tertiary particles."""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from smalldata_pl.generators.imaging import IMAGING_PRESETS, ImagingModel

MATRIX, SECONDARY, TERTIARY = 0, 1, 2
PHASE_NAMES = ("matrix", "secondary", "tertiary")


@dataclass(frozen=True)
class PrecipitateParams:
    """Targets for one precipitate microstructure.

    Args:
        secondary_fraction: Area fraction of the large (secondary) particles.
        secondary_size: Mean spacing of secondary particles in pixels (their size scales with it).
        roundness: 0 gives irregular coalesced shapes, 1 smooth rounded ones (smoothing of the shape field).
        tertiary_fraction: Area fraction of the small (tertiary) particles in the matrix channels.
        tertiary_radius: Mean radius of tertiary particles in pixels.
        size_jitter: Relative per-sample spread of sizes and fractions (domain randomisation).
    """

    secondary_fraction: float = 0.48
    secondary_size: float = 70.0
    roundness: float = 0.5
    tertiary_fraction: float = 0.025
    tertiary_radius: float = 3.5
    size_jitter: float = 0.15


@dataclass
class PrecipitateMicrograph:
    """An image with its phase mask and particle statistics.

    Attributes:
        image: float32 image in [0, 1].
        mask: uint8 phase per pixel: 0 matrix, 1 secondary, 2 tertiary.
        fractions: Measured area fraction of each phase.
        secondary_diameters: Equivalent-circle diameters of the secondary particles (pixels).
        tertiary_diameters: Diameters of the tertiary particles (pixels).
    """

    image: np.ndarray
    mask: np.ndarray
    fractions: np.ndarray
    secondary_diameters: np.ndarray
    tertiary_diameters: np.ndarray


def render_precipitates(
    rng: np.random.Generator,
    shape: tuple[int, int],
    params: PrecipitateParams = PrecipitateParams(),
    imaging: ImagingModel | None = None,
) -> PrecipitateMicrograph:
    """Draw one precipitate micrograph.

    Secondary particles are the upper quantile of a smooth random field (the quantile sets the area fraction
    exactly); tertiary particles are discs dropped into the matrix channels away from the secondaries.
    """
    jitter = lambda: float(np.exp(rng.normal(0.0, params.size_jitter)))  # noqa: E731
    spacing = params.secondary_size * jitter()
    field = ndimage.gaussian_filter(rng.standard_normal(shape), spacing / 4.0, mode="wrap")
    field = ndimage.gaussian_filter(field, 1.0 + 3.0 * params.roundness)
    secondary_fraction = float(np.clip(params.secondary_fraction * jitter(), 0.05, 0.8))
    secondary = field > np.quantile(field, 1.0 - secondary_fraction)

    radius = params.tertiary_radius * jitter()
    distance_to_secondary = ndimage.distance_transform_edt(~secondary)
    allowed = np.argwhere(distance_to_secondary > radius + 2)
    wanted = params.tertiary_fraction * jitter() * shape[0] * shape[1] / (np.pi * radius**2)
    count = min(len(allowed), rng.poisson(max(wanted, 0.0)))
    centres = allowed[rng.choice(len(allowed), count, replace=False)] if count else np.zeros((0, 2), int)
    radii = np.clip(rng.normal(radius, 0.2 * radius, count), 1.0, None)
    tertiary = np.zeros(shape, bool)
    rows, cols = np.ogrid[0 : shape[0], 0 : shape[1]]
    for (r, c), rad in zip(centres, radii, strict=True):
        top, bottom = max(0, int(r - rad - 1)), min(shape[0], int(r + rad + 2))
        left, right = max(0, int(c - rad - 1)), min(shape[1], int(c + rad + 2))
        tertiary[top:bottom, left:right] |= (rows[top:bottom] - r) ** 2 + (cols[:, left:right] - c) ** 2 <= rad**2

    mask = np.zeros(shape, np.uint8)
    mask[secondary] = SECONDARY
    mask[tertiary & ~secondary] = TERTIARY
    image = _render(rng, mask, secondary)
    image = (imaging or IMAGING_PRESETS["sem_se"]).apply(image, rng)
    labels, n = ndimage.label(secondary)
    areas = np.bincount(labels.ravel())[1:] if n else np.zeros(0)
    return PrecipitateMicrograph(
        image=image.astype(np.float32),
        mask=mask,
        fractions=np.bincount(mask.ravel(), minlength=3) / mask.size,
        secondary_diameters=np.sqrt(4 * areas / np.pi),
        tertiary_diameters=2 * radii,
    )


def _render(rng: np.random.Generator, mask: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Grey levels like an etched SE image: bright matrix channels, darker particles with bright rims."""
    levels = np.array([0.58, 0.44, 0.3]) + rng.normal(0.0, 0.03, 3)
    image = levels[mask]
    inside = ndimage.distance_transform_edt(secondary)
    image = image + 0.18 * np.exp(-((inside / 2.5) ** 2)) * secondary  # edge brightening of SE detectors
    texture = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 2.0)
    return np.clip(image + 0.03 * texture, 0.0, 1.0)
