"""Fitting synthetic micrographs to unlabelled real ones: imaging-model calibration and grain-scale matching.

Both work by measuring the same image statistics on real target images and on synthetic renders, so the biases
of each estimate (texture read as noise, grooves read as grain structure) largely cancel between the two sides.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import curve_fit, minimize_scalar
from skimage.restoration import estimate_sigma

from smalldata_pl.generators.imaging import ImagingModel
from smalldata_pl.generators.renderers import Renderer

# ITU-R 601 luma, as in transforms.pipeline: the imaging model is grey, so colour targets are compared as grey.
_LUMA = np.array([0.299, 0.587, 0.114])
# Scale factors beyond this are clipped: a 4x zoom or shrink of a 128 px render leaves too few grains or pixels.
MAX_SCALE = 4.0


def grey(image: np.ndarray) -> np.ndarray:
    """An ``(H, W)`` or ``(H, W, C)`` float image as float64 grey (luma for RGB, alpha dropped)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return image
    if image.shape[2] in (2, 4):
        image = image[:, :, :-1]
    return image @ _LUMA if image.shape[2] == 3 else image.mean(axis=2)


def _plane(image: np.ndarray) -> np.ndarray:
    """Least-squares coefficients ``(a, b, c)`` of ``a + b x + c y`` with x, y in [-0.5, 0.5] across the image."""
    small = image[:: max(1, image.shape[0] // 64), :: max(1, image.shape[1] // 64)]
    rows, cols = np.mgrid[0 : small.shape[0], 0 : small.shape[1]]
    x = cols / max(small.shape[1] - 1, 1) - 0.5
    y = rows / max(small.shape[0] - 1, 1) - 0.5
    design = np.stack([np.ones(small.size), x.ravel(), y.ravel()], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, small.ravel(), rcond=None)
    return np.asarray(coefficients)


def _detrended(image: np.ndarray) -> np.ndarray:
    _, b, c = _plane(image)
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    x = cols / max(image.shape[1] - 1, 1) - 0.5
    y = rows / max(image.shape[0] - 1, 1) - 0.5
    return image - b * x - c * y


def noise_level(image: np.ndarray) -> float:
    """Standard deviation of white noise (wavelet median absolute deviation, scikit-image's ``estimate_sigma``)."""
    return float(estimate_sigma(image, channel_axis=None))


def sharpness(image: np.ndarray) -> float:
    """Strongest fine-scale gradients over the strongest coarse-scale ones; falls as blur grows.

    At a step edge blurred by ``b`` the Gaussian-derivative peak at scale ``s`` is proportional to
    ``1 / sqrt(b**2 + s**2)``, so the ratio of the 99th percentiles at two scales depends on the blur much more
    than on what the image shows (band energies would also count grooves and texture as sharpness).
    """
    fine, coarse = (np.percentile(ndimage.gaussian_gradient_magnitude(image, s), 99) for s in (1.0, 2.5))
    return float(fine / max(coarse, 1e-9))


def illumination_gradient(image: np.ndarray) -> float:
    """Slope of the fitted brightness plane across the image relative to its mean (``ImagingModel.gradient``)."""
    a, b, c = _plane(image)
    return float(np.hypot(b, c) / max(abs(a), 1e-3))


def intensity_spread(image: np.ndarray) -> float:
    """5-95 percentile range of the image with its illumination plane removed (grain-to-grain contrast)."""
    low, high = np.percentile(_detrended(image), [5, 95])
    return float(high - low)


def intensity_level(image: np.ndarray) -> float:
    """Median grey level."""
    return float(np.median(image))


# Each calibrated parameter of ImagingModel, the statistic that mainly drives it, and its search range.
STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "gradient": illumination_gradient,
    "contrast": intensity_spread,
    "offset": intensity_level,
    "blur_sigma": sharpness,
    "read_noise": noise_level,
}
BOUNDS: dict[str, tuple[float, float]] = {
    "gradient": (0.0, 1.0),
    "contrast": (0.1, 4.0),
    "offset": (-0.5, 0.5),
    "blur_sigma": (0.0, 4.0),
    "read_noise": (0.0, 0.3),
}


@dataclass(frozen=True)
class ImageStatistics:
    """Median image statistics of a set of micrographs, one per calibrated imaging parameter."""

    gradient: float
    contrast: float
    offset: float
    blur_sigma: float
    read_noise: float


def image_statistics(images: Sequence[np.ndarray]) -> ImageStatistics:
    """Median of each statistic in :data:`STATISTICS` over ``images`` (any channels; compared as grey)."""
    greys = [grey(image) for image in images]
    if not greys:
        raise ValueError("image_statistics needs at least one image")
    return ImageStatistics(**{name: float(np.median([f(g) for g in greys])) for name, f in STATISTICS.items()})


def calibrate_imaging(
    ideal: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    base: ImagingModel,
    sweeps: int = 3,
    seed: int = 0,
) -> ImagingModel:
    """Fit blur, read noise, illumination gradient, contrast and offset so imaged ``ideal`` renders match ``targets``.

    Coordinate search: each parameter in turn is set by a bounded scalar search (scipy's ``minimize_scalar``)
    so that the median of its statistic over the imaged renders equals that of the targets, repeated ``sweeps``
    times because the parameters interact (contrast also scales the noise). Every evaluation images the renders
    with the same seeds (common random numbers), so the objective is deterministic. The other parameters (dose,
    scan jitter, streaks, gamma, quantisation) keep ``base``'s values; ``base.randomize`` is kept for training.

    Args:
        ideal: Renders without imaging effects (the ``clean`` preset), at the pixel scale of the targets.
        targets: Real target images as the model sees them (any channels; compared as grey).
        base: Starting imaging model (the configured preset).
        sweeps: Passes over the parameters.
        seed: Seed of the imaging noise during the search.

    Returns:
        ``base`` with the five fitted parameters.
    """
    if not ideal or not targets:
        raise ValueError("calibrate_imaging needs ideal renders and target images")
    goal = image_statistics(targets)
    model = replace(base, randomize=0.0)
    for _ in range(sweeps):
        for name, statistic in STATISTICS.items():
            model = _fit_parameter(model, name, statistic, getattr(goal, name), ideal, seed)
    return replace(model, randomize=base.randomize)


def _fit_parameter(
    model: ImagingModel,
    name: str,
    statistic: Callable[[np.ndarray], float],
    goal: float,
    renders: Sequence[np.ndarray],
    seed: int,
) -> ImagingModel:
    def mismatch(value: float) -> float:
        changes: dict[str, Any] = {name: float(value)}
        candidate = replace(model, **changes)
        # Imaged in their own channels (noise is per channel), compared as grey like the targets.
        measured = [
            statistic(grey(candidate.apply(r, np.random.default_rng([seed, i])))) for i, r in enumerate(renders)
        ]
        return (float(np.median(measured)) - goal) ** 2

    low, high = BOUNDS[name]
    result = minimize_scalar(mismatch, bounds=(low, high), method="bounded", options={"xatol": 1e-3 * (high - low)})
    fitted: dict[str, Any] = {name: float(result.x)}
    return replace(model, **fitted)


def describe(model: ImagingModel) -> str:
    """The calibrated parameters of an imaging model, for logs."""
    return ", ".join(f"{f.name}={getattr(model, f.name):.3g}" for f in fields(ImageStatistics))


def grain_length(image: np.ndarray) -> float:
    """Correlation length of the grain mosaic in pixels, from the image's variogram: a grain-size scale.

    Grains have independent grey levels (or colours), so the mean squared difference of two points at distance
    ``r`` grows as the chance that a boundary lies between them, ``1 - exp(-r / L)`` for a random mosaic, with
    ``L`` about one mean linear intercept. ``nugget + sill * (1 - exp(-r / L))`` is fitted to the radial
    variogram (scipy's ``curve_fit``), so pixel noise (the nugget) and grains as large as the image (an
    unreached sill) do not bias ``L``. The illumination plane is removed first; for colour images the channels'
    variograms are summed, so hue differences between grains count.
    """
    image = np.asarray(image, dtype=np.float64)
    channels = [image] if image.ndim == 2 else [image[:, :, c] for c in range(min(image.shape[2], 3))]
    height, width = channels[0].shape
    size = (2 * height, 2 * width)  # zero padding: pairs inside the image only, no wrap-around
    ones = np.ones((height, width))
    pairs = _correlate(ones, ones, size)
    variogram = np.zeros(size)
    for channel in channels:
        flat = _detrended(channel)
        squares = flat * flat
        variogram += 0.5 * (_correlate(squares, ones, size) + _correlate(ones, squares, size))
        variogram -= _correlate(flat, flat, size)
    variogram /= np.maximum(pairs, 1.0)
    lags_y = np.fft.fftfreq(size[0], 1.0 / size[0])[:, None]
    lags_x = np.fft.fftfreq(size[1], 1.0 / size[1])[None, :]
    radius = np.rint(np.hypot(lags_y, lags_x)).astype(int)
    limit = min(height, width) // 2
    inside = radius < limit
    counts = np.maximum(np.bincount(radius[inside], None, limit), 1)
    profile = np.bincount(radius[inside], variogram[inside], limit) / counts
    lags, values = np.arange(1, limit), profile[1:]
    if values[-1] <= 0:
        raise ValueError("grain_length needs an image with some contrast; this one is flat")

    def model(r: np.ndarray, nugget: float, sill: float, length: float) -> np.ndarray:
        return nugget + sill * (1.0 - np.exp(-r / length))

    start = (values[0], values[-1], limit / 4)
    (_, _, length), _ = curve_fit(model, lags, values, p0=start, bounds=([0, 0, 0.3], [np.inf, np.inf, 20 * limit]))
    return float(length)


def _correlate(first: np.ndarray, second: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Sums of ``first(x) * second(x + r)`` over every lag ``r`` (FFT, zero-padded to ``size``)."""
    return np.fft.irfft2(np.conj(np.fft.rfft2(first, s=size)) * np.fft.rfft2(second, s=size), s=size)


def scale_factor(synthetic: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
    """Zoom that gives synthetic images the targets' grain size: ratio of median :func:`grain_length`.

    Clipped to ``[1 / MAX_SCALE, MAX_SCALE]``.
    """
    if not synthetic or not targets:
        raise ValueError("scale_factor needs synthetic and target images")
    ratio = np.median([grain_length(t) for t in targets]) / np.median([grain_length(s) for s in synthetic])
    return float(np.clip(ratio, 1.0 / MAX_SCALE, MAX_SCALE))


def rescale_sample(image: np.ndarray, mask: np.ndarray, factor: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Zoom an image (linear) and its mask (nearest) by ``factor`` into a ``size`` square.

    A zoom in (``factor > 1``) keeps the central part; a zoom out fills the square by mirroring the shrunken
    sample at its edges, which continues grains across the mirror line, so no boundary is invented there.
    """
    if factor > 1:
        crop = min(int(np.ceil(size / factor)) + 2, *image.shape[:2])
        top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
        image, mask = image[top : top + crop, left : left + crop], mask[top : top + crop, left : left + crop]
    zoom = (factor, factor) + (1,) * (image.ndim - 2)
    image = ndimage.zoom(image, zoom, order=1, mode="nearest", grid_mode=True)
    mask = ndimage.zoom(mask, zoom[:2], order=0, mode="nearest", grid_mode=True)
    pad = [(max(0, (size - n) // 2), max(0, size - n - (size - n) // 2)) for n in image.shape[:2]]
    image = np.pad(image, pad + [(0, 0)] * (image.ndim - 2), mode="symmetric")
    mask = np.pad(mask, pad, mode="symmetric")
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size], mask[top : top + size, left : left + size]


@dataclass(frozen=True)
class AdaptedRenderer:
    """A renderer whose samples are zoomed to the target's grain scale and then imaged by a calibrated model.

    With ``imaging`` set, ``renderer`` should draw ideal images (the ``clean`` preset), so the calibrated noise
    and blur act at the final pixel scale, as in the real microscope.

    Args:
        renderer: The generator's renderer; its targets must be masks when ``scale != 1``.
        size: Side of the output images.
        scale: Zoom factor (> 1 makes grains larger).
        imaging: Imaging model applied after the zoom; ``None`` keeps the renderer's own imaging.
    """

    renderer: Renderer
    size: int
    scale: float = 1.0
    imaging: ImagingModel | None = None

    def __call__(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, int | np.ndarray]:
        image, target = self.renderer(rng, index)
        if self.scale != 1.0:
            if not isinstance(target, np.ndarray):
                raise ValueError("scale matching needs mask targets; image-level labels may depend on grain size")
            image, target = rescale_sample(image, target, self.scale, self.size)
        if self.imaging is not None:
            image = self.imaging.apply(np.clip(image, 0.0, 1.0), rng)
        return np.asarray(image, dtype=np.float32), target
