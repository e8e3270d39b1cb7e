"""Synthetic samples mixed into a few real ones: training only, same classes and shapes, through the CLI too."""

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from test_cross_validation_segmentation import write_segmentation_manifest

from smalldata_pl.cli import main
from smalldata_pl.datamodules import SegmentationFolder, SyntheticGrainBoundaries, SyntheticPrecipitates
from smalldata_pl.generators.precipitates import PHASE_NAMES
from smalldata_pl.generators.styles import resolve_style
from smalldata_pl.inference.predictor import load_predictor
from smalldata_pl.models.checkpoint_files import plain_hyperparameters
from smalldata_pl.models.encoder_export import export_encoder
from smalldata_pl.tasks import MicrographSegmenter

PHASES = list(PHASE_NAMES)


def synthetic(**overrides: object) -> SyntheticPrecipitates:
    options: dict = {"train_size": 5, "val_size": 2, "test_size": 2, "image_size": 24, "fresh_each_epoch": True}
    return SyntheticPrecipitates(**{**options, **overrides})


def test_mix_in_joins_training_only_and_is_fresh_each_epoch(tmp_path: Path) -> None:
    root = write_segmentation_manifest(tmp_path / "real")
    data = SegmentationFolder(
        root, PHASES, num_folds=3, crop_size=24, crops_per_image=2, batch_size=4, mix_in=synthetic(train_size=4)
    )
    data.setup("fit")
    own = len(data.train_dataset)
    loader = data.train_dataloader()
    assert len(loader.dataset) == own + 4
    first = [g for batch in loader for g in batch["group"]]
    assert sum(g.startswith("SyntheticPrecipitates") for g in first) == 4 and len(first) == own + 4
    assert all(batch["image"].shape[1:] == (1, 24, 24) for batch in loader)
    # Validation never sees a synthetic sample.
    assert not any(g.startswith("SyntheticPrecipitates") for batch in data.val_dataloader() for g in batch["group"])
    # The next epoch draws new synthetic images (fresh_each_epoch), the real ones stay.
    key = own  # the first synthetic sample
    assert not torch.equal(loader.dataset[(0, key)]["image"], loader.dataset[(1, key)]["image"])
    assert SegmentationFolder(root, PHASES, num_folds=3, crop_size=24).mixed(data.train_dataset) is data.train_dataset


def test_mix_in_with_other_classes_channels_or_size_is_refused(tmp_path: Path) -> None:
    root = write_segmentation_manifest(tmp_path / "real")

    def loader_with(mix_in: object, **options: object) -> None:
        data = SegmentationFolder(root, PHASES, num_folds=3, crop_size=24, mix_in=mix_in, **options)
        data.setup("fit")
        data.train_dataloader()

    with pytest.raises(ValueError, match=r"classes \['grain', 'boundary'\].*same order"):
        loader_with(SyntheticGrainBoundaries(train_size=2, val_size=1, image_size=24))
    with pytest.raises(ValueError, match="in_chans"):
        loader_with(synthetic(in_chans=3))
    with pytest.raises(ValueError, match=r"shape \(1, 32, 32\).*image_size"):
        loader_with(synthetic(image_size=32))


def test_cli_fit_mixes_synthetic_samples_in_from_yaml(tmp_path: Path) -> None:
    root = write_segmentation_manifest(tmp_path / "real")
    config = {
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False, "log_every_n_steps": 1},
        "model": {"class_path": "smalldata_pl.tasks.MicrographSegmenter", "init_args": {"backbone": "test_resnet"}},
        "data": {
            "class_path": "smalldata_pl.datamodules.SegmentationFolder",
            "init_args": {
                "root": str(root), "class_names": PHASES, "num_folds": 3, "crop_size": 24, "batch_size": 4,
                "mix_in": {
                    "class_path": "smalldata_pl.datamodules.SyntheticPrecipitates",
                    "init_args": {"train_size": 8, "val_size": 2, "image_size": 24},
                },
            },
        },
    }  # fmt: skip
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "-c", "mix.yaml"])
    run = tmp_path / "lightning_logs" / "smalldata" / "version_0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # Four real images (two folds' worth of groups) give 4 crops and the mix-in 8: three steps of batch 4.
    assert checkpoint["global_step"] == 3
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["init_args"]["mix_in"]["class_path"] == "smalldata_pl.datamodules.SyntheticPrecipitates"


def test_a_python_fit_with_paths_and_a_mix_in_writes_a_checkpoint_apply_reads(tmp_path: Path) -> None:
    """Arguments given from Python (a Path root, a mix_in DataModule, a ModelCheckpoint folder as a Path) must not
    make the checkpoint unreadable for ``load_predictor``, which loads with ``weights_only=True``."""
    root = write_segmentation_manifest(tmp_path / "real")
    data = SegmentationFolder(root, PHASES, num_folds=None, crop_size=24, batch_size=4, mix_in=synthetic())
    model = MicrographSegmenter("test_resnet", num_classes=3, class_names=PHASES, in_chans=1)
    folder = tmp_path / "checkpoints"
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=folder)], limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    (checkpoint,) = folder.glob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["datamodule_hyper_parameters"]["root"] == str(root)
    mix_in = saved["datamodule_hyper_parameters"]["mix_in"]
    assert mix_in["class_path"] == "smalldata_pl.datamodules.procedural.SyntheticPrecipitates"
    assert mix_in["init_args"]["train_size"] == 5
    assert plain_hyperparameters({"style": resolve_style("realistic")})["style"]["groove_width"] == (0.6, 2.0)
    prediction = load_predictor(checkpoint).predict(root / "images" / "im0.png")
    assert prediction.mask is not None and prediction.mask.shape == (24, 24)
    assert export_encoder(checkpoint, tmp_path / "encoder.pth") > 0  # smalldata export-encoder reads it too
