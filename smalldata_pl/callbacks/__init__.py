"""Callbacks: staged unfreezing with discriminative learning rates, and what gets drawn to TensorBoard."""

from smalldata_pl.callbacks.staged_unfreezing import Stage, StagedUnfreezing
from smalldata_pl.callbacks.visual import InputSampleGrid
from smalldata_pl.callbacks.writers import PredictionWriter

__all__ = ["InputSampleGrid", "PredictionWriter", "Stage", "StagedUnfreezing"]
