"""Renderers: picklable callables turning ``(rng, index)`` into a sample of a generator, with its target."""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import binary_dilation

from smalldata_pl.generators.grains import GRAIN_MORPHOLOGIES, GrainMorphology, render_grain_micrograph
from smalldata_pl.generators.imaging import IMAGING_PRESETS
from smalldata_pl.generators.precipitates import PrecipitateParams, render_precipitates
from smalldata_pl.generators.specimen import render_specimen
from smalldata_pl.generators.spectra import Phase, SpectrumParams, render_spectrum
from smalldata_pl.generators.styles import GRAIN_STYLES, GrainStyle

# A renderer turns (rng, global index) into a float image and its target: an int label or an int mask.
Renderer = Callable[[np.random.Generator, int], tuple[np.ndarray, int | np.ndarray]]


@dataclass(frozen=True)
class GrainClassRenderer:
    """Grain micrographs labelled by morphology; class ``index % len(morphologies)`` keeps classes balanced."""

    size: int
    imaging: str = "optical"
    morphologies: tuple[GrainMorphology, ...] = GRAIN_MORPHOLOGIES

    def __call__(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, int]:
        label = index % len(self.morphologies)
        micrograph = render_grain_micrograph(
            rng, (self.size, self.size), self.morphologies[label], IMAGING_PRESETS[self.imaging]
        )
        return micrograph.image, label


@dataclass(frozen=True)
class GrainBoundaryRenderer:
    """Grain micrographs with their boundary masks (0 grain interior, 1 boundary), any morphology.

    The mask is the boundary centre line dilated to ``boundary_width`` pixels whatever groove the style draws,
    so the label width is the DataModule's choice; artefacts and twin bands are never in it. A ``colour`` style
    gives ``(H, W, 3)`` images (the pipeline converts them to ``in_chans``). A tuple of styles is a mixture: each
    style draws every morphology equally often (sample ``i`` takes style ``i // morphologies % styles``).
    """

    size: int
    imaging: str = "optical"
    boundary_width: int = 1
    style: GrainStyle | tuple[GrainStyle, ...] = GRAIN_STYLES["flat"]

    def __call__(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]:
        morphology = GRAIN_MORPHOLOGIES[index % len(GRAIN_MORPHOLOGIES)]
        styles = self.style if isinstance(self.style, tuple) else (self.style,)
        style = styles[index // len(GRAIN_MORPHOLOGIES) % len(styles)]
        micrograph = render_specimen(rng, (self.size, self.size), morphology, style, IMAGING_PRESETS[self.imaging])
        mask = (
            binary_dilation(micrograph.boundaries, iterations=self.boundary_width - 1)
            if self.boundary_width > 1
            else micrograph.boundaries
        )
        return micrograph.image, mask.astype(np.uint8)


@dataclass(frozen=True)
class PrecipitateRenderer:
    """Gamma/gamma' micrographs with phase masks (0 matrix, 1 secondary, 2 tertiary)."""

    size: int
    imaging: str = "sem_se"
    params: PrecipitateParams = field(default_factory=PrecipitateParams)

    def __call__(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]:
        micrograph = render_precipitates(rng, (self.size, self.size), self.params, IMAGING_PRESETS[self.imaging])
        return micrograph.image, micrograph.mask


@dataclass(frozen=True)
class SpectrumRenderer:
    """Draws a phase mixture and its pattern: 1 to ``max_phases`` phases with Dirichlet fractions."""

    phases: tuple[Phase, ...]
    params: SpectrumParams
    max_phases: int = 2

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        count = int(rng.integers(1, min(self.max_phases, len(self.phases)) + 1))
        present = rng.choice(len(self.phases), count, replace=False)
        fractions = np.zeros(len(self.phases))
        fractions[present] = rng.dirichlet(np.full(count, 2.0))
        return render_spectrum(rng, list(self.phases), fractions, self.params), fractions
