"""Synthetic diffraction spectra as a DataModule: phase identity (single or multi-label) and phase fractions."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from smalldata_pl.data.sampling import EpochSampler, split_key
from smalldata_pl.data.synthetic.spectra import (
    BUILTIN_LIBRARY,
    Phase,
    SpectrumParams,
    load_phase_library,
    render_spectrum,
)


@dataclass(frozen=True)
class SpectrumRenderer:
    """Draws a phase mixture and its pattern: 1 to ``max_phases`` phases with Dirichlet fractions."""

    phases: tuple[Phase, ...]
    params: SpectrumParams
    max_phases: int = 2

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        count = int(rng.integers(1, min(self.max_phases, len(self.phases)) + 1))
        present = rng.choice(len(self.phases), count, replace=False)
        fractions = np.zeros(len(self.phases))
        fractions[present] = rng.dirichlet(np.full(count, 2.0))
        return render_spectrum(rng, list(self.phases), fractions, self.params), fractions


class SpectrumDataset(Dataset):
    """Spectra whose sample ``i`` is a pure function of ``(seed, offset + i)``.

    Samples: ``spectrum`` (float32 ``[1, points]``), ``label`` (dominant phase), ``labels`` (multi-hot presence),
    ``fractions`` (weight fractions) and ``group``.
    """

    def __init__(self, length: int, renderer: SpectrumRenderer, seed: int = 0, offset: int = 0) -> None:
        self.length, self.renderer, self.seed, self.offset = length, renderer, seed, offset

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        _, index = split_key(key)
        spectrum, fractions = self.renderer(np.random.default_rng([self.seed, self.offset + index]))
        return {
            "spectrum": torch.from_numpy(spectrum)[None],
            "label": torch.tensor(int(np.argmax(fractions))),
            "labels": torch.from_numpy((fractions > 0).astype(np.float32)),
            "fractions": torch.from_numpy(fractions.astype(np.float32)),
            "group": f"spectrum:{self.seed}:{self.offset + index}",
        }


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
