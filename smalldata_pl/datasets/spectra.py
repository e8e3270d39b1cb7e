"""Synthetic spectra as a torch Dataset: sample ``i`` is a pure function of ``(seed, offset + i)``."""

import numpy as np
import torch
from torch.utils.data import Dataset

from smalldata_pl.datasets.sampling import split_key
from smalldata_pl.generators.renderers import SpectrumRenderer


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
