"""Voronoi grain microstructures rendered like etched micrographs, with their labels for free."""

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.segmentation import find_boundaries

from smalldata_pl.generators.imaging import IMAGING_PRESETS, ImagingModel
from smalldata_pl.generators.seeds import Placement, place_seeds


@dataclass(frozen=True)
class GrainMorphology:
    """How one morphology class is drawn.

    Args:
        name: Class name, e.g. ``fine_equiaxed``.
        grain_size: Mean seed spacing as a fraction of the image's shorter side (about the mean grain diameter).
        placement: Seed process (see :func:`place_seeds`).
        aspect: Elongation ratio of the grains (1 = equiaxed, 3 = strongly rolled).
        angle: Elongation direction in degrees from the horizontal.
        angle_jitter: Per-sample random deviation of the direction, in degrees.
        size_jitter: Per-sample relative deviation of the grain size, so classes overlap a little as real ones do.
    """

    name: str
    grain_size: float
    placement: Placement = "hardcore"
    aspect: float = 1.0
    angle: float = 0.0
    angle_jitter: float = 0.0
    size_jitter: float = 0.15


# Four classes a metallographer tells apart at a glance.
GRAIN_MORPHOLOGIES: tuple[GrainMorphology, ...] = (
    GrainMorphology("fine_equiaxed", grain_size=0.07),
    GrainMorphology("coarse_equiaxed", grain_size=0.2),
    GrainMorphology("elongated", grain_size=0.1, aspect=3.5, angle_jitter=15.0),
    GrainMorphology("bimodal", grain_size=0.08, placement="clustered"),
)


@dataclass
class GrainMicrograph:
    """One rendered micrograph and the labels that come with it.

    Attributes:
        image: float32 image in [0, 1], shape ``(H, W)``, or ``(H, W, 3)`` for a colour-etched specimen.
        instances: int32 grain id per pixel, ``0..num_grains-1``.
        boundaries: bool mask of grain-boundary pixels.
        seeds: Seed coordinates ``(num_grains, 2)``.
        grain_areas: Area in pixels of each grain id.
        mean_intercept: Mean linear intercept length in pixels (ASTM E112 style, horizontal and vertical lines).
        twins: bool mask of annealing-twin bands.
        particles: bool mask of second-phase particles on the boundaries.
        artefacts: bool footprint of each specimen artefact drawn (``scratches``, ``etch_pits``, ``pores``,
            ``inclusions``); none of them is boundary.
    """

    image: np.ndarray
    instances: np.ndarray
    boundaries: np.ndarray
    seeds: np.ndarray
    grain_areas: np.ndarray = field(repr=False)
    mean_intercept: float = 0.0
    twins: np.ndarray | None = field(default=None, repr=False)
    particles: np.ndarray | None = field(default=None, repr=False)
    artefacts: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def tessellate(
    seeds: np.ndarray,
    shape: tuple[int, int],
    aspect: float = 1.0,
    angle: float = 0.0,
    periodic: bool = False,
) -> np.ndarray:
    """Assign every pixel to its nearest seed (a Voronoi tessellation) with a k-d tree.

    Args:
        seeds: Seed coordinates ``(N, 2)`` as (row, column).
        shape: Output height and width.
        aspect: Stretch of the metric: grains come out ``aspect`` times longer along ``angle`` than across it.
        angle: Elongation direction in degrees from the horizontal (counter-clockwise).
        periodic: Wrap the domain so grains continue across opposite edges (tileable images).

    Returns:
        int32 array of shape ``shape`` with the index of the nearest seed.
    """
    height, width = shape
    if aspect == 1.0 and not periodic:
        return _tessellate_edt(seeds, shape)
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)
    points, ids = seeds, np.arange(len(seeds))
    if periodic:
        offsets = np.array([(dy * height, dx * width) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        points = (seeds[None, :, :] + offsets[:, None, :]).reshape(-1, 2)
        ids = np.tile(ids, len(offsets))
    transform = anisotropy(aspect, angle)
    _, nearest = cKDTree(points @ transform.T).query(pixels @ transform.T, workers=1)
    return ids[nearest].reshape(shape).astype(np.int32)


def _tessellate_edt(seeds: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Isotropic Voronoi in O(pixels): the Euclidean distance transform's nearest-feature indices.

    Seeds snap to pixel centres; two seeds in one pixel merge (rare, and the instance map is renumbered so
    ids stay contiguous).
    """
    pixel = np.clip(np.floor(seeds).astype(int), 0, np.array(shape) - 1)
    label = np.full(shape, -1, dtype=np.int32)
    label[pixel[:, 0], pixel[:, 1]] = np.arange(len(seeds), dtype=np.int32)
    _, (rows, cols) = ndimage.distance_transform_edt(label < 0, return_indices=True)
    instances = label[rows, cols]
    _, contiguous = np.unique(instances, return_inverse=True)
    return contiguous.reshape(shape).astype(np.int32)


def anisotropy(aspect: float, angle: float) -> np.ndarray:
    """Linear map that shrinks distances along the elongation direction by ``aspect``."""
    theta = np.deg2rad(angle)
    # (row, col) axes: the direction vector of `angle` measured from the horizontal, image rows pointing down.
    along = np.array([-np.sin(theta), np.cos(theta)])
    across = np.array([np.cos(theta), np.sin(theta)])
    return np.stack([along / aspect, across])


def grain_boundaries(instances: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary mask lying on the edges between different grains."""
    return find_boundaries(instances, mode="inner")


def mean_intercept_length(instances: np.ndarray) -> float:
    """Mean linear intercept in pixels: line length divided by grain-boundary crossings (ASTM E112)."""
    crossings = np.count_nonzero(np.diff(instances, axis=1)) + np.count_nonzero(np.diff(instances, axis=0))
    length = instances.shape[0] * (instances.shape[1] - 1) + instances.shape[1] * (instances.shape[0] - 1)
    return float(length / max(crossings, 1))


def render_grain_micrograph(
    rng: np.random.Generator,
    shape: tuple[int, int],
    morphology: GrainMorphology,
    imaging: ImagingModel | None = None,
    boundary_width: float = 1.2,
    boundary_depth: float = 0.35,
    contrast: float = 0.2,
    periodic: bool = False,
    twin_probability: float = 0.0,
    boundary_particles: float = 0.0,
) -> GrainMicrograph:
    """Draw one grain micrograph of the given morphology.

    Args:
        rng: Random generator; the only source of randomness, so the image is a pure function of its state.
        shape: Height and width in pixels.
        morphology: What kind of grain structure to draw.
        imaging: Imaging model applied last; ``None`` uses the optical-microscope preset.
        boundary_width: Width of the etched groove in pixels (Gaussian profile).
        boundary_depth: How much darker the groove centre is than the grains.
        contrast: Spread of per-grain grey levels (orientation contrast).
        periodic: Wrap the tessellation at the edges.
        twin_probability: Fraction of grains crossed by a straight annealing-twin band (FCC metals).
        boundary_particles: Second-phase particles per 1,000 boundary pixels, drawn as dark discs on boundaries.

    Returns:
        The image with its instance map, boundary mask, seeds and grain-size statistics.
    """
    short_side = min(shape)
    spacing = morphology.grain_size * short_side * float(np.exp(rng.normal(0.0, morphology.size_jitter)))
    # An elongated grain of the same area is `aspect` times longer, so fewer seeds are needed per area.
    count = max(2, round(shape[0] * shape[1] / (spacing**2 * morphology.aspect)))
    seeds = place_seeds(rng, count, shape, morphology.placement)
    angle = morphology.angle + rng.uniform(-morphology.angle_jitter, morphology.angle_jitter)
    instances = tessellate(seeds, shape, morphology.aspect, angle, periodic)

    grey = np.clip(0.55 + contrast * rng.standard_normal(count), 0.15, 0.95)
    image = grey[instances]
    twins = twin_bands(rng, instances, seeds, twin_probability, spacing)
    image = np.where(twins, np.clip(grey[instances] + rng.choice([-1, 1]) * 2 * contrast, 0.1, 0.95), image)
    boundaries = grain_boundaries(instances)
    distance = ndimage.distance_transform_edt(~boundaries)
    image = image - boundary_depth * np.exp(-((distance / boundary_width) ** 2))
    particles = boundary_particles_mask(rng, boundaries, boundary_particles, spacing)
    image = np.where(particles, 0.08, image)
    return imaged_micrograph(image, rng, imaging, instances, boundaries, seeds, count, twins, particles)


def imaged_micrograph(
    image: np.ndarray,
    rng: np.random.Generator,
    imaging: ImagingModel | None,
    instances: np.ndarray,
    boundaries: np.ndarray,
    seeds: np.ndarray,
    count: int,
    twins: np.ndarray,
    particles: np.ndarray,
    artefacts: dict[str, np.ndarray] | None = None,
) -> GrainMicrograph:
    """The last step of every grain renderer: the imaging model over the specimen image, plus its labels.

    Args:
        image: Specimen reflectance in [0, 1] (clipped here), ``(H, W)`` or ``(H, W, 3)``.
        rng: Random generator of the imaging model's noise.
        imaging: Imaging model; ``None`` uses the optical-microscope preset.
        instances: Grain id per pixel.
        boundaries: Boundary mask.
        seeds: Seed coordinates.
        count: Number of grain ids (grains without a pixel keep an area of 0).
        twins: Twin-band mask.
        particles: Boundary-particle mask.
        artefacts: Footprints of unlabelled artefacts (scratches, pits, pores), by kind.
    """
    image = (imaging or IMAGING_PRESETS["optical"]).apply(np.clip(image, 0.0, 1.0), rng)
    return GrainMicrograph(
        image=image.astype(np.float32),
        instances=instances,
        boundaries=boundaries,
        seeds=seeds,
        grain_areas=np.bincount(instances.ravel(), minlength=count),
        mean_intercept=mean_intercept_length(instances),
        twins=twins,
        particles=particles,
        artefacts=artefacts if artefacts is not None else {},
    )


def twin_bands(
    rng: np.random.Generator, instances: np.ndarray, seeds: np.ndarray, probability: float, spacing: float
) -> np.ndarray:
    """Straight parallel-sided bands through randomly chosen grains, as annealing twins look in section."""
    twins = np.zeros(instances.shape, bool)
    if probability <= 0:
        return twins
    rows, cols = np.mgrid[0 : instances.shape[0], 0 : instances.shape[1]]
    for grain in np.flatnonzero(rng.random(len(seeds)) < probability):
        inside = instances == grain
        if not inside.any():
            continue
        theta = rng.uniform(0, np.pi)
        centre = np.array([rows[inside].mean(), cols[inside].mean()]) + rng.normal(0, spacing / 8, 2)
        offset = (rows - centre[0]) * np.cos(theta) + (cols - centre[1]) * np.sin(theta)
        twins |= inside & (np.abs(offset) < rng.uniform(0.08, 0.2) * spacing)
    return twins


def boundary_particles_mask(
    rng: np.random.Generator, boundaries: np.ndarray, per_thousand: float, spacing: float
) -> np.ndarray:
    """Small discs centred on random boundary pixels (second phase decorating the grain boundaries)."""
    particles = np.zeros(boundaries.shape, bool)
    sites = np.argwhere(boundaries)
    count = rng.poisson(per_thousand * len(sites) / 1000) if per_thousand > 0 else 0
    if count == 0 or len(sites) == 0:
        return particles
    rows, cols = np.ogrid[0 : boundaries.shape[0], 0 : boundaries.shape[1]]
    for r, c in sites[rng.choice(len(sites), min(count, len(sites)), replace=False)]:
        radius = max(1.0, rng.uniform(0.03, 0.08) * spacing)
        top, left = max(0, int(r - radius)), max(0, int(c - radius))
        window = (slice(top, int(r + radius) + 1), slice(left, int(c + radius) + 1))
        particles[window] |= (rows[window[0]] - r) ** 2 + (cols[:, window[1]] - c) ** 2 <= radius**2
    return particles
