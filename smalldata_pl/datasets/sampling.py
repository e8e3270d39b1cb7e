"""A sampler that tells each sample which epoch it belongs to, so per-sample randomness is reproducible."""

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` pairs in an order that is a pure function of ``(seed, epoch)``.

    Datasets derive their augmentation randomness from ``(seed, epoch, index)``, so a sample's augmentation
    differs between epochs, does not depend on which worker loads it, and repeats exactly under the same seed
    (unlike seeding a pipeline once per worker, which repeats the same augmentations every epoch).
    Lightning calls :meth:`set_epoch` before each training epoch.

    With ``min_samples`` larger than the dataset, an epoch is several whole passes, each in its own order. The
    first element of each pair is then the *round* ``epoch * passes + pass`` rather than the epoch, so an image
    drawn twice in one epoch gets two different augmentations.

    Args:
        length: Number of samples in the dataset.
        shuffle: Permute the indices each epoch.
        seed: Seed of the permutation.
        min_samples: Least number of samples per epoch; ``None`` is one pass.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, min_samples: int | None = None) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.passes = max(1, -(-min_samples // length)) if min_samples and length else 1
        self.epoch = 0
        # (epoch, samples): on a mid-epoch resume, that epoch's first samples were already trained on.
        self.resume_from: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length * self.passes

    def __iter__(self) -> Iterator[tuple[int, int]]:
        draws = [(self.epoch * self.passes + p, int(i)) for p in range(self.passes) for i in self._order(p)]
        if self.resume_from is not None and self.resume_from[0] == self.epoch:
            draws = draws[self.resume_from[1] :]
            self.resume_from = None
        return iter(draws)

    def _order(self, pass_: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.length)
        # The first pass keeps the single-pass order, so min_samples=None and a one-pass epoch agree.
        key = [self.seed, self.epoch] if pass_ == 0 else [self.seed, self.epoch, pass_]
        return np.random.default_rng(key).permutation(self.length)


def split_key(key: int | tuple[int, int]) -> tuple[int, int]:
    """Accept a plain index (epoch 0) or an ``(epoch, index)`` pair from :class:`EpochSampler`."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return 0, int(key)
