"""Datasets whose sample ``i`` is a pure function of ``(seed, i)``: the bridge from generators to DataModules."""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from smalldata_pl.data.sampling import split_key
from smalldata_pl.data.synthetic import GRAIN_MORPHOLOGIES, IMAGING_PRESETS, GrainMorphology, render_grain_micrograph
from smalldata_pl.data.synthetic.precipitates import PrecipitateParams, render_precipitates
from smalldata_pl.data.transforms import ImagePipeline, sample_seed

# A renderer turns (rng, global index) into a float image and its target: an int label or an int mask.
Renderer = Callable[[np.random.Generator, int], tuple[np.ndarray, int | np.ndarray]]


@dataclass(frozen=True)
class GrainClassRenderer:
    """Grain micrographs labelled by morphology; class ``index % len(morphologies)`` keeps classes balanced."""

    size: int
    imaging: str = "optical"
    morphologies: tuple[GrainMorphology, ...] = GRAIN_MORPHOLOGIES

    def __call__(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, int]:
        label = index % len(self.morphologies)
        micrograph = render_grain_micrograph(
            rng, (self.size, self.size), self.morphologies[label], IMAGING_PRESETS[self.imaging]
        )
        return micrograph.image, label


@dataclass(frozen=True)
class GrainBoundaryRenderer:
    """Grain micrographs with their boundary masks (0 grain interior, 1 boundary), any morphology."""

    size: int
    imaging: str = "optical"
    boundary_width: int = 1

    def __call__(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]:
        from scipy.ndimage import binary_dilation

        morphology = GRAIN_MORPHOLOGIES[index % len(GRAIN_MORPHOLOGIES)]
        micrograph = render_grain_micrograph(rng, (self.size, self.size), morphology, IMAGING_PRESETS[self.imaging])
        mask = (
            binary_dilation(micrograph.boundaries, iterations=self.boundary_width - 1)
            if self.boundary_width > 1
            else micrograph.boundaries
        )
        return micrograph.image, mask.astype(np.uint8)


@dataclass(frozen=True)
class PrecipitateRenderer:
    """Gamma/gamma' micrographs with phase masks (0 matrix, 1 secondary, 2 tertiary)."""

    size: int
    imaging: str = "sem_se"
    params: PrecipitateParams = field(default_factory=PrecipitateParams)

    def __call__(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]:
        micrograph = render_precipitates(rng, (self.size, self.size), self.params, IMAGING_PRESETS[self.imaging])
        return micrograph.image, micrograph.mask


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
