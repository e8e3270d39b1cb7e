"""What evaluation needs from a training run, so it can drive runs without knowing how they are configured."""

from collections.abc import Callable, Sequence
from typing import Protocol

from lightning.pytorch import LightningDataModule, LightningModule, Trainer


class Run(Protocol):
    """A configured, not yet started run: the trainer, the model and the data it will use."""

    trainer: Trainer
    model: LightningModule
    datamodule: LightningDataModule


# Builds a fresh run from a base configuration plus overrides in command-line form
# (``--data.init_args.fold=2``); the command layer supplies it, e.g. a LightningCLI built with ``run=False``.
RunFactory = Callable[[Sequence[str]], Run]
