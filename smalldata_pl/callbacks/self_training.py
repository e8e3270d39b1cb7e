"""Self-training: confident predictions on unlabelled target images become extra training masks."""

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import Dataset
from typing_extensions import override

from smalldata_pl.callbacks.adabn import adapt_to_targets, batch_norm_layers, target_records_of
from smalldata_pl.datamodules.base import MicrographDataModule
from smalldata_pl.datasets.folder import Record
from smalldata_pl.datasets.pseudo_labels import (
    ConcatSamples,
    PseudoLabelDataset,
    class_balanced_thresholds,
    keep_confident,
)
from smalldata_pl.io.images import read_image
from smalldata_pl.transforms.pipeline import IGNORE_INDEX
from smalldata_pl.transforms.views import IDENTITY, mean_probabilities, views_from_invariances

log = logging.getLogger(__name__)


class SelfTraining(Callback):
    """Adds the target images, labelled by the model's own confident predictions, to the training set.

    From epoch ``start_epoch`` on, and again every ``every_n_epochs`` epochs, the model (in evaluation mode)
    segments each target image at the evaluation scale (averaged over the allowed views with ``tta``); pixels whose
    top class probability reaches ``threshold`` (or their class's own lower threshold under ``class_balance``) keep
    that class, all others get ``IGNORE_INDEX`` and count in neither loss nor metrics. The pseudo-labelled
    images, prepared by the DataModule's ``target_pipeline`` (cropped and augmented like its own training images;
    a procedural DataModule leaves out its target styling), then join the DataModule's training set (``repeats``
    copies each) until the next refresh. Validation stays on the source data.

    The training loader must be rebuilt to see the new samples, so the callback sets the Trainer's
    ``reload_dataloaders_every_n_epochs`` to 1 when it is 0. Segmentation tasks only (``[B, C, H, W]`` outputs).
    After a resume the pseudo-labels return at the next refresh.

    Example (YAML)::

        trainer:
          callbacks:
            - class_path: smalldata_pl.callbacks.SelfTraining
              init_args: {target_root: ../shared/data/grain_boundaries_tbm/images, start_epoch: 4, threshold: 0.9}

    Args:
        target_root: Folder of unlabelled target images; ``None`` takes the DataModule's ``target_root``.
        target_manifest: CSV with a ``file`` column listing them instead (relative to ``target_root``).
        start_epoch: First epoch trained with pseudo-labels (they are made at the end of the epoch before).
        every_n_epochs: Epochs between refreshes of the pseudo-labels.
        threshold: Least top-class probability of a kept pixel.
        repeats: Copies of each pseudo-labelled image per epoch (weight of the target against synthetic data).
        max_images: Use at most this many target images (evenly spaced); ``None``: all.
        adapt_batch_norm: Predict with BatchNorm statistics re-estimated on the targets (AdaBN), then restore the
            training statistics.
        class_balance: Class-balanced pseudo-labels: every class also keeps the most confident of this share of
            the pixels predicted as it, over all targets, below ``threshold`` if need be (0.5: the surer half),
            so that a thin minority class such as grain boundaries is not left out; ``None``: ``threshold``
            alone.
        tta: Pseudo-label with the softmax averaged over the D4 views that the DataModule's ``invariances``
            allow (up to eight): a steadier teacher than one view, at that many times the labelling cost.
    """

    def __init__(
        self,
        target_root: str | None = None,
        target_manifest: str | None = None,
        start_epoch: int = 2,
        every_n_epochs: int = 2,
        threshold: float = 0.9,
        repeats: int = 1,
        max_images: int | None = None,
        adapt_batch_norm: bool = False,
        class_balance: float | None = None,
        tta: bool = False,
    ) -> None:
        if start_epoch < 1:
            raise ValueError(f"start_epoch must be at least 1 (the model must have trained), got {start_epoch}")
        if every_n_epochs < 1 or repeats < 1:
            raise ValueError(f"every_n_epochs and repeats must be at least 1, got {every_n_epochs} and {repeats}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if class_balance is not None and not 0.0 < class_balance <= 1.0:
            raise ValueError(f"class_balance must be in (0, 1] (a share of each class's pixels), got {class_balance}")
        self.target_root, self.target_manifest, self.max_images = target_root, target_manifest, max_images
        self.records: list[Record] = []
        self.start_epoch = start_epoch
        self.every_n_epochs = every_n_epochs
        self.threshold = threshold
        self.repeats = repeats
        self.adapt_bn = adapt_batch_norm
        self.class_balance = class_balance
        self.tta = tta
        self.class_thresholds: list[float] | None = None
        self.synthetic: Dataset | None = None
        self.kept_fraction: float | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":  # pseudo-labels only join training; validate/test/predict need no target images
            return
        self.records = target_records_of(trainer, self.target_root, self.target_manifest, self.max_images, self)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(getattr(trainer, "datamodule", None), MicrographDataModule):
            raise TypeError("SelfTraining needs a MicrographDataModule, whose training set it extends")
        if getattr(trainer, "reload_dataloaders_every_n_epochs", 0) == 0:
            # Set by the Trainer's data connector, so not among the attributes type checkers see.
            trainer.reload_dataloaders_every_n_epochs = 1  # type: ignore[attr-defined]

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        upcoming = trainer.current_epoch + 1
        if upcoming >= self.start_epoch and (upcoming - self.start_epoch) % self.every_n_epochs == 0:
            self.refresh(trainer, pl_module)

    def refresh(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Pseudo-label the targets with the current model and put them into the DataModule's training set."""
        datamodule = getattr(trainer, "datamodule", None)
        assert isinstance(datamodule, MicrographDataModule)
        if self.synthetic is None:
            if datamodule.train_dataset is None:
                raise RuntimeError("SelfTraining found no training set on the DataModule")
            self.synthetic = datamodule.train_dataset
        masks = self.pseudo_labels(trainer, pl_module)
        labelled = sum(int((m != IGNORE_INDEX).sum()) for m in masks)
        self.kept_fraction = labelled / max(sum(m.numel() for m in masks), 1)
        paths = [r.path for r in self.records]
        pseudo = PseudoLabelDataset(paths, [m.numpy() for m in masks], datamodule.target_pipeline(), datamodule.seed)
        datamodule.train_dataset = ConcatSamples([self.synthetic, *[pseudo] * self.repeats])
        pl_module.log("self_training/kept_fraction", self.kept_fraction)
        log.info(
            "self-training: %d target images pseudo-labelled, %.1f %% of pixels confident (>= %.2f)",
            len(masks),
            100 * self.kept_fraction,
            self.threshold,
        )

    @torch.no_grad()
    def pseudo_labels(self, trainer: Trainer, pl_module: LightningModule) -> list[torch.Tensor]:
        """Confident labels of every target image at its own size (``IGNORE_INDEX`` elsewhere)."""
        saved = _batch_norm_state(pl_module) if self.adapt_bn else None
        if saved is not None:
            adapt_to_targets(trainer, pl_module, self.records, image_size=None, batch_size=8)
        datamodule = getattr(trainer, "datamodule", None)
        assert isinstance(datamodule, MicrographDataModule)
        pipeline = datamodule.pipeline(None)  # the evaluation path: whole image, shorter side to image_size
        predict = getattr(pl_module, "predict_logits", pl_module)  # sliding windows where the task has them

        def segmentation_logits(images: torch.Tensor) -> torch.Tensor:
            logits = predict(images)
            if logits.ndim != 4:
                raise TypeError(
                    f"SelfTraining needs a segmentation model; {type(pl_module).__name__} gave outputs of shape "
                    f"{tuple(logits.shape)}"
                )
            return logits

        views = views_from_invariances(getattr(datamodule, "invariances", None)) if self.tta else [IDENTITY]
        training = pl_module.training
        pl_module.eval()
        confidences, labels, num_classes = [], [], 0
        try:
            for record in self.records:
                image = read_image(record.path)
                batch = pipeline(image)["image"][None].to(pl_module.device)
                size = image.shape[:2]
                if views == [IDENTITY]:  # logits resized, then the softmax, as before TTA existed
                    logits = F.interpolate(segmentation_logits(batch).float(), size=size, mode="bilinear")
                    probabilities = logits.softmax(dim=1)
                else:  # the views' probabilities are averaged in the model's frame, then resized
                    averaged = mean_probabilities(segmentation_logits, batch, views, per_pixel=True).float()
                    probabilities = F.interpolate(averaged, size=size, mode="bilinear")
                probabilities = self.refine(probabilities, image)
                num_classes = probabilities.shape[1]
                confidence, label = probabilities[0].max(dim=0)
                confidences.append(confidence.cpu())
                labels.append(label.cpu())
        finally:
            pl_module.train(training)
            if saved is not None:
                _restore_batch_norm(pl_module, saved)
        least: float | torch.Tensor = self.threshold
        if self.class_balance is not None and labels:
            least = class_balanced_thresholds(confidences, labels, num_classes, self.threshold, self.class_balance)
            self.class_thresholds = least.tolist()
            log.info("self-training: least confidence kept per class %s", [round(t, 3) for t in self.class_thresholds])
        return [keep_confident(c, lab, least, IGNORE_INDEX) for c, lab in zip(confidences, labels, strict=True)]

    def refine(self, probabilities: torch.Tensor, image: np.ndarray) -> torch.Tensor:
        """The teacher's class probabilities of one target image before confidence is judged: as they are here.

        Subclasses may refine them with what the image itself shows (the benchmarks mix the micrograph's own
        edges into a grain-boundary class this way).

        Args:
            probabilities: ``(1, C, H, W)`` at the image's own size.
            image: The image as read, ``(H, W)`` or ``(H, W, C)`` in [0, 1].
        """
        return probabilities


def _batch_norm_state(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in layer.state_dict().items()} for layer in batch_norm_layers(model)]


def _restore_batch_norm(model: nn.Module, saved: Sequence[dict[str, torch.Tensor]]) -> None:
    for layer, state in zip(batch_norm_layers(model), saved, strict=True):
        layer.load_state_dict(state)
