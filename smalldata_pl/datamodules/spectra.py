"""Synthetic diffraction spectra as a DataModule: phase identity (single or multi-label) and phase fractions."""

from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from smalldata_pl.datasets.sampling import EpochSampler
from smalldata_pl.datasets.spectra import SpectrumDataset
from smalldata_pl.generators.renderers import SpectrumRenderer
from smalldata_pl.generators.spectra import BUILTIN_LIBRARY, SpectrumParams, load_phase_library


class SyntheticSpectra(LightningDataModule):
    """X-ray diffraction patterns of phase mixtures from a phase library (Cu K-alpha built in).

    Args:
        library: CSV ``phase,two_theta,intensity``; ``None`` uses the built-in ferrite/austenite/cementite.
        max_phases: Most phases in one mixture (1 = single-phase patterns).
        points: Samples per pattern.
        crystallite_size: Mean crystallite size in nm.
        strain: Lattice strain spread.
        texture: Preferred-orientation spread of peak intensities.
        counts: Peak counts (noise level).
        train_size: Training patterns.
        val_size: Validation patterns.
        test_size: Test patterns.
        batch_size: Patterns per batch.
        num_workers: Loader workers.
        seed: Generator seed.
    """

    def __init__(
        self,
        library: str | None = None,
        max_phases: int = 2,
        points: int = 2048,
        crystallite_size: float = 40.0,
        strain: float = 0.002,
        texture: float = 0.25,
        counts: float = 2000.0,
        train_size: int = 2048,
        val_size: int = 512,
        test_size: int = 512,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        phases = load_phase_library(Path(library) if library else BUILTIN_LIBRARY)
        params = SpectrumParams(
            points=points, crystallite_size=crystallite_size, strain=strain, texture=texture, counts=counts
        )
        self.renderer = SpectrumRenderer(tuple(phases), params, max_phases)
        self.class_names = [p.name for p in phases]
        self.sizes = (train_size, val_size, test_size)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.in_chans = 1

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str) -> None:
        train, val, test = self.sizes
        self.train_dataset = SpectrumDataset(train, self.renderer, self.seed, 0)
        self.val_dataset = SpectrumDataset(val, self.renderer, self.seed, train)
        self.test_dataset = SpectrumDataset(test, self.renderer, self.seed, train + val)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            self.batch_size,
            sampler=EpochSampler(len(dataset), shuffle, self.seed),  # type: ignore[arg-type]
            generator=torch.Generator().manual_seed(self.seed),  # keeps the global RNG for the model alone
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, False)
