"""Datasets, DataModules, pipelines and splits."""

from smalldata_pl.data.base import MicrographDataModule
from smalldata_pl.data.folder import MicrographFolder, MicrographFolderDataset
from smalldata_pl.data.procedural import ProceduralDataset
from smalldata_pl.data.segmentation import SegmentationFolder, Superalloy
from smalldata_pl.data.spectra import SyntheticSpectra
from smalldata_pl.data.synthetic_datamodules import (
    ProceduralDataModule,
    SyntheticGrainBoundaries,
    SyntheticGrains,
    SyntheticPrecipitates,
)
from smalldata_pl.data.uhcs import UHCS3, download_uhcs3

__all__ = [
    "UHCS3",
    "MicrographDataModule",
    "MicrographFolder",
    "MicrographFolderDataset",
    "ProceduralDataModule",
    "ProceduralDataset",
    "SegmentationFolder",
    "Superalloy",
    "SyntheticGrainBoundaries",
    "SyntheticGrains",
    "SyntheticPrecipitates",
    "SyntheticSpectra",
    "download_uhcs3",
]
