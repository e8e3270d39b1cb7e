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
from smalldata_pl.generators.specimen import render_specimen
from smalldata_pl.generators.styles import GRAIN_STYLES, GrainStyle, resolve_style, resolve_styles

__all__ = [
    "GRAIN_MORPHOLOGIES",
    "GRAIN_STYLES",
    "IMAGING_PRESETS",
    "GrainMicrograph",
    "GrainMorphology",
    "GrainStyle",
    "ImagingModel",
    "mean_intercept_length",
    "render_grain_micrograph",
    "render_specimen",
    "resolve_style",
    "resolve_styles",
    "tessellate",
]
