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

    Args:
        length: Number of samples in the dataset.
        shuffle: Permute the indices each epoch.
        seed: Seed of the permutation.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0) -> None:
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        # (epoch, samples): on a mid-epoch resume, that epoch's first samples were already trained on.
        self.resume_from: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.length)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        if self.resume_from is not None and self.resume_from[0] == self.epoch:
            order = order[self.resume_from[1] :]
            self.resume_from = None
        return iter([(self.epoch, int(i)) for i in order])


def split_key(key: int | tuple[int, int]) -> tuple[int, int]:
    """Accept a plain index (epoch 0) or an ``(epoch, index)`` pair from :class:`EpochSampler`."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return 0, int(key)
