"""Samplers that tell each sample which epoch it belongs to, so per-sample randomness is reproducible."""

from collections.abc import Iterator

import numpy as np
from torch.utils.data import DistributedSampler, Sampler


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
        # (epoch, samples): on a mid-epoch resume, the first samples of that epoch's order were already trained on.
        self.resume_from: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length * self.passes

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._untrained(self._draws()))

    def _draws(self) -> list[tuple[int, int]]:
        """The whole epoch in order."""
        return [(self.epoch * self.passes + p, int(i)) for p in range(self.passes) for i in self._order(p)]

    def _untrained(self, draws: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """``draws`` less those a mid-epoch checkpoint had trained on; the resume position is used once."""
        if self.resume_from is not None and self.resume_from[0] == self.epoch:
            draws = draws[self.resume_from[1] :]
            self.resume_from = None
        return draws

    def _order(self, pass_: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.length)
        # The first pass keeps the single-pass order, so min_samples=None and a one-pass epoch agree.
        key = [self.seed, self.epoch] if pass_ == 0 else [self.seed, self.epoch, pass_]
        return np.random.default_rng(key).permutation(self.length)


class DistributedEpochSampler(EpochSampler, DistributedSampler[tuple[int, int]]):
    """This rank's share of an :class:`EpochSampler` epoch: every ``num_replicas``-th draw, from ``rank`` on.

    Lightning wraps any other sampler in a ``DistributedSamplerWrapper``, which sizes the shares from the
    sampler's length when it wraps it and reshuffles the list; a resumed epoch is shorter than that, so the two
    disagree. A ``DistributedSampler`` is left as it is, so this class shards the one global order itself.

    As in ``DistributedSampler``, the epoch's first draws pad the order to a multiple of ``num_replicas``, so
    every rank runs as many batches. The ranks together train a prefix of the padded order, so
    :attr:`resume_from` counts samples of all ranks: ``batches * batch_size * num_replicas``. With the same
    number of ranks a resumed epoch continues exactly; with another, it trains what the old ranks had left.

    Args:
        length: Number of samples in the dataset.
        num_replicas: Number of ranks sharing each epoch.
        rank: This process's rank, in ``[0, num_replicas)``.
        shuffle: Permute the indices each epoch.
        seed: Seed of the permutation (the same on every rank).
        min_samples: Least number of samples per epoch, over all ranks; ``None`` is one pass.

    Example:
        >>> [list(DistributedEpochSampler(5, 2, rank, shuffle=False)) for rank in (0, 1)]
        [[(0, 0), (0, 2), (0, 4)], [(0, 1), (0, 3), (0, 0)]]
    """

    def __init__(
        self,
        length: int,
        num_replicas: int,
        rank: int,
        shuffle: bool = True,
        seed: int = 0,
        min_samples: int | None = None,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        # DistributedSampler.__init__ needs a dataset and would draw its own order; only its type and fields are used.
        EpochSampler.__init__(self, length, shuffle, seed, min_samples)
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, False
        self.num_samples = -(-length * self.passes // num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        draws = self._draws()
        untrained = self._untrained(draws)
        padding = -len(untrained) % self.num_replicas
        padded = untrained + (draws * -(-padding // len(draws)))[:padding] if padding else untrained
        return iter(padded[self.rank :: self.num_replicas])


def split_key(key: int | tuple[int, int]) -> tuple[int, int]:
    """Accept a plain index (epoch 0) or an ``(epoch, index)`` pair from :class:`EpochSampler`."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return 0, int(key)
