"""Backbones, heads and the LightningModules that train them."""

from smalldata_pl.models.backbone import create_backbone, layer_groups
from smalldata_pl.models.classifier import MicrographClassifier
from smalldata_pl.models.segmenter import MicrographSegmenter
from smalldata_pl.models.spectrum import SpectrumClassifier
from smalldata_pl.models.weights import PACKAGED_WEIGHTS, WeightLoadReport, load_backbone_weights

__all__ = [
    "PACKAGED_WEIGHTS",
    "MicrographClassifier",
    "MicrographSegmenter",
    "SpectrumClassifier",
    "WeightLoadReport",
    "create_backbone",
    "layer_groups",
    "load_backbone_weights",
]
