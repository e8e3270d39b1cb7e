"""Callbacks: staged unfreezing with discriminative learning rates, checkpoints, and what gets drawn or written."""

from smalldata_pl.callbacks.checkpoints import LastAndBestCheckpoint
from smalldata_pl.callbacks.hparams import HParamsSummary
from smalldata_pl.callbacks.staged_unfreezing import Stage, StagedUnfreezing
from smalldata_pl.callbacks.visual import GradCamGrid, InputSampleGrid
from smalldata_pl.callbacks.writers import PredictionWriter

__all__ = [
    "GradCamGrid",
    "HParamsSummary",
    "InputSampleGrid",
    "LastAndBestCheckpoint",
    "PredictionWriter",
    "Stage",
    "StagedUnfreezing",
]
