"""DataModules over the procedural generators: grain classes, grain boundaries, precipitate phases."""

from collections.abc import Sequence
from typing import Any

from smalldata_pl.datamodules.base import MicrographDataModule
from smalldata_pl.datasets.procedural import ProceduralDataset
from smalldata_pl.generators.grains import GRAIN_MORPHOLOGIES
from smalldata_pl.generators.imaging import IMAGING_PRESETS
from smalldata_pl.generators.precipitates import PHASE_NAMES, PrecipitateParams
from smalldata_pl.generators.renderers import GrainBoundaryRenderer, GrainClassRenderer, PrecipitateRenderer, Renderer
from smalldata_pl.transforms.invariances import LabelInvariances


class ProceduralDataModule(MicrographDataModule):
    """Train, validation and test as disjoint index ranges of one deterministic procedural stream.

    Args:
        class_names: Classes (or mask values) of the generator.
        train_size: Training samples per epoch.
        val_size: Validation samples.
        test_size: Test samples.
        image_size: Side of the rendered images.
        imaging: Imaging preset (``clean``, ``optical``, ``sem_se``, ``sem_bse``).
        fresh_each_epoch: New training samples every epoch (infinite data, still reproducible).
        augmentation: Training augmentation, checked against :attr:`invariances`.
        batch_size: Samples per batch.
        **kwargs: Loader, seed, channel and normalisation options of :class:`MicrographDataModule`.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        train_size: int = 512,
        val_size: int = 128,
        test_size: int = 128,
        image_size: int = 128,
        imaging: str = "optical",
        fresh_each_epoch: bool = False,
        augmentation: str | dict | list | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(class_names, batch_size=batch_size, image_size=image_size, **kwargs)
        if imaging not in IMAGING_PRESETS:
            raise ValueError(f"unknown imaging preset {imaging!r}; choose one of {sorted(IMAGING_PRESETS)}")
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.imaging = imaging
        self.fresh_each_epoch = fresh_each_epoch
        self.augmentation = augmentation

    def renderer(self) -> Renderer:
        """The generator of this DataModule; subclasses return a picklable callable."""
        raise NotImplementedError

    def _dataset(self, split: str) -> ProceduralDataset:
        augment = self.train_augmentation(self.augmentation) if split == "train" else None
        # Validation and test come after the whole (possibly per-epoch fresh) training stream's first block;
        # a far offset keeps them disjoint from fresh training samples for any realistic run length.
        far = 10**9 if self.fresh_each_epoch else 0
        offsets = {"train": 0, "val": far + self.sizes["train"], "test": far + self.sizes["train"] + self.sizes["val"]}
        return ProceduralDataset(
            self.sizes[split],
            self.renderer(),
            self.pipeline(augment),
            self.seed,
            offsets[split],
            fresh_each_epoch=self.fresh_each_epoch and split == "train",
            name=type(self).__name__,
        )

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_dataset = self._dataset("train")
        if stage in ("fit", "validate"):
            self.val_dataset = self._dataset("val")
        if stage in ("test", "predict"):
            self.test_dataset = self._dataset("test")
            self.predict_dataset = self.test_dataset


class SyntheticGrains(ProceduralDataModule):
    """Grain micrographs in four morphology classes: fine equiaxed, coarse equiaxed, elongated, bimodal.

    The embedded default: no download, no GPU, infinite labels. The classes differ in grain size, so rescaling
    augmentations are refused; orientation and exposure are free.

    Example:
        >>> dm = SyntheticGrains(train_size=64, val_size=16, image_size=64)
        >>> dm.setup("fit")
        >>> dm.train_dataset[0]["image"].shape
        torch.Size([1, 64, 64])

    Args:
        **kwargs: Sizes, imaging, augmentation and loader options of :class:`ProceduralDataModule`.
    """

    invariances = LabelInvariances(rotation=True, mirror=True, scale=False, intensity=True, colour=False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__([m.name for m in GRAIN_MORPHOLOGIES], **kwargs)
        self.save_hyperparameters()

    def renderer(self) -> Renderer:
        return GrainClassRenderer(self.image_size or 128, self.imaging)


class SyntheticGrainBoundaries(ProceduralDataModule):
    """Grain micrographs with boundary masks (0 interior, 1 boundary) for boundary segmentation.

    Args:
        boundary_width: Width of the boundary class in pixels.
        batch_size: Samples per batch.
        **kwargs: Sizes, imaging, augmentation and loader options of :class:`ProceduralDataModule`.
    """

    invariances = LabelInvariances(rotation=True, mirror=True, scale=True, intensity=True, colour=False)

    def __init__(self, boundary_width: int = 2, batch_size: int = 16, **kwargs: Any) -> None:
        super().__init__(["grain", "boundary"], batch_size=batch_size, **kwargs)
        self.save_hyperparameters()
        self.boundary_width = boundary_width

    def renderer(self) -> Renderer:
        return GrainBoundaryRenderer(self.image_size or 128, self.imaging, self.boundary_width)


class SyntheticPrecipitates(ProceduralDataModule):
    """Gamma/gamma' precipitate micrographs with phase masks: matrix, secondary and tertiary gamma'.

    Args:
        secondary_fraction: Area fraction of secondary particles.
        secondary_size: Mean spacing of secondary particles in pixels.
        tertiary_fraction: Area fraction of tertiary particles.
        tertiary_radius: Mean tertiary radius in pixels.
        train_size: Training samples per epoch.
        val_size: Validation samples.
        test_size: Test samples.
        image_size: Side of the rendered images.
        imaging: Imaging preset.
        batch_size: Samples per batch.
        **kwargs: Augmentation and loader options of :class:`ProceduralDataModule`.
    """

    invariances = LabelInvariances(rotation=True, mirror=True, scale=True, intensity=True, colour=False)

    def __init__(
        self,
        train_size: int = 256,
        val_size: int = 64,
        test_size: int = 64,
        image_size: int = 256,
        imaging: str = "sem_se",
        secondary_fraction: float = 0.48,
        secondary_size: float = 70.0,
        tertiary_fraction: float = 0.025,
        tertiary_radius: float = 3.5,
        batch_size: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            list(PHASE_NAMES),
            train_size=train_size,
            val_size=val_size,
            test_size=test_size,
            image_size=image_size,
            imaging=imaging,
            batch_size=batch_size,
            **kwargs,
        )
        self.save_hyperparameters()
        self.params = PrecipitateParams(
            secondary_fraction=secondary_fraction,
            secondary_size=secondary_size,
            tertiary_fraction=tertiary_fraction,
            tertiary_radius=tertiary_radius,
        )

    def renderer(self) -> Renderer:
        return PrecipitateRenderer(self.image_size or 256, self.imaging, self.params)
