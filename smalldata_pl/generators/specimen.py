"""Grain specimens that look prepared and etched: curved boundaries, grooves, textured grains and artefacts."""

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from smalldata_pl.generators import artefacts
from smalldata_pl.generators.grains import (
    GrainMicrograph,
    GrainMorphology,
    boundary_particles_mask,
    grain_boundaries,
    imaged_micrograph,
    render_grain_micrograph,
    tessellate,
    twin_bands,
)
from smalldata_pl.generators.imaging import ImagingModel
from smalldata_pl.generators.seeds import place_seeds
from smalldata_pl.generators.styles import GrainStyle
from smalldata_pl.generators.warping import curved_tessellation, smooth_field

# First-order thin-film interference colours (sRGB) of a tint-etch film as it thickens: straw, yellow, brown,
# purple, violet, blue, pale blue. A grain's orientation sets its etch rate and so its film thickness.
INTERFERENCE_COLOURS = np.array(
    [
        [0.86, 0.83, 0.66],
        [0.82, 0.74, 0.38],
        [0.62, 0.47, 0.28],
        [0.52, 0.33, 0.40],
        [0.44, 0.38, 0.64],
        [0.36, 0.52, 0.82],
        [0.58, 0.72, 0.86],
    ]
)
# Counts in GrainStyle are per this many pixels (a 256 x 256 tile).
REFERENCE_AREA = 256 * 256
ARTEFACTS = {
    "scratches": artefacts.scratches,
    "etch_pits": artefacts.etch_pits,
    "pores": artefacts.pores,
    "inclusions": artefacts.inclusions,
}


def render_specimen(
    rng: np.random.Generator,
    shape: tuple[int, int],
    morphology: GrainMorphology,
    style: GrainStyle,
    imaging: ImagingModel | None = None,
) -> GrainMicrograph:
    """Draw one grain micrograph of the given morphology in the given style.

    The ``flat`` style gives exactly :func:`~smalldata_pl.generators.grains.render_grain_micrograph`'s image.
    Otherwise each stage (tessellation, texture, decorations, every artefact kind, imaging) draws from its own
    child of ``rng``, so switching one effect off leaves the rest of the sample unchanged.

    Args:
        rng: Random generator; the only source of randomness.
        shape: Height and width in pixels.
        morphology: Grain size, seed placement and elongation.
        style: Realism settings (see :class:`~smalldata_pl.generators.styles.GrainStyle`).
        imaging: Imaging model applied last; ``None`` uses the optical-microscope preset.

    Returns:
        The image (``(H, W, 3)`` when ``style.colour``) with instance map, boundary centre line, seeds, grain-size
        statistics and the footprints of twins, particles and artefacts.
    """
    if style.is_flat:
        return render_grain_micrograph(rng, shape, morphology, imaging)
    # Children of later effects are drawn last, so the earlier children (and samples without them) are as they were.
    children = [np.random.default_rng(seed) for seed in rng.integers(0, 2**63 - 1, 8 + len(ARTEFACTS))]
    style_rng, tessellation_rng, texture_rng, decoration_rng, imaging_rng, *artefact_rngs = children[
        : 5 + len(ARTEFACTS)
    ]
    drift_rng, preferred_rng, striation_rng = children[5 + len(ARTEFACTS) :]
    style = style.drawn(style_rng) if style.randomize > 0 else style
    spacing, seeds, instances = _grains(tessellation_rng, shape, morphology, style)
    count = int(instances.max()) + 1
    boundaries = grain_boundaries(instances)
    twins = twin_bands(decoration_rng, instances, np.empty((count, 2)), style.twin_probability, spacing)
    drift = style.etch_drift * smooth_field(drift_rng, shape, style.drift_scale * spacing) if style.etch_drift else 0.0
    image = _etched_grains(texture_rng, instances, twins, spacing, style, drift, preferred_rng)
    if style.striations > 0:
        image = image * (1.0 - _striations(striation_rng, instances, twins, spacing, style.striations))[..., None]
    image = image * (1.0 - _grooves(texture_rng, boundaries, spacing, style))[..., None]
    particles = boundary_particles_mask(decoration_rng, boundaries, style.boundary_particles, spacing)
    image[particles] = 0.08
    footprints = {}
    scale = shape[0] * shape[1] / REFERENCE_AREA
    for (name, draw), artefact_rng in zip(ARTEFACTS.items(), artefact_rngs, strict=True):
        number = int(artefact_rng.poisson(getattr(style, name) * scale))
        darkening, footprints[name] = draw(artefact_rng, shape, number)
        image = image * (1.0 - darkening)[..., None]
    image = image if style.colour else image[..., 0]
    return imaged_micrograph(
        image, imaging_rng, imaging, instances, boundaries, seeds, count, twins, particles, footprints
    )


def _grains(
    rng: np.random.Generator, shape: tuple[int, int], morphology: GrainMorphology, style: GrainStyle
) -> tuple[float, np.ndarray, np.ndarray]:
    """Seed spacing, seeds and instance map: weighted Voronoi on a warped grid when the style asks for it."""
    spacing = morphology.grain_size * min(shape) * float(np.exp(rng.normal(0.0, morphology.size_jitter)))
    count = max(2, round(shape[0] * shape[1] / (spacing**2 * morphology.aspect)))
    seeds = place_seeds(rng, count, shape, morphology.placement)
    angle = morphology.angle + rng.uniform(-morphology.angle_jitter, morphology.angle_jitter)
    if style.warp == 0 and style.size_sigma == 0 and style.roughness == 0:
        return spacing, seeds, tessellate(seeds, shape, morphology.aspect, angle)
    weights = np.exp(style.size_sigma * rng.standard_normal(count))
    displacement = np.stack(
        [
            style.warp * spacing * smooth_field(rng, shape, style.warp_scale * spacing)
            + style.roughness * smooth_field(rng, shape, 2.0)
            for _ in range(2)
        ]
    )
    return spacing, seeds, curved_tessellation(seeds, shape, weights, displacement, morphology.aspect, angle)


def _etched_grains(
    rng: np.random.Generator,
    instances: np.ndarray,
    twins: np.ndarray,
    spacing: float,
    style: GrainStyle,
    drift: np.ndarray | float,
    preferred_rng: np.random.Generator,
) -> np.ndarray:
    """``(H, W, C)`` grain colours before grooves: orientation contrast, shading, etch texture and relief.

    Twin bands are grains of their own orientation inside their parent, so they get their own colour. ``drift``
    (per pixel, smooth across boundaries) moves the etch response: along the interference colours in colour, in
    grey level otherwise, so colour changes gradually inside a grain and steps only at its boundaries.
    ``preferred_rng`` draws the specimen's preferred orientations when it has any (:func:`_preferred_orientations`).
    """
    count = int(instances.max()) + 1
    # Parents are 0..count-1 and their twin bands count..2*count-1: every per-grain property indexes by `key`.
    key = np.where(twins, instances + count, instances)
    orientation = rng.random(2 * count)
    brightness = np.clip(0.55 + style.contrast * rng.standard_normal(2 * count), 0.15, 0.95)
    if style.preferred_orientation > 0:
        orientation, brightness = _preferred_orientations(preferred_rng, orientation, brightness, style)
    if style.colour:
        positions = np.linspace(0.0, 1.0, len(INTERFERENCE_COLOURS))
        # Film thickness beyond the sequence's ends stays at its end colours (np.interp clamps).
        film = orientation[key] + drift
        tint = np.stack([np.interp(film, positions, channel) for channel in INTERFERENCE_COLOURS.T], axis=-1)
        base = tint * (brightness[key] / 0.55)[..., None]
    else:
        base = (brightness[key] + drift)[..., None]
    rows, cols = np.mgrid[0 : instances.shape[0], 0 : instances.shape[1]].astype(np.float64)
    area = np.maximum(np.bincount(instances.ravel(), minlength=count), 1)
    centre_rows = np.bincount(instances.ravel(), rows.ravel(), count) / area
    centre_cols = np.bincount(instances.ravel(), cols.ravel(), count) / area
    direction = rng.uniform(0.0, 2.0 * np.pi, 2 * count)
    slope = style.shading * rng.standard_normal(2 * count)
    offset_rows, offset_cols = rows - centre_rows[instances], cols - centre_cols[instances]
    shading = slope[key] * (offset_rows * np.cos(direction[key]) + offset_cols * np.sin(direction[key])) / spacing
    etch_rate = rng.uniform(0.3, 1.5, 2 * count)
    mottle = style.mottle * etch_rate[key] * smooth_field(rng, instances.shape, 1.2)
    height = smooth_field(rng, instances.shape, spacing)
    light = rng.uniform(0.0, 2.0 * np.pi)
    slope_rows, slope_cols = np.gradient(height)
    # The gradient of a unit field smoothed over `spacing` is about 1/spacing: rescale to a unit slope.
    relief = style.relief * spacing * (slope_rows * np.sin(light) + slope_cols * np.cos(light))
    return base * (1.0 + shading + mottle + relief)[..., None]


def _preferred_orientations(
    rng: np.random.Generator, orientation: np.ndarray, brightness: np.ndarray, style: GrainStyle
) -> tuple[np.ndarray, np.ndarray]:
    """Crystallographic texture: some grains take orientations near the specimen's preferred ones.

    A share ``style.preferred_orientation`` of the grains take one of the specimen's one to three preferred
    orientations (with a small spread), so neighbours often etch to nearly the same colour and their boundary
    shows only as a faint step or groove.

    The same draws are made whatever the (non-zero) share, so changing it changes which grains are textured,
    nothing else.
    """
    grains = len(orientation)
    preferred = rng.random(int(rng.integers(1, 4)))
    preferred_brightness = np.clip(0.55 + style.contrast * rng.standard_normal(preferred.size), 0.15, 0.95)
    choice = rng.integers(0, preferred.size, grains)
    textured = rng.random(grains) < style.preferred_orientation
    near = np.clip(preferred[choice] + 0.03 * rng.standard_normal(grains), 0.0, 1.0)
    near_brightness = np.clip(
        preferred_brightness[choice] + 0.2 * style.contrast * rng.standard_normal(grains), 0.15, 0.95
    )
    return np.where(textured, near, orientation), np.where(textured, near_brightness, brightness)


def _striations(
    rng: np.random.Generator, instances: np.ndarray, twins: np.ndarray, spacing: float, share: float
) -> np.ndarray:
    """Darkening of fine parallel lines inside a ``share`` of the grains: slip bands, deformation or etch striations.

    Each striated grain (a twin band counts as a grain of its own) gets one family of thin dark lines with its own
    direction, spacing (2.5-8 px) and depth, drawn per grain as its crystal orientation would set them, so the
    family stops at the grain's boundary and a striated neighbour's runs another way. A smooth phase field bends
    the lines a little and a smooth coverage field breaks them into bands, as real striations come and go across a
    grain. Lines end at boundaries but are no boundary: the segmenter must learn that a dense set of parallel
    edges is texture.
    """
    count = int(instances.max()) + 1
    key = np.where(twins, instances + count, instances)
    striated = rng.random(2 * count) < share
    angle = rng.uniform(0.0, np.pi, 2 * count)
    period = rng.uniform(2.5, 8.0, 2 * count)
    depth = rng.uniform(0.1, 0.45, 2 * count) * striated
    phase = rng.uniform(0.0, 2.0 * np.pi, 2 * count)
    rows, cols = np.mgrid[0 : instances.shape[0], 0 : instances.shape[1]].astype(np.float64)
    bend = 1.5 * smooth_field(rng, instances.shape, max(spacing / 2, 4.0))
    across = rows * np.sin(angle[key]) + cols * np.cos(angle[key])
    lines = (0.5 + 0.5 * np.cos(2.0 * np.pi * across / period[key] + phase[key] + bend)) ** 4
    coverage = np.clip(0.6 + smooth_field(rng, instances.shape, max(spacing / 3, 3.0)), 0.0, 1.0)
    return depth[key] * lines * coverage


def _grooves(rng: np.random.Generator, boundaries: np.ndarray, spacing: float, style: GrainStyle) -> np.ndarray:
    """Darkening of the etched boundary grooves: a Gaussian profile whose width and depth vary along them."""
    distance = ndimage.distance_transform_edt(~boundaries)
    # Smooth fields mapped through the normal CDF to uniform values spread over each range.
    width = np.interp(ndtr(smooth_field(rng, boundaries.shape, spacing)), [0.0, 1.0], style.groove_width)
    depth = np.interp(ndtr(smooth_field(rng, boundaries.shape, spacing)), [0.0, 1.0], style.groove_depth)
    return np.clip(depth, 0.0, 1.0) * np.exp(-((distance / np.maximum(width, 0.3)) ** 2))
