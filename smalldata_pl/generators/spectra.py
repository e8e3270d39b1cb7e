"""Synthetic 1-D diffraction patterns from a phase library: pseudo-Voigt peaks, broadening, strain, texture, noise."""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CU_K_ALPHA = 1.5406  # Angstrom
BUILTIN_LIBRARY = Path(__file__).with_name("phases_cu_ka.csv")


@dataclass(frozen=True)
class Phase:
    """A phase's reflections: peak positions (degrees 2-theta) and relative intensities."""

    name: str
    positions: np.ndarray
    intensities: np.ndarray


def load_phase_library(path: str | Path = BUILTIN_LIBRARY) -> list[Phase]:
    """Read a ``phase,two_theta,intensity`` CSV (users add their own phases this way).

    Raises:
        ValueError: If the CSV lacks a column or a phase has no peaks.
    """
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"phase", "two_theta", "intensity"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"phase library {path} lacks column(s) {sorted(missing)}")
        peaks: dict[str, list[tuple[float, float]]] = {}
        for row in reader:
            peaks.setdefault(row["phase"], []).append((float(row["two_theta"]), float(row["intensity"])))
    return [
        Phase(name, np.array([p for p, _ in v]), np.array([i for _, i in v]) / max(i for _, i in v))
        for name, v in peaks.items()
    ]


@dataclass(frozen=True)
class SpectrumParams:
    """Physics of the simulated pattern.

    Args:
        two_theta_range: Scan range in degrees.
        points: Number of samples.
        crystallite_size: Mean crystallite size in nm (Scherrer broadening; smaller = broader peaks).
        strain: Standard deviation of the lattice strain (peak shift -2 eps tan(theta)).
        texture: Spread of preferred-orientation intensity factors (log-normal sigma per peak).
        eta: Lorentzian fraction of the pseudo-Voigt profile.
        counts: Peak height in counts (Poisson noise scales with it).
        background: Height of the smooth background relative to the strongest peak.
        read_noise: Gaussian detector noise in counts.
        instrument_fwhm: Instrumental broadening in degrees.
    """

    two_theta_range: tuple[float, float] = (30.0, 100.0)
    points: int = 2048
    crystallite_size: float = 40.0
    strain: float = 0.002
    texture: float = 0.25
    eta: float = 0.5
    counts: float = 2000.0
    background: float = 0.15
    read_noise: float = 5.0
    instrument_fwhm: float = 0.08


def two_theta_axis(params: SpectrumParams) -> np.ndarray:
    """The 2-theta sample positions."""
    return np.linspace(*params.two_theta_range, params.points)


def render_spectrum(
    rng: np.random.Generator, phases: list[Phase], fractions: np.ndarray, params: SpectrumParams = SpectrumParams()
) -> np.ndarray:
    """A noisy pattern (float32, normalised to its maximum) of a phase mixture with the given weight fractions."""
    axis = two_theta_axis(params)
    pattern = np.zeros_like(axis)
    for phase, fraction in zip(phases, fractions, strict=True):
        if fraction <= 0:
            continue
        theta = np.deg2rad(phase.positions / 2)
        size = params.crystallite_size * float(np.exp(rng.normal(0.0, 0.2)))
        scherrer = np.rad2deg(0.9 * CU_K_ALPHA / (size * 10 * np.cos(theta)))  # nm -> Angstrom
        fwhm = np.sqrt(scherrer**2 + params.instrument_fwhm**2)
        strain = rng.normal(0.0, params.strain)
        centres = phase.positions - np.rad2deg(2 * strain * np.tan(theta))
        heights = phase.intensities * np.exp(rng.normal(0.0, params.texture, len(theta))) * fraction
        for centre, width, height in zip(centres, fwhm, heights, strict=True):
            pattern += height * _pseudo_voigt(axis, centre, width, params.eta)
    pattern /= max(pattern.max(), 1e-12)
    x = (axis - axis[0]) / (axis[-1] - axis[0])
    background = params.background * (rng.uniform(0.5, 1.5) * np.exp(-3 * x) + rng.uniform(0.0, 0.3) * x)
    counts = rng.poisson((pattern + background) * params.counts) + rng.normal(0.0, params.read_noise, len(axis))
    return (counts / max(counts.max(), 1e-12)).astype(np.float32)


def _pseudo_voigt(x: np.ndarray, centre: float, fwhm: float, eta: float) -> np.ndarray:
    """Unit-height pseudo-Voigt profile."""
    z = (x - centre) / (fwhm / 2)
    return eta / (1 + z**2) + (1 - eta) * np.exp(-np.log(2) * z**2)
