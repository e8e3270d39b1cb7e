"""Pictures of what the model sees: input grids (originals beside their augmented versions) at fit start."""

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
