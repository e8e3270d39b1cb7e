"""The DataModule contract every smalldata_pl dataset follows: typed arguments, dict samples, seeded loaders."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from smalldata_pl.datasets.pseudo_labels import ConcatSamples
from smalldata_pl.datasets.sampling import DistributedEpochSampler, EpochSampler
from smalldata_pl.transforms.augmentation import build_augmentation
from smalldata_pl.transforms.invariances import LabelInvariances, check_augmentation, leaves
from smalldata_pl.transforms.pipeline import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImagePipeline,
    PhysicalScale,
    PixelSizeError,
    ResizePolicy,
    normalization_stats,
)


class MicrographDataModule(LightningDataModule, ABC):
    """Base class: subclasses build the split datasets; this class owns pipelines and loaders.

    Samples are dicts with ``image`` (float32 ``[C, H, W]``), ``label`` (int64) or ``mask``, and ``group``
    (the physical specimen or micrograph the sample came from, carried into every derived sample).

    Args:
        class_names: Names of the classes in index order (fixing the order keeps indices stable across datasets).
        batch_size: Samples per batch.
        num_workers: Loader worker processes; results do not depend on it.
        in_chans: Channels delivered to the model (1 for greyscale micrographs, 3 for RGB backbones' stems).
        image_size: Side of the square training inputs (and of the shorter side of evaluated images, see ``resize``).
        seed: Seed for shuffling and augmentation draws.
        mean: Per-channel RGB normalisation mean of the pretrained backbone (adapted to ``in_chans``).
        std: Per-channel RGB normalisation std of the pretrained backbone.
        epoch_samples: Least number of training samples per epoch: a smaller training set is drawn in several
            reshuffled passes, each with fresh augmentation, so a subset of five images per class gets as many
            optimisation steps per epoch as the full set. ``None``: one pass.
        resize: How whole images meet ``image_size``: ``shortest_side`` (default) scales the shorter side to it
            and keeps the aspect ratio, so evaluation sees the pixel scale training crops had; ``squash`` stretches
            every image to a square (the behaviour before; distorts non-square micrographs).
        target_pixel_size: Resample every image (and mask, nearest-neighbour) to this many micrometres per pixel
            before anything else, so all share one physical scale. Each image's pixel size comes from a
            ``pixel_size`` manifest column, else from its TIFF metadata (FEI/Thermo, Zeiss, ImageJ, resolution
            tags); an image with neither is an error at setup. ``None``: keep each image's own scale.
        crop_data_bar: Cut off the instrument's data bar when the file's metadata gives its height (FEI/Thermo,
            Zeiss), in training, evaluation and ``smalldata apply`` alike.
        mix_in: Another DataModule, typically a procedural one, whose training samples join this one's in every
            training epoch (its ``train_size`` per epoch beside this module's own), e.g. synthetic precipitates
            mixed into a few real micrographs. It must have the same classes in the same order, channels,
            normalisation and training sample size; validation, test and predict stay on this module's data.

    Under a distributed strategy the training loader shards each epoch over the ranks itself
    (:class:`~smalldata_pl.datasets.sampling.DistributedEpochSampler`), so a mid-epoch resume skips exactly
    what every rank had trained on; evaluation loaders are sharded by Lightning as usual.
    """

    # What the labels of this dataset do not depend on; subclasses and configs override it.
    invariances = LabelInvariances()

    def __init__(
        self,
        class_names: Sequence[str],
        batch_size: int = 16,
        num_workers: int = 0,
        in_chans: int = 1,
        image_size: int | None = 224,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        epoch_samples: int | None = None,
        resize: ResizePolicy = "shortest_side",
        target_pixel_size: float | None = None,
        crop_data_bar: bool = True,
        mix_in: "MicrographDataModule | None" = None,
    ) -> None:
        super().__init__()
        self.mix_in = mix_in
        self._mix_in_keys: list[str] | None = None  # checked once: SelfTraining rebuilds the loader every epoch
        self.target_pixel_size, self.crop_data_bar = target_pixel_size, crop_data_bar
        # Validates target_pixel_size; shared by every dataset of this module and recorded in checkpoints.
        self.physical_scale = PhysicalScale(target_pixel_size, crop_data_bar)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}; set data.batch_size")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be positive or None (keep sizes), got {image_size}; set data.image_size")
        if epoch_samples is not None and epoch_samples < 1:
            raise ValueError(f"epoch_samples must be positive or None, got {epoch_samples}")
        self.epoch_samples = epoch_samples
        self.resize = resize
        if not class_names:
            raise ValueError("class_names is empty: give at least two class names")
        self.class_names = list(class_names)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.in_chans = in_chans
        self.image_size = image_size
        self.seed = seed
        self.mean, self.std = normalization_stats(in_chans, mean, std)
        self._resume_from: tuple[int, int] | None = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self.predict_dataset: Dataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def pipeline(self, augment: A.BasicTransform | None = None, train: bool | None = None) -> ImagePipeline:
        """The sample pipeline: ``augment`` for training, ``None`` for the deterministic evaluation path.

        ``train`` defaults to whether an augmentation is given; pass it for a training set without augmentation.
        """
        train = augment is not None if train is None else train
        return ImagePipeline(self.in_chans, self.image_size, augment, self.mean, self.std, self.resize, train)

    def target_pipeline(self) -> ImagePipeline:
        """Training pipeline of real target images that join the training set (self-training's pseudo-labels).

        Here the training path without augmentation; subclasses with a training augmentation that suits the targets
        override it.
        """
        return self.pipeline(None, train=True)

    def check_pixel_sizes(self, files: Sequence[tuple[Path, float | None]]) -> None:
        """Stop at setup when ``target_pixel_size`` is set and images have no known pixel size, naming them.

        Args:
            files: ``(path, pixel size or None)`` of every image to be used.

        Raises:
            PixelSizeError: Listing how many and which images lack a pixel size, and the fix.
        """
        if self.target_pixel_size is None:
            return
        missing = [str(path) for path, size in files if size is None]
        if missing:
            raise PixelSizeError(
                f"{len(missing)} image(s) have no known pixel size, e.g. {', '.join(missing[:3])}; "
                f"data.target_pixel_size={self.target_pixel_size} µm needs one per image: add a pixel_size column "
                "(µm per pixel) to the manifest, keep the instrument's TIFF metadata (FEI, Zeiss, ImageJ or "
                "resolution tags), or set data.target_pixel_size to null"
            )

    def train_augmentation(self, spec: str | dict | list | None) -> A.Compose | None:
        """Build the training augmentation and check it against :attr:`invariances` (fails on a violation).

        Mask pixels that a geometric transform invents (constant borders of rotations, shifts, padding) are set to
        ``IGNORE_INDEX``, so they are never trained or scored as class 0.
        """
        augment = build_augmentation(spec, self.image_size)
        check_augmentation(augment, self.invariances, type(self).__name__)
        for transform in leaves(augment) if augment is not None else ():
            if hasattr(transform, "fill_mask"):
                transform.fill_mask = IGNORE_INDEX
        return augment

    @abstractmethod
    def setup(self, stage: str) -> None:
        """Create the datasets needed for ``stage`` (``fit``, ``validate``, ``test`` or ``predict``)."""

    def state_dict(self) -> dict[str, Any]:
        """Where training stands inside the current epoch, so a mid-epoch resume skips what was trained on."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        # Checkpoints written in on_train_batch_end count the batch just trained as processed, not completed.
        batches = getattr(progress, "processed", progress.completed)
        shard = self._shard()
        replicas = shard[0] if shard else 1
        return {"epoch": trainer.current_epoch, "batches": batches, "batch_size": self.batch_size, "replicas": replicas}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("batches"):
            # Every rank trained `batches` batches of its share; together, a prefix of the epoch's global order.
            samples = state_dict["batches"] * state_dict["batch_size"] * state_dict.get("replicas", 1)
            self._resume_from = (state_dict["epoch"], samples)

    def _shard(self) -> tuple[int, int] | None:
        """``(num_replicas, rank)`` under a distributed strategy, else ``None``."""
        kwargs = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        return (int(kwargs["num_replicas"]), int(kwargs["rank"])) if kwargs else None

    def _loader(
        self, dataset: Dataset | None, name: str, train: bool = False, batch_size: int | None = None
    ) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no {name} dataset; was setup() called for this stage?")
        length = len(dataset)  # type: ignore[arg-type]
        shard = self._shard() if train else None
        sampler: EpochSampler
        if shard:
            # Sharded here, not by Lightning: its wrapper sizes the shares before a resume shortens the epoch.
            sampler = DistributedEpochSampler(length, *shard, seed=self.seed, min_samples=self.epoch_samples)
        else:
            sampler = EpochSampler(
                length, shuffle=train, seed=self.seed, min_samples=self.epoch_samples if train else None
            )
        if train:
            sampler.resume_from, self._resume_from = self._resume_from, None
        drawn = len(sampler)
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            sampler=sampler,
            # Its own generator: creating an iterator then draws no number from the global RNG, so dropout
            # draws after a resume line up with the uninterrupted run (samples are seeded explicitly anyway).
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # A last batch of one sample breaks BatchNorm in training; drop just that case.
            drop_last=train and drawn > self.batch_size and drawn % self.batch_size == 1,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.mixed(self.train_dataset), "train", train=True)

    def mixed(self, dataset: Dataset | None) -> Dataset | None:
        """``dataset`` followed by the ``mix_in`` DataModule's training samples (``dataset`` itself without one)."""
        other = self.mix_in
        if other is None or dataset is None:
            return dataset
        if other.train_dataset is None:
            other.setup("fit")
        extra = other.train_dataset
        if extra is None:
            raise RuntimeError(f"data.mix_in ({type(other).__name__}) built no training set in setup('fit')")
        if self._mix_in_keys is None:
            self._mix_in_keys = self._check_mix_in(other, dataset, extra)
        return ConcatSamples([dataset, extra], keys=self._mix_in_keys)

    def _check_mix_in(self, other: "MicrographDataModule", own: Dataset, extra: Dataset) -> list[str]:
        """Refuse a mix-in whose samples would be trained as something else, naming what differs and the fix.

        Returns:
            The sample keys both kinds have (a real sample's ``path`` has no procedural counterpart).
        """
        name = type(other).__name__
        if list(other.class_names) != self.class_names:
            raise ValueError(
                f"data.mix_in ({name}) has classes {list(other.class_names)} but this data has {self.class_names}: "
                "its mask values would be trained as the wrong classes; mix in a DataModule with the same classes in "
                "the same order"
            )
        if other.in_chans != self.in_chans or other.mean != self.mean or other.std != self.std:
            raise ValueError(
                f"data.mix_in ({name}) delivers {other.in_chans} channel(s) normalised with mean {other.mean}, std "
                f"{other.std}, this data {self.in_chans} with {self.mean}, {self.std}; set the mix-in's in_chans "
                "(and mean/std) to this data's"
            )
        mine, theirs = own[(0, 0)], extra[(0, 0)]
        if mine["image"].shape != theirs["image"].shape:
            raise ValueError(
                f"data.mix_in ({name}) gives training images of shape {tuple(theirs['image'].shape)}, this data "
                f"{tuple(mine['image'].shape)}; set the mix-in's image_size to this data's training crop size so they "
                "batch together"
            )
        target = "mask" if "mask" in mine else "label"
        if target not in theirs:
            raise ValueError(f"data.mix_in ({name}) gives samples without a {target!r}; mix in the same task's data")
        return [key for key in mine if key in theirs]

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, "validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, "test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_dataset, "predict")
