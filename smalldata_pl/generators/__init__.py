"""Procedural micrograph generators: pure numpy/scipy/scikit-image, no torch."""

from smalldata_pl.generators.grains import (
    GRAIN_MORPHOLOGIES,
    GrainMicrograph,
    GrainMorphology,
    mean_intercept_length,
    render_grain_micrograph,
    tessellate,
)
from smalldata_pl.generators.imaging import IMAGING_PRESETS, ImagingModel

__all__ = [
    "GRAIN_MORPHOLOGIES",
    "IMAGING_PRESETS",
    "GrainMicrograph",
    "GrainMorphology",
    "ImagingModel",
    "mean_intercept_length",
    "render_grain_micrograph",
    "tessellate",
]
