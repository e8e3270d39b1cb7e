"""Plain ``nn.Module`` building blocks: timm backbones and their weights, heads, decoders, losses."""

from smalldata_pl.models.backbone import create_backbone, layer_groups
from smalldata_pl.models.heads import ClassificationHead
from smalldata_pl.models.spectrum_cnn import SpectrumCNN
from smalldata_pl.models.unet import UNetDecoder, sliding_window
from smalldata_pl.models.weights import PACKAGED_WEIGHTS, WeightLoadReport, load_backbone_weights

__all__ = [
    "PACKAGED_WEIGHTS",
    "ClassificationHead",
    "SpectrumCNN",
    "UNetDecoder",
    "WeightLoadReport",
    "create_backbone",
    "layer_groups",
    "load_backbone_weights",
    "sliding_window",
]
