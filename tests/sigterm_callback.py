"""A callback for the SIGTERM test: the process sends itself SIGTERM mid-run, as a scheduler's time limit would."""

import os
import signal

from lightning.pytorch import Callback, LightningModule, Trainer


class SigtermAtStep(Callback):
    """Send SIGTERM to this process after training step ``step``."""

    def __init__(self, step: int = 3) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
