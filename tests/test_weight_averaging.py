"""``smalldata average-weights``: a fine-tune averaged with its start, weight by weight (WiSE-FT)."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from smalldata_pl.callbacks import StagedUnfreezing
from smalldata_pl.cli.main import main
from smalldata_pl.datamodules import SyntheticGrainBoundaries
from smalldata_pl.inference.predictor import load_predictor
from smalldata_pl.models.weight_averaging import average_weights
from smalldata_pl.tasks import MicrographSegmenter


def fit(path: Path, keep_bn: bool, init_weights: str | None = None) -> Path:
    """A tiny segmenter fitted for two steps (from ``init_weights``), saved to ``path``."""
    model = MicrographSegmenter(
        "test_resnet", num_classes=2, init_weights=init_weights, optimizer=lambda p: torch.optim.SGD(p, lr=0.5)
    )
    # The overlay keep_pretrained_bn.yaml: every layer trains from the first step, BatchNorm keeps its statistics.
    callbacks = [StagedUnfreezing(stages=[{"epoch": 0, "groups": ["backbone"]}], lr_decay=1.0, keep_bn_eval=True)]
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=1, callbacks=callbacks if keep_bn else [],
    )  # fmt: skip
    trainer.fit(model, datamodule=SyntheticGrainBoundaries(train_size=4, val_size=2, image_size=32, batch_size=2))
    trainer.save_checkpoint(path)
    return path


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_average_weights_interpolates_learnt_weights_and_keeps_the_rest():
    start = {"w": torch.zeros(3), "bn.running_mean": torch.ones(2), "bn.num_batches_tracked": torch.tensor(5)}
    tuned = {"w": torch.full((3,), 2.0), "bn.running_mean": torch.ones(2), "bn.num_batches_tracked": torch.tensor(9)}
    averaged = average_weights(start, tuned, alpha=0.25)
    assert torch.equal(averaged["w"], torch.full((3,), 0.5))
    assert torch.equal(averaged["bn.running_mean"], torch.ones(2)) and averaged["bn.num_batches_tracked"] == 9
    assert all(torch.equal(average_weights(start, tuned, 1.0)[k], v) for k, v in tuned.items())
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        average_weights(start, tuned, alpha=0.0)
    with pytest.raises(ValueError, match="BatchNorm statistics, e.g. bn.running_mean"):
        average_weights(start, {**tuned, "bn.running_mean": torch.zeros(2)}, alpha=0.5)
    with pytest.raises(ValueError, match="differ in 1 tensors, e.g. extra"):
        average_weights(start, {**tuned, "extra": torch.zeros(1)}, alpha=0.5)


def test_average_weights_command_writes_a_checkpoint_that_apply_runs(tmp_path):
    start = fit(tmp_path / "start.ckpt", keep_bn=False)
    tuned = fit(tmp_path / "tuned.ckpt", keep_bn=True, init_weights=str(start))
    out = tmp_path / "averaged.ckpt"
    main(["average-weights", str(start), str(tuned), "--alpha", "0.5", "--out", str(out)])
    start_state, tuned_state, averaged = state(start), state(tuned), state(out)
    weight = "encoder.conv1.0.weight"
    assert not torch.equal(start_state[weight], tuned_state[weight])  # the fine-tune moved it
    assert torch.allclose(averaged[weight], (start_state[weight] + tuned_state[weight]) / 2)
    statistics = [k for k in averaged if "running_" in k]
    assert statistics and all(torch.equal(averaged[k], tuned_state[k]) for k in statistics)
    image = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    assert load_predictor(out).predict(image).mask.shape == (40, 40)


def test_average_weights_refuses_a_fine_tune_that_moved_its_statistics_and_names_the_fix(tmp_path):
    start = fit(tmp_path / "start.ckpt", keep_bn=False)
    tuned = fit(tmp_path / "tuned.ckpt", keep_bn=False, init_weights=str(start))
    with pytest.raises(
        ValueError, match=r"tuned.ckpt with .*start.ckpt: the fine-tune re-estimated .*keep_pretrained_bn"
    ):
        main(["average-weights", str(start), str(tuned), "--out", str(tmp_path / "averaged.ckpt")])
    # A start for three classes: its head differs in shape (weight and bias).
    torch.save({"state_dict": MicrographSegmenter("test_resnet", num_classes=3).state_dict()}, tmp_path / "three.ckpt")
    with pytest.raises(ValueError, match=r"differ in 2 tensors .*init_weights"):
        main(["average-weights", str(tmp_path / "three.ckpt"), str(start), "--out", str(tmp_path / "x.ckpt")])
    assert not (tmp_path / "averaged.ckpt").exists() and not (tmp_path / "x.ckpt").exists()
