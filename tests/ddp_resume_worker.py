"""Two-rank CPU DDP runs for test_ddp.py: a mid-epoch stop and resume against an uninterrupted run (gloo).

Lightning re-launches this script for rank 1, so it must be a standalone file. Rank 1 runs the same three fits
in the same order; the process group made for the first fit serves the other two.
"""

import sys
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from smalldata_pl.callbacks import StagedUnfreezing
from smalldata_pl.datamodules import SyntheticGrains
from smalldata_pl.tasks import MicrographClassifier

# 15 samples: the two ranks' shares (8 each) need one padding sample; 2 batches of 4 per rank and epoch.
TRAIN_SIZE, BATCH_SIZE, MAX_EPOCHS, STOP_STEP = 15, 4, 3, 3  # step 3: after the first batch of epoch 1


class BatchRecorder(Callback):
    """The sample ids of every training batch of this rank, with its epoch and index."""

    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches.append((trainer.current_epoch, batch_idx, list(batch["group"])))


class SaveAndStopMidEpoch(Callback):
    """Writes a checkpoint after a given global step and stops, as a job killed mid-epoch after saving would."""

    def __init__(self, step, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def fit(out: Path, callbacks: list[Callback], ckpt_path: Path | None = None) -> tuple[MicrographClassifier, int]:
    seed_everything(0)
    model = MicrographClassifier("test_resnet", num_classes=4, optimizer=partial(torch.optim.AdamW, lr=0.01))
    flips = [{"HorizontalFlip": {"p": 0.5}}, {"VerticalFlip": {"p": 0.5}}]  # seeded per (epoch, sample)
    data = SyntheticGrains(train_size=TRAIN_SIZE, val_size=4, image_size=32, batch_size=BATCH_SIZE, augmentation=flips)
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=MAX_EPOCHS,
        deterministic=True,
        default_root_dir=out,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StagedUnfreezing(unfreeze_at=[1], warmup_steps=3), *callbacks],
    )
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer.global_rank


def main(out: Path) -> None:
    checkpoint = out / "mid_epoch.ckpt"
    reference, interrupted, resumed = BatchRecorder(), BatchRecorder(), BatchRecorder()
    uninterrupted_model, rank = fit(out, [reference])
    fit(out, [interrupted, SaveAndStopMidEpoch(STOP_STEP, checkpoint)])
    resumed_model, _ = fit(out, [resumed], ckpt_path=checkpoint)
    torch.save(
        {
            "uninterrupted": uninterrupted_model.state_dict(),
            "resumed": resumed_model.state_dict(),
            "reference_batches": reference.batches,
            "interrupted_batches": interrupted.batches,
            "resumed_batches": resumed.batches,
        },
        out / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
