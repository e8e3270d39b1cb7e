"""The embedded default data: procedurally generated grain micrographs in four morphology classes."""

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from smalldata_pl.data.base import MicrographDataModule
from smalldata_pl.data.physics import LabelInvariances
from smalldata_pl.data.sampling import split_key
from smalldata_pl.data.synthetic import GRAIN_MORPHOLOGIES, IMAGING_PRESETS, GrainMorphology, render_grain_micrograph
from smalldata_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePipeline, sample_seed


class SyntheticGrainsDataset(Dataset):
    """Grain micrographs whose sample ``i`` is a pure function of ``(seed, offset + i)``.

    Args:
        length: Number of samples.
        pipeline: Turns the rendered float image into model input.
        morphologies: Classes; sample ``i`` belongs to class ``(offset + i) % len(morphologies)``.
        image_size: Rendered side length in pixels.
        imaging: Name of the imaging preset (see ``IMAGING_PRESETS``).
        seed: Generator seed.
        offset: First global index, so splits draw disjoint samples from one stream.
    """

    def __init__(
        self,
        length: int,
        pipeline: ImagePipeline,
        morphologies: Sequence[GrainMorphology] = GRAIN_MORPHOLOGIES,
        image_size: int = 128,
        imaging: str = "optical",
        seed: int = 0,
        offset: int = 0,
    ) -> None:
        if imaging not in IMAGING_PRESETS:
            raise ValueError(f"unknown imaging preset {imaging!r}; choose one of {sorted(IMAGING_PRESETS)}")
        self.length = length
        self.pipeline = pipeline
        self.morphologies = list(morphologies)
        self.image_size = image_size
        self.imaging = IMAGING_PRESETS[imaging]
        self.seed = seed
        self.offset = offset

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, int]:
        """The raw float image and label of sample ``index`` (before the pipeline)."""
        global_index = self.offset + index
        label = global_index % len(self.morphologies)
        rng = np.random.default_rng([self.seed, global_index])
        micrograph = render_grain_micrograph(
            rng, (self.image_size, self.image_size), self.morphologies[label], self.imaging
        )
        return micrograph.image, label

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = split_key(key)
        image, label = self.render(index)
        # Augmentation draws depend on the epoch; the rendered micrograph itself never does.
        sample = self.pipeline(image, seed=sample_seed(self.seed, epoch, self.offset + index))
        sample["label"] = torch.tensor(label, dtype=torch.long)
        sample["group"] = f"synthetic:{self.seed}:{self.offset + index}"
        return sample


class SyntheticGrains(MicrographDataModule):
    """Procedural grain micrographs: fine equiaxed, coarse equiaxed, elongated (rolled) and bimodal.

    No download, no GPU, infinite labels: train, validation and test are disjoint index ranges of one
    deterministic stream.

    The classes differ in grain size, so rescaling augmentations are refused; orientation and exposure are free.

    Example:
        >>> dm = SyntheticGrains(train_size=64, val_size=16, image_size=64)
        >>> dm.setup("fit")
        >>> dm.train_dataset[0]["image"].shape
        torch.Size([1, 64, 64])

    Args:
        train_size: Training samples.
        val_size: Validation samples.
        test_size: Test samples.
        image_size: Side of the rendered (and delivered) images.
        imaging: Imaging preset: ``clean``, ``optical``, ``sem_se`` or ``sem_bse``.
        augmentation: Training augmentation (checked against the grain-size labels: no rescaling).
        batch_size: Samples per batch.
        num_workers: Loader workers.
        in_chans: Channels delivered to the model.
        seed: Generator and shuffling seed.
        mean: RGB normalisation mean of the backbone.
        std: RGB normalisation std of the backbone.
    """

    invariances = LabelInvariances(rotation=True, mirror=True, scale=False, intensity=True, colour=False)

    def __init__(
        self,
        train_size: int = 512,
        val_size: int = 128,
        test_size: int = 128,
        image_size: int = 128,
        imaging: str = "optical",
        augmentation: str | dict | list | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        in_chans: int = 1,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(
            class_names=[m.name for m in GRAIN_MORPHOLOGIES],
            batch_size=batch_size,
            num_workers=num_workers,
            in_chans=in_chans,
            image_size=image_size,
            seed=seed,
            mean=mean,
            std=std,
        )
        self.save_hyperparameters()
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.rendered_size = image_size
        self.imaging = imaging
        self.augmentation = augmentation

    def _dataset(self, split: str) -> SyntheticGrainsDataset:
        augment = self.train_augmentation(self.augmentation) if split == "train" else None
        offsets = {"train": 0, "val": self.sizes["train"], "test": self.sizes["train"] + self.sizes["val"]}
        return SyntheticGrainsDataset(
            self.sizes[split],
            self.pipeline(augment),
            GRAIN_MORPHOLOGIES,
            self.rendered_size,
            self.imaging,
            self.seed,
            offsets[split],
        )

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_dataset = self._dataset("train")
        if stage in ("fit", "validate"):
            self.val_dataset = self._dataset("val")
        if stage in ("test", "predict"):
            self.test_dataset = self._dataset("test")
            self.predict_dataset = self.test_dataset
