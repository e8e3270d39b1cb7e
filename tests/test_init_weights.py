"""``init_weights``: a whole trained network (encoder, decoder, head) as the start of a new fit."""

from pathlib import Path

import lightning as L
import pytest
import torch

from smalldata_pl.datamodules import SyntheticGrainBoundaries
from smalldata_pl.models.network_weights import load_network_weights
from smalldata_pl.tasks import MicrographSegmenter

NETWORK = ("encoder.", "decoder.", "head.")


def tiny_data() -> SyntheticGrainBoundaries:
    return SyntheticGrainBoundaries(train_size=4, val_size=2, image_size=32, batch_size=2)


def trainer(steps: int = 1) -> L.Trainer:
    return L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=1,
    )  # fmt: skip


def network(model: MicrographSegmenter) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith(NETWORK)}


def fitted_checkpoint(path: Path, **options) -> tuple[Path, MicrographSegmenter]:
    model = MicrographSegmenter("test_resnet", num_classes=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.5), **options)
    run = trainer()
    run.fit(model, datamodule=tiny_data())
    run.save_checkpoint(path)
    return path, model


def test_init_weights_start_the_whole_network_and_leave_the_task_settings_alone(tmp_path):
    checkpoint, source = fitted_checkpoint(tmp_path / "synthetic.ckpt")
    fresh = MicrographSegmenter("test_resnet", num_classes=2, class_weights=[1.0, 5.0], init_weights=str(checkpoint))
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in network(source).items())
    trainer().validate(fresh, datamodule=tiny_data())  # the Trainer's setup applies them
    assert network(fresh).keys() == network(source).keys()
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in network(source).items())
    assert fresh.class_weights.tolist() == [1.0, 5.0]  # configured, not copied from the checkpoint

    other_classes = MicrographSegmenter("test_resnet", num_classes=3)
    report = load_network_weights(other_classes, checkpoint, ["encoder", "decoder", "head"])
    assert report.kept_fresh == ["head.weight", "head.bias"]
    assert report.loaded == report.expected - 2 and "kept 2 fresh (head.weight" in str(report)
    assert torch.equal(other_classes.encoder.conv1[0].weight, source.encoder.conv1[0].weight)


def test_a_model_fine_tuned_from_init_weights_keeps_its_own_weights_without_the_file(tmp_path):
    start, _ = fitted_checkpoint(tmp_path / "synthetic.ckpt")
    tuned_path, tuned = fitted_checkpoint(tmp_path / "tuned.ckpt", init_weights=str(start))
    start.unlink()  # rebuilding the fine-tuned model must not need its starting point
    loaded = MicrographSegmenter.load_from_checkpoint(tuned_path, map_location="cpu")
    trainer().validate(loaded, datamodule=tiny_data())  # setup runs again: it must not re-initialise
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in network(tuned).items())


def test_init_weights_errors_name_the_file_and_the_fix(tmp_path):
    missing = MicrographSegmenter("test_resnet", num_classes=2, init_weights=str(tmp_path / "nowhere.ckpt"))
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        trainer().validate(missing, datamodule=tiny_data())
    checkpoint, _ = fitted_checkpoint(tmp_path / "resnet.ckpt")
    other_backbone = MicrographSegmenter("test_efficientnet", num_classes=2)
    with pytest.raises(ValueError, match="resnet.ckpt does not hold .* same task and backbone"):
        load_network_weights(other_backbone, checkpoint, ["encoder", "decoder", "head"])
