"""AdaBN: BatchNorm running statistics re-estimated on unlabelled target images (Li et al., 2016)."""

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.utils.data import DataLoader
from typing_extensions import override

from smalldata_pl.datamodules.base import MicrographDataModule
from smalldata_pl.datasets.folder import MicrographFolderDataset, Record
from smalldata_pl.datasets.pseudo_labels import target_records
from smalldata_pl.transforms.pipeline import ImagePipeline, normalization_stats

log = logging.getLogger(__name__)

STAGES = ("fit", "validate", "test", "predict")


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers that track running statistics (frozen ones without running stats are left out)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def adapt_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm layer's running statistics by those of ``batches`` (AdaBN).

    The statistics are reset, then the batches are forwarded with only the BatchNorm layers in training mode
    and ``momentum=None``, which makes PyTorch keep the plain average over the batches instead of a moving one.
    Dropout and the rest stay in evaluation mode, nothing is learnt, and every layer's mode and momentum are
    restored afterwards.

    Args:
        model: The network; called as ``model(images)``.
        batches: Image batches on any device (moved to the model's).

    Returns:
        The number of batches forwarded.

    Raises:
        ValueError: If the model has no BatchNorm layer with running statistics, or no batch is given.
    """
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BatchNorm layer with running statistics to adapt")
    modes = {module: module.training for module in model.modules()}
    momenta = [layer.momentum for layer in layers]
    device = next(model.parameters()).device
    count = 0
    try:
        model.eval()
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
            layer.train()
        for images in batches:
            model(images.to(device))
            count += 1
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        for module, training in modes.items():
            module.train(training)
    if count == 0:
        raise ValueError("adapt_batch_norm got no target batches")
    return count


def target_records_of(
    trainer: Trainer, root: str | None, manifest: str | None, limit: int | None, owner: Callback
) -> list[Record]:
    """The target images named by the callback ``owner``, or else by the run's DataModule (its ``target_root``).

    Raises:
        ValueError: If neither names any: the callback's own options are the fix when the DataModule has none.
    """
    if root is None and manifest is None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "target_root"):  # e.g. a SegmentationFolder: no fallback
            raise ValueError(
                f"{type(owner).__name__} has no target images and {type(datamodule).__name__} names none: set the "
                "callback's target_root (a folder of unlabelled real images) or target_manifest"
            )
        root, manifest = datamodule.target_root, getattr(datamodule, "target_manifest", None)
    return target_records(root, manifest, limit)


def target_pipeline(
    trainer: Trainer, pl_module: LightningModule, image_size: int | None
) -> tuple[ImagePipeline, int | None]:
    """Target images prepared like the run's evaluation images, as squares so that batches stack; and that size.

    The DataModule's channels and normalisation are used (the model's ``in_chans`` and ImageNet statistics when
    the run has no :class:`MicrographDataModule`); each image is scaled by its shorter side to ``image_size`` (by
    default the DataModule's) and its central square kept.
    """
    datamodule = getattr(trainer, "datamodule", None)
    if isinstance(datamodule, MicrographDataModule):
        size = image_size or datamodule.image_size
        in_chans, mean, std = datamodule.in_chans, datamodule.mean, datamodule.std
    else:
        size = image_size
        in_chans = int(getattr(pl_module.hparams, "in_chans", 1))
        mean, std = normalization_stats(in_chans)
    return ImagePipeline(in_chans, size, None, mean, std, resize="shortest_side", train=size is not None), size


def adapt_to_targets(
    trainer: Trainer, pl_module: LightningModule, records: Sequence[Record], image_size: int | None, batch_size: int
) -> int:
    """AdaBN of ``pl_module`` on the target images ``records``, prepared by :func:`target_pipeline`.

    Args:
        trainer: The run's Trainer (its DataModule gives channels, normalisation and the default size).
        pl_module: The model adapted in place.
        records: The target images.
        image_size: Shorter side the images are scaled to; ``None``: the DataModule's.
        batch_size: Images per forward pass when a size is known; without one, images go one at a time.

    Returns:
        The number of batches forwarded.
    """
    pipeline, size = target_pipeline(trainer, pl_module, image_size)
    # Whole images of unequal sizes do not stack into batches.
    loader = DataLoader(MicrographFolderDataset(records, pipeline), batch_size=batch_size if size else 1)
    return adapt_batch_norm(pl_module, (batch["image"] for batch in loader))


class AdaptiveBatchNorm(Callback):
    """Re-estimates BatchNorm statistics on unlabelled target images before evaluation or after training.

    A network trained on synthetic micrographs normalises real ones with the synthetic statistics; AdaBN
    swaps in the target's, which needs no labels. With ``fit`` in ``stages`` the final model is adapted when
    training ends and saved as ``adabn.ckpt`` beside the run's checkpoints (what ``smalldata apply`` should
    load); with ``validate``, ``test`` or ``predict`` the loaded model is adapted as that command starts.
    Validation during training keeps the synthetic statistics.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: smalldata_pl.callbacks.AdaptiveBatchNorm
              init_args: {target_root: ../shared/data/grain_boundaries_tbm/images}

    Args:
        target_root: Folder of unlabelled target images; ``None`` takes the DataModule's ``target_root``.
        target_manifest: CSV with a ``file`` column listing them instead (relative to ``target_root``).
        batch_size: Target images per forward pass; statistics are averaged over all of them.
        image_size: Shorter side the images are scaled to (central square kept); ``None``: the DataModule's.
            Without any size, images are forwarded one at a time at their own size.
        max_images: Use at most this many target images (evenly spaced); ``None``: all.
        stages: When to adapt: any of ``fit``, ``validate``, ``test``, ``predict``.
    """

    def __init__(
        self,
        target_root: str | None = None,
        target_manifest: str | None = None,
        batch_size: int = 8,
        image_size: int | None = None,
        max_images: int | None = None,
        stages: Sequence[str] = STAGES,
    ) -> None:
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown AdaBN stage(s) {unknown}; choose from {list(STAGES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.target_root, self.target_manifest, self.max_images = target_root, target_manifest, max_images
        self.records: list[Record] = []
        self.batch_size = batch_size
        self.image_size = image_size
        self.stages = set(stages)

    def adapt(self, trainer: Trainer, pl_module: LightningModule) -> int:
        """Adapt ``pl_module``'s BatchNorm layers to the target images; returns the batches used."""
        count = adapt_to_targets(trainer, pl_module, self.records, self.image_size, self.batch_size)
        log.info("AdaBN: BatchNorm statistics re-estimated on %d target images", len(self.records))
        return count

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in self.stages:  # a stage it does not adapt needs no target images
            return
        self.records = target_records_of(trainer, self.target_root, self.target_manifest, self.max_images, self)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "fit" not in self.stages:
            return
        self.adapt(trainer, pl_module)
        folder = getattr(trainer.checkpoint_callback, "dirpath", None)
        if folder is not None:
            path = Path(folder) / "adabn.ckpt"
            trainer.save_checkpoint(path)
            log.info("AdaBN: adapted model saved to %s", path)

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "validate" in self.stages and trainer.state.fn == TrainerFn.VALIDATING:
            self.adapt(trainer, pl_module)

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "test" in self.stages:
            self.adapt(trainer, pl_module)

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "predict" in self.stages:
            self.adapt(trainer, pl_module)
