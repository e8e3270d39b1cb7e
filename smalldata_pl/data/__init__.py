"""Datasets, DataModules, pipelines and splits."""

from smalldata_pl.data.base import MicrographDataModule
from smalldata_pl.data.folder import MicrographFolder, MicrographFolderDataset
from smalldata_pl.data.synthetic_grains import SyntheticGrains, SyntheticGrainsDataset
from smalldata_pl.data.uhcs import UHCS3, download_uhcs3

__all__ = [
    "UHCS3",
    "MicrographDataModule",
    "MicrographFolder",
    "MicrographFolderDataset",
    "SyntheticGrains",
    "SyntheticGrainsDataset",
    "download_uhcs3",
]
