"""LightningModules: a shared transfer-learning base and one task per module."""

from smalldata_pl.tasks.base import TransferModule
from smalldata_pl.tasks.classification import MicrographClassifier
from smalldata_pl.tasks.segmentation import MicrographSegmenter
from smalldata_pl.tasks.spectra import SpectrumClassifier

__all__ = ["MicrographClassifier", "MicrographSegmenter", "SpectrumClassifier", "TransferModule"]
