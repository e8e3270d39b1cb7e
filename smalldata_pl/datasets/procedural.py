"""Datasets whose sample ``i`` is a pure function of ``(seed, i)``: the bridge from generators to DataModules."""

import numpy as np
import torch
from torch.utils.data import Dataset

from smalldata_pl.datasets.sampling import split_key
from smalldata_pl.generators.renderers import Renderer
from smalldata_pl.transforms.pipeline import ImagePipeline, sample_seed


class ProceduralDataset(Dataset):
    """``length`` procedural samples; sample ``i`` is rendered from ``default_rng([seed, offset + i])``.

    Args:
        length: Samples per epoch.
        renderer: Draws image and target from a generator and the global index.
        pipeline: Augmentation/normalisation pipeline.
        seed: Generator seed.
        offset: First global index (splits use disjoint ranges of one stream).
        fresh_each_epoch: Draw new samples every epoch (epoch ``e`` uses indices ``offset + e * length + i``):
            an effectively infinite training set that still repeats exactly for the same seed.
        name: Identifies the generator in group ids.
    """

    def __init__(
        self,
        length: int,
        renderer: Renderer,
        pipeline: ImagePipeline,
        seed: int = 0,
        offset: int = 0,
        fresh_each_epoch: bool = False,
        name: str = "synthetic",
    ) -> None:
        self.length = length
        self.renderer = renderer
        self.pipeline = pipeline
        self.seed = seed
        self.offset = offset
        self.fresh_each_epoch = fresh_each_epoch
        self.name = name

    def __len__(self) -> int:
        return self.length

    def global_index(self, epoch: int, index: int) -> int:
        return self.offset + (epoch * self.length if self.fresh_each_epoch else 0) + index

    def render(self, epoch: int, index: int) -> tuple[np.ndarray, int | np.ndarray]:
        """Raw image and target of a sample, before the pipeline."""
        global_index = self.global_index(epoch, index)
        return self.renderer(np.random.default_rng([self.seed, global_index]), global_index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = split_key(key)
        image, target = self.render(epoch, index)
        seed = sample_seed(self.seed, epoch, self.global_index(epoch, index))
        if isinstance(target, np.ndarray):
            sample = self.pipeline(image, mask=target, seed=seed)
        else:
            sample = self.pipeline(image, seed=seed)
            sample["label"] = torch.tensor(target, dtype=torch.long)
        sample["group"] = f"{self.name}:{self.seed}:{self.global_index(epoch, index)}"
        return sample
