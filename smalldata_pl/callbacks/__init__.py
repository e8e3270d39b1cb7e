"""Callbacks: staged unfreezing with discriminative learning rates, checkpoints, and what gets drawn or written."""

from smalldata_pl.callbacks.adabn import AdaptiveBatchNorm, adapt_batch_norm
from smalldata_pl.callbacks.checkpoints import LastAndBestCheckpoint
from smalldata_pl.callbacks.hparams import HParamsSummary
from smalldata_pl.callbacks.linear_probe import LinearProbe
from smalldata_pl.callbacks.self_training import SelfTraining
from smalldata_pl.callbacks.staged_unfreezing import Stage, StagedUnfreezing
from smalldata_pl.callbacks.visual import GradCamGrid, InputSampleGrid
from smalldata_pl.callbacks.writers import PredictionWriter

__all__ = [
    "AdaptiveBatchNorm",
    "GradCamGrid",
    "HParamsSummary",
    "InputSampleGrid",
    "LastAndBestCheckpoint",
    "LinearProbe",
    "PredictionWriter",
    "SelfTraining",
    "Stage",
    "StagedUnfreezing",
    "adapt_batch_norm",
]
