"""Checkpoints that never lose work: ``last.ckpt`` is always the newest state, also after an interruption."""

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override


class LastAndBestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` is rewritten at every epoch end, at the end of fit and on SIGTERM/SIGINT.

    Lightning's own ``save_last`` rewrites ``last.ckpt`` only in a step where a top-k checkpoint was saved, so with
    a monitored metric that stops improving ``last.ckpt`` holds an old epoch: a resume would retrain finished
    epochs and evaluation would use an older model than the user thinks. The best checkpoints keep their own names.
    Takes every argument of ``ModelCheckpoint``; given a ``monitor`` and no ``filename`` (both as keywords), the
    best checkpoints are named after the metric that chose them, e.g. ``epoch052-val_boundary_f1=0.7130.ckpt``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        monitor = kwargs.get("monitor")
        if monitor and kwargs.get("filename") is None:
            # A fixed template would name a checkpoint chosen by boundary F1 after its validation loss.
            kwargs["filename"] = f"epoch{{epoch:03d}}-{monitor.replace('/', '_')}={{{monitor}:.4f}}"
            kwargs["auto_insert_metric_name"] = False  # the template names the metric once, without a '/'
        super().__init__(*args, **kwargs)
        self._last_written_step = -1

    @override
    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def _refresh_last(self, trainer: Trainer) -> None:
        if (
            not self.save_last
            or getattr(trainer, "fast_dev_run", False)
            or trainer.sanity_checking
            or trainer.state.fn != "fit"
        ):
            return
        if self._last_written_step != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._refresh_last(trainer)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        if isinstance(exception, SIGTERMException | KeyboardInterrupt):
            self._refresh_last(trainer)
