"""LightningDataModules: real folders and manifests, UHCS-3, segmentation sets, procedural data, spectra."""

from smalldata_pl.datamodules.base import MicrographDataModule
from smalldata_pl.datamodules.folder import MicrographFolder
from smalldata_pl.datamodules.procedural import (
    ProceduralDataModule,
    SyntheticGrainBoundaries,
    SyntheticGrains,
    SyntheticPrecipitates,
)
from smalldata_pl.datamodules.segmentation import SegmentationFolder, Superalloy
from smalldata_pl.datamodules.spectra import SyntheticSpectra
from smalldata_pl.datamodules.uhcs3 import UHCS3

__all__ = [
    "UHCS3",
    "MicrographDataModule",
    "MicrographFolder",
    "ProceduralDataModule",
    "SegmentationFolder",
    "Superalloy",
    "SyntheticGrainBoundaries",
    "SyntheticGrains",
    "SyntheticPrecipitates",
    "SyntheticSpectra",
]
