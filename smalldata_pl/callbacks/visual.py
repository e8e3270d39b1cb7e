"""Pictures of what the model sees: input grids at fit start, Grad-CAM maps of validation images."""

import copy

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid
from typing_extensions import override


class InputSampleGrid(Callback):
    """Log a grid of training inputs at fit start: each original next to its augmented version.

    Args:
        num_samples: How many training samples to show.
    """

    def __init__(self, num_samples: int = 8) -> None:
        self.num_samples = num_samples

    @override
    @rank_zero_only
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        dataset = getattr(datamodule, "train_dataset", None)
        if not isinstance(trainer.logger, TensorBoardLogger) or dataset is None:
            return
        indices = range(min(self.num_samples, len(dataset)))
        if "image" not in dataset[(0, 0)]:
            return  # spectra and other non-image data
        augmented = [dataset[(0, i)]["image"] for i in indices]
        pipeline = getattr(dataset, "pipeline", None)
        images = augmented
        if pipeline is not None and pipeline.augment is not None and datamodule is not None:
            plain = copy.copy(dataset)
            plain.pipeline = datamodule.pipeline(None)
            originals = [plain[(0, i)]["image"] for i in indices]
            # Interleave so each row pair reads original | augmented.
            images = [img for pair in zip(originals, augmented, strict=True) for img in pair]
        side = min(min(img.shape[-2:]) for img in images)
        tiles = [_displayable(img, side) for img in images]
        grid = make_grid(torch.stack(tiles), nrow=2 if images is not augmented else 4)
        tag = "inputs/original_vs_augmented" if images is not augmented else "inputs/train_samples"
        trainer.logger.experiment.add_image(tag, grid, trainer.global_step)


def _displayable(image: torch.Tensor, side: int) -> torch.Tensor:
    """Rescale a normalised ``[C, H, W]`` image to [0, 1] with 1 or 3 channels and a ``side`` x ``side`` size."""
    image = image[:3] if image.shape[0] >= 3 else image[:1]
    if image.shape[-2:] != (side, side):
        image = F.interpolate(image[None], size=(side, side), mode="bilinear", align_corners=False)[0]
    low, high = image.min(), image.max()
    return (image - low) / (high - low + 1e-8)


class GradCamGrid(Callback):
    """Log Grad-CAM maps of a fixed set of validation images at validation end: where the classifier looks.

    The first ``num_samples`` validation images are kept at the first validation, so every epoch shows the same
    images; each is drawn with the heat map of the class the model predicts. Classifiers only (models with a
    backbone returning ``[N, K]`` logits); other tasks are skipped.

    Args:
        num_samples: Validation images shown.
        every_n_epochs: Draw every n-th validation.
    """

    def __init__(self, num_samples: int = 8, every_n_epochs: int = 1) -> None:
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self._images: torch.Tensor | None = None

    @override
    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object, *args: object, **kw: object
    ) -> None:
        if self._images is None and isinstance(batch, dict) and "label" in batch and batch["image"].ndim == 4:
            self._images = batch["image"][: self.num_samples].detach().clone().cpu()

    @override
    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            self._images is None
            or trainer.sanity_checking
            or not isinstance(trainer.logger, TensorBoardLogger)
            or not hasattr(pl_module, "backbone")
            or trainer.current_epoch % self.every_n_epochs
        ):
            return
        import numpy as np

        # Imported here: captum loads only for runs that draw maps, not for every command's start-up.
        from smalldata_pl.models.gradcam import gradcam, heatmap_overlay

        was_training = pl_module.training
        pl_module.eval()
        tiles = []
        # Validation runs under inference mode; Grad-CAM needs gradients of ordinary tensors.
        with torch.inference_mode(False), torch.enable_grad():
            images = self._images.clone().to(pl_module.device)
            predicted = pl_module(images).argmax(dim=1).tolist()
            for image, label in zip(images, predicted, strict=True):
                cam = gradcam(pl_module, image, int(label))
                grey = _displayable(image.detach().cpu(), min(image.shape[-2:]))
                grey = F.interpolate(grey[None], size=cam.shape, mode="bilinear", align_corners=False)[0]
                overlay = heatmap_overlay(grey.mean(dim=0).numpy(), cam)
                tiles.append(torch.from_numpy(np.ascontiguousarray(overlay)).permute(2, 0, 1).float() / 255)
        pl_module.train(was_training)
        side = min(min(t.shape[-2:]) for t in tiles)
        grid = make_grid(torch.stack([_displayable(t, side) for t in tiles]), nrow=4)
        trainer.logger.experiment.add_image("explain/gradcam_validation", grid, trainer.global_step)
