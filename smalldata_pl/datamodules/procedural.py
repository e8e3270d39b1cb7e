"""DataModules over the procedural generators: grain classes, grain boundaries, precipitate phases."""

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import albumentations as A
import numpy as np

from smalldata_pl.datamodules.base import MicrographDataModule
from smalldata_pl.datasets.procedural import ProceduralDataset
from smalldata_pl.datasets.pseudo_labels import target_records
from smalldata_pl.generators.calibration import AdaptedRenderer, calibrate_imaging, describe, scale_factor
from smalldata_pl.generators.grains import GRAIN_MORPHOLOGIES
from smalldata_pl.generators.imaging import IMAGING_PRESETS, ImagingModel
from smalldata_pl.generators.precipitates import PHASE_NAMES, PrecipitateParams
from smalldata_pl.generators.renderers import GrainBoundaryRenderer, GrainClassRenderer, PrecipitateRenderer, Renderer
from smalldata_pl.generators.styles import GrainStyle, resolve_styles
from smalldata_pl.io.images import read_image
from smalldata_pl.transforms.invariances import LabelInvariances
from smalldata_pl.transforms.pipeline import ImagePipeline, to_channels
from smalldata_pl.transforms.target_style import TargetStyle, check_target_style, target_style_transform

log = logging.getLogger(__name__)

# Renders compared with the targets: grain-scale estimates are noisy per image, calibration renders cost time.
ADAPTATION_SAMPLES = 16
CALIBRATION_SAMPLES = 8


class ProceduralDataModule(MicrographDataModule):
    """Train, validation and test as disjoint index ranges of one deterministic procedural stream.

    Domain adaptation to unlabelled real target images (``target_root``): ``target_style`` gives synthetic
    training images the targets' histograms or low-frequency spectrum; ``match_target_scale`` zooms every
    synthetic sample so its grain size in pixels matches the targets' at the evaluation scale;
    ``calibrate_imaging`` fits the imaging model's blur, noise, illumination gradient, contrast and offset to the
    targets' image statistics. Targets are compared as the model sees them (``in_chans`` channels, shorter side
    scaled to ``image_size``). Scale and calibration change the generator, so validation and test follow; the
    style is a training augmentation. Subclasses build their renderer from :attr:`imaging` (a preset name), so
    calibration can ask for ideal (``clean``) renders and image them itself.

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
        target_root: Folder of unlabelled real target images for the adaptation options.
        target_manifest: CSV with a ``file`` column listing the target images instead (relative to
            ``target_root``).
        target_style: ``histogram`` (albumentations' HistogramMatching), ``fda`` (Fourier domain adaptation) or
            ``none``. With ``in_chans=3`` grey synthetic images take colour targets' colours.
        target_style_p: Probability that a training sample is styled.
        calibrate_imaging: Fit the imaging model to the targets (replaces the ``imaging`` preset's blur, read
            noise, gradient, contrast and offset; its randomisation stays).
        match_target_scale: Zoom synthetic samples to the targets' grain size (mask targets only).
        max_target_images: Target images loaded for style, scale and calibration (evenly spaced).
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
        target_root: str | None = None,
        target_manifest: str | None = None,
        target_style: TargetStyle = "none",
        target_style_p: float = 0.5,
        calibrate_imaging: bool = False,
        match_target_scale: bool = False,
        max_target_images: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(class_names, batch_size=batch_size, image_size=image_size, **kwargs)
        if imaging not in IMAGING_PRESETS:
            raise ValueError(f"unknown imaging preset {imaging!r}; choose one of {sorted(IMAGING_PRESETS)}")
        check_target_style(target_style)
        adapting = target_style != "none" or calibrate_imaging or match_target_scale
        if adapting and target_root is None and target_manifest is None:
            raise ValueError(
                "target_style, calibrate_imaging and match_target_scale need unlabelled target images; "
                "set data.target_root to a folder of them (or data.target_manifest)"
            )
        if match_target_scale and not self.invariances.scale:
            raise ValueError(f"{type(self).__name__}'s labels depend on scale; match_target_scale would change them")
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.imaging = imaging
        self.fresh_each_epoch = fresh_each_epoch
        self.augmentation = augmentation
        self.target_root, self.target_manifest = target_root, target_manifest
        self.target_style, self.target_style_p = target_style, target_style_p
        self.calibrate_imaging, self.match_target_scale = calibrate_imaging, match_target_scale
        self.max_target_images = max_target_images
        # Found by setup(): the zoom applied to synthetic samples and the fitted imaging model (None: the preset's).
        self.target_scale = 1.0
        self.calibrated_imaging: ImagingModel | None = None
        self._targets: list[np.ndarray] | None = None
        self._adapted: Renderer | None = None

    def renderer(self) -> Renderer:
        """The generator of this DataModule; subclasses return a picklable callable."""
        raise NotImplementedError

    def target_images(self) -> list[np.ndarray]:
        """The target images as the model sees them: ``in_chans`` channels, scaled like evaluation images."""
        if self._targets is None:
            records = target_records(self.target_root, self.target_manifest, self.max_target_images)
            if self.image_size is None:
                scale: A.BasicTransform = A.NoOp()
            elif self.resize == "shortest_side":
                scale = A.SmallestMaxSize(max_size=self.image_size)
            else:
                scale = A.Resize(self.image_size, self.image_size)
            self._targets = [scale(image=to_channels(read_image(r.path), self.in_chans))["image"] for r in records]
        return self._targets

    def _renderer(self) -> Renderer:
        """:meth:`renderer`, zoomed to the targets' grain scale and imaged by the calibrated model if asked."""
        if not (self.match_target_scale or self.calibrate_imaging):
            return self.renderer()
        if self._adapted is None:
            self._adapted = self._adapt()
        return self._adapted

    def _adapt(self) -> Renderer:
        renderer = self.renderer()
        samples = [renderer(np.random.default_rng([self.seed, i]), i) for i in range(ADAPTATION_SAMPLES)]
        size = samples[0][0].shape[0]
        if self.match_target_scale:
            synthetic = [to_channels(image, self.in_chans) for image, _ in samples]
            self.target_scale = scale_factor(synthetic, self.target_images())
            log.info(
                "%s: synthetic samples zoomed %.3gx to the targets' grain size", type(self).__name__, self.target_scale
            )
        if not self.calibrate_imaging:
            return AdaptedRenderer(renderer, size, self.target_scale)
        preset, self.imaging = self.imaging, "clean"
        try:
            ideal_renderer = AdaptedRenderer(self.renderer(), size, self.target_scale)
        finally:
            self.imaging = preset
        ideal = [ideal_renderer(np.random.default_rng([self.seed, i]), i)[0] for i in range(CALIBRATION_SAMPLES)]
        self.calibrated_imaging = calibrate_imaging(ideal, self.target_images(), IMAGING_PRESETS[preset])
        log.info("%s: imaging calibrated to the targets: %s", type(self).__name__, describe(self.calibrated_imaging))
        return replace(ideal_renderer, imaging=self.calibrated_imaging)

    def target_pipeline(self) -> ImagePipeline:
        """Training pipeline for real target images (self-training): the augmentation without the styling."""
        return self.pipeline(self.train_augmentation(self.augmentation), train=True)

    def _dataset(self, split: str) -> ProceduralDataset:
        augment = self.train_augmentation(self.augmentation) if split == "train" else None
        if split == "train" and self.target_style != "none":
            style = target_style_transform(self.target_style, self.target_images(), self.in_chans, self.target_style_p)
            augment = A.Compose([style, augment] if augment is not None else [style])
        # Validation and test come after the whole (possibly per-epoch fresh) training stream's first block;
        # a far offset keeps them disjoint from fresh training samples for any realistic run length.
        far = 10**9 if self.fresh_each_epoch else 0
        offsets = {"train": 0, "val": far + self.sizes["train"], "test": far + self.sizes["train"] + self.sizes["val"]}
        return ProceduralDataset(
            self.sizes[split],
            self._renderer(),
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

    Example:
        >>> dm = SyntheticGrainBoundaries(train_size=4, val_size=2, image_size=64, style="tint_etched", in_chans=3)
        >>> dm.setup("fit")
        >>> dm.train_dataset[0]["image"].shape
        torch.Size([3, 64, 64])

    Args:
        boundary_width: Width of the boundary class in pixels (the centre line dilated; the etched groove the
            style draws may be wider or narrower).
        style: Specimen realism: a preset (``flat``, today's straight-edged flat grains and the default so
            existing configs reproduce; ``realistic``, curved boundaries, log-normal sizes, textured grains,
            scratches, pits, pores, inclusions and twins; ``tint_etched``, the same in interference colours;
            ``boundary_etched``, grains of nearly one grey told apart by dark grooves), a mapping of overrides
            such as ``{preset: realistic, scratches: 0}``, or a list of these: a mixture whose styles take turns
            over the samples. Colour styles give RGB images, converted to grey by luma when ``in_chans`` is 1 (and
            grey ones are replicated when it is 3).
        batch_size: Samples per batch.
        **kwargs: Sizes, imaging, augmentation and loader options of :class:`ProceduralDataModule`.
    """

    invariances = LabelInvariances(rotation=True, mirror=True, scale=True, intensity=True, colour=False)

    def __init__(
        self,
        boundary_width: int = 2,
        style: str | dict[str, Any] | list[str | dict[str, Any]] = "flat",
        batch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(["grain", "boundary"], batch_size=batch_size, **kwargs)
        self.save_hyperparameters()
        self.boundary_width = boundary_width
        styles = resolve_styles(style)
        # One style stays a GrainStyle, so its renderer (and every sample) is what it was before mixtures.
        self.style: GrainStyle | tuple[GrainStyle, ...] = styles[0] if len(styles) == 1 else styles

    def renderer(self) -> Renderer:
        return GrainBoundaryRenderer(self.image_size or 128, self.imaging, self.boundary_width, self.style)


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
