"""Physics-informed imaging model: how a microscope turns an ideal microstructure into a noisy micrograph."""

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ImagingModel:
    """The chain of imaging effects, applied in the order a detector sees them.

    Every effect is off at its neutral value. With ``randomize > 0`` each strength is drawn per sample from
    ``value * U(1 - randomize, 1 + randomize)`` (domain randomisation, to close the sim-to-real gap).

    Args:
        blur_sigma: Point-spread function as a Gaussian, sigma in pixels (beam or optics resolution).
        dose: Mean detected electrons/photons per pixel at full brightness; Poisson shot noise. ``0`` = off.
        read_noise: Standard deviation of additive Gaussian detector noise.
        gradient: Amplitude of a slow linear illumination or charging gradient in a random direction.
        scan_jitter: Standard deviation in pixels of the horizontal shift of each scan line (SEM raster).
        streaks: Probability that a scan line carries a brightness streak (charging, beam instability).
        gamma: Detector gamma; 1 = linear.
        contrast: Gain around mid-grey; 1 = unchanged.
        offset: Brightness offset.
        bit_depth: Quantisation to 8 or 16 bits; ``0`` keeps floats.
        randomize: Relative per-sample spread of all strengths above.
    """

    blur_sigma: float = 0.0
    dose: float = 0.0
    read_noise: float = 0.0
    gradient: float = 0.0
    scan_jitter: float = 0.0
    streaks: float = 0.0
    gamma: float = 1.0
    contrast: float = 1.0
    offset: float = 0.0
    bit_depth: int = 8
    randomize: float = 0.0

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Image an ideal float image in [0, 1], ``(H, W)`` or ``(H, W, C)``; returns a float64 image in [0, 1].

        Optics, raster and illumination act on all channels alike; shot and read noise are independent per channel.
        """
        model = self._drawn(rng) if self.randomize > 0 else self
        out = np.asarray(image, dtype=np.float64)
        # Spatial effects broadcast over a trailing colour axis; blurring must not mix the channels.
        spatial = (slice(None), slice(None)) + (None,) * (out.ndim - 2)
        if model.blur_sigma > 0:
            sigma = (model.blur_sigma, model.blur_sigma) + (0.0,) * (out.ndim - 2)
            out = ndimage.gaussian_filter(out, sigma, mode="reflect")
        if model.scan_jitter > 0:
            out = _jitter_lines(out, rng, model.scan_jitter)
        if model.gradient != 0:
            out = out * (1.0 + _linear_ramp(out.shape, rng, model.gradient)[spatial])
        if model.dose > 0:
            out = rng.poisson(np.clip(out, 0.0, None) * model.dose) / model.dose
        if model.read_noise > 0:
            out = out + rng.normal(0.0, model.read_noise, out.shape)
        if model.streaks > 0:
            lines = rng.random(out.shape[0]) < model.streaks
            out[lines] += rng.normal(0.0, 0.15, (int(np.count_nonzero(lines)), 1) + (1,) * (out.ndim - 2))
        out = np.clip((out - 0.5) * model.contrast + 0.5 + model.offset, 0.0, 1.0) ** model.gamma
        if model.bit_depth:
            levels = 2**model.bit_depth - 1
            out = np.round(out * levels) / levels
        return out

    def _drawn(self, rng: np.random.Generator) -> "ImagingModel":
        """A copy with each strength scaled by an independent random factor."""
        spread = self.randomize

        def jitter(value: float) -> float:
            return float(value * rng.uniform(1.0 - spread, 1.0 + spread))

        return replace(
            self,
            blur_sigma=jitter(self.blur_sigma),
            dose=jitter(self.dose),
            read_noise=jitter(self.read_noise),
            gradient=jitter(self.gradient),
            scan_jitter=jitter(self.scan_jitter),
            streaks=min(1.0, jitter(self.streaks)),
            gamma=jitter(self.gamma - 1.0) + 1.0,
            contrast=jitter(self.contrast - 1.0) + 1.0,
            offset=float(rng.uniform(-spread, spread) * 0.1 + self.offset),
            randomize=0.0,
        )


def _linear_ramp(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """A plane through the image centre, zero-mean, peaking at +-amplitude/2 in a random direction."""
    theta = rng.uniform(0.0, 2.0 * np.pi)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    ramp = np.cos(theta) * (cols / max(shape[1] - 1, 1) - 0.5) + np.sin(theta) * (rows / max(shape[0] - 1, 1) - 0.5)
    return amplitude * ramp


def _jitter_lines(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Shift each row horizontally by a random sub-pixel amount (linear interpolation), like an unstable raster."""
    shifts = np.asarray(rng.normal(0.0, sigma, image.shape[0]))
    position = np.clip(np.arange(image.shape[1])[None, :] - shifts[:, None], 0, image.shape[1] - 1)
    left = np.floor(position).astype(int)
    right = np.minimum(left + 1, image.shape[1] - 1)
    weight = (position - left).reshape(left.shape + (1,) * (image.ndim - 2))
    rows = np.arange(image.shape[0])[:, None]
    return image[rows, left] * (1 - weight) + image[rows, right] * weight


IMAGING_PRESETS: dict[str, ImagingModel] = {
    "clean": ImagingModel(),
    "optical": ImagingModel(blur_sigma=1.0, read_noise=0.02, gradient=0.15, randomize=0.3),
    "sem_se": ImagingModel(
        blur_sigma=0.7,
        dose=60.0,
        read_noise=0.02,
        gradient=0.1,
        scan_jitter=0.3,
        streaks=0.01,
        gamma=0.9,
        randomize=0.4,
    ),
    "sem_bse": ImagingModel(blur_sigma=1.0, dose=25.0, read_noise=0.03, gradient=0.05, contrast=1.2, randomize=0.4),
}
