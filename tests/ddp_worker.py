"""Two-rank CPU DDP run for test_ddp.py: staged unfreezing under Lightning's DDP strategy (gloo).

Lightning re-launches this script for rank 1, so it must be a standalone file.
"""

import sys
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from smalldata_pl.callbacks import StagedUnfreezing
from smalldata_pl.datamodules import SyntheticGrains
from smalldata_pl.tasks import MicrographClassifier


class LossRecorder(Callback):
    def __init__(self):
        self.losses = []

    def on_train_epoch_end(self, trainer, module):
        self.losses.append(float(trainer.callback_metrics["train/loss_epoch"]))


def main(out: Path) -> None:
    seed_everything(0)
    model = MicrographClassifier("test_resnet", num_classes=4, optimizer=partial(torch.optim.AdamW, lr=0.01))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    data = SyntheticGrains(train_size=32, val_size=8, image_size=32, batch_size=8)
    recorder = LossRecorder()
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StagedUnfreezing(unfreeze_at=[1, 2]), recorder],
    )
    trainer.fit(model, data)
    torch.save(
        {
            "state": model.state_dict(),
            "initial": initial,
            "losses": recorder.losses,
            "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        },
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
