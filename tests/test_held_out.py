"""Held-out test sets, unlabelled prediction sets, and training on every labelled image (num_folds: null)."""

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern, tensorboard_scalars, write_image, write_manifest_config

from smalldata_pl.cli import main
from smalldata_pl.datamodules import MicrographFolder
from smalldata_pl.datasets.leakage import LeakageError


def _labelled_folder(root: Path, per_class: int = 3, seed: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    for kind, name in enumerate(["ferrite", "pearlite"]):
        for i in range(per_class):
            write_image(root / name / f"{name}_{i}.png", pattern(kind, 32, rng))
    return root


def test_fit_on_everything_then_test_scores_a_separate_labelled_folder(tmp_path, grouped_manifest):
    config = write_manifest_config(tmp_path / "all.yaml", grouped_manifest, max_epochs=2, num_folds=2)
    main(["fit", "-c", str(config), "--data.init_args.num_folds=null", "--data.init_args.leakage_check=off"])
    fit_run = next(Path("lightning_logs").rglob("version_0"))
    fit_scalars = tensorboard_scalars(fit_run)
    assert not [tag for tag in fit_scalars if tag.startswith("val/")]  # no validation loop at all
    assert len(fit_scalars["train/loss_epoch"]) == 2
    last = fit_run / "checkpoints" / "last.ckpt"
    import torch

    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1  # the final epoch is the model
    held_out = _labelled_folder(tmp_path / "held_out")
    main(["test", "-c", str(config), "--data.init_args.num_folds=null", "--data.init_args.leakage_check=off",
          f"--data.init_args.test_root={held_out}", f"--ckpt_path={last}"])  # fmt: skip
    test_scalars = tensorboard_scalars(next(Path("lightning_logs").rglob("version_1")))
    assert set(test_scalars) >= {"test/acc", "test/loss", "test/f1"}


def test_the_held_out_set_is_what_test_scores(tmp_path, grouped_manifest):
    held_out = _labelled_folder(tmp_path / "held_out", per_class=2)
    data = MicrographFolder(grouped_manifest.parent, manifest=grouped_manifest, num_folds=2, image_size=32,
                            test_root=held_out, leakage_check="off")  # fmt: skip
    data.setup("test")
    assert sorted(Path(r.path).name for r in data.test_dataset.records) == sorted(
        p.name for p in held_out.rglob("*.png")
    )
    assert data.test_dataset is not data.val_dataset
    assert {int(data.test_dataset[i]["label"]) for i in range(4)} == {0, 1}


def test_a_held_out_copy_of_a_training_image_is_a_leak(tmp_path, grouped_manifest):
    held_out = tmp_path / "held_out" / "ferrite"
    held_out.mkdir(parents=True)
    source = grouped_manifest.parent / "img" / "ferrite_0_0.png"
    (held_out / "copy.png").write_bytes(source.read_bytes())
    data = MicrographFolder(grouped_manifest.parent, manifest=grouped_manifest, num_folds=None, image_size=32,
                            test_root=held_out.parent, class_names=["ferrite", "pearlite"])  # fmt: skip
    with pytest.raises(LeakageError, match="test image"):
        data.setup("test")


def test_a_held_out_set_with_an_unknown_class_is_refused(tmp_path, grouped_manifest):
    held_out = _labelled_folder(tmp_path / "held_out")
    write_image(held_out / "austenite" / "a.png", pattern(2, 32, np.random.default_rng(0)))
    data = MicrographFolder(grouped_manifest.parent, manifest=grouped_manifest, num_folds=2, image_size=32,
                            test_root=held_out, leakage_check="off")  # fmt: skip
    with pytest.raises(ValueError, match="austenite"):
        data.setup("test")


def test_predict_covers_an_unlabelled_folder(tmp_path, grouped_manifest):
    config = write_manifest_config(tmp_path / "c.yaml", grouped_manifest, max_epochs=1, num_folds=2)
    main(["fit", "-c", str(config), "--data.init_args.leakage_check=off"])
    last = next(Path("lightning_logs").rglob("last.ckpt"))
    rng = np.random.default_rng(9)
    new = tmp_path / "new"
    images = [write_image(new / f"n{i}.png", pattern(i % 2, 24 + 8 * i, rng)) for i in range(3)]
    write_image(new / "deeper" / "n9.png", pattern(0, 40, rng))
    main(["predict", "-c", str(config), "--data.init_args.leakage_check=off", f"--data.init_args.predict_root={new}",
          f"--ckpt_path={last}"])  # fmt: skip
    (predictions,) = Path("lightning_logs").rglob("predictions.csv")
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(images) + 1
    assert all(r["prediction"] in ("ferrite", "pearlite") for r in rows)
    assert "label" not in rows[0]


def test_segmentation_trains_on_everything_tests_a_held_out_manifest_and_predicts_unlabelled_images(tmp_path):
    from smalldata_pl.datamodules import SegmentationFolder

    rng = np.random.default_rng(0)

    def pairs(folder: Path, count: int) -> Path:
        rows = ["image,mask,group"]
        for i in range(count):
            mask = (rng.random((24, 24)) > 0.5).astype(np.uint8)
            write_image(folder / "images" / f"i{i}.png", (mask * 200 + 20).astype(np.uint8))
            write_image(folder / "masks" / f"i{i}.png", mask)
            rows.append(f"images/i{i}.png,masks/i{i}.png,g{i}")
        (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
        return folder / "manifest.csv"

    pairs(tmp_path / "train", 4)
    held_out = pairs(tmp_path / "held_out", 2)
    new = tmp_path / "new"
    write_image(new / "a.png", (rng.random((30, 20)) * 255).astype(np.uint8))
    data = SegmentationFolder(tmp_path / "train", ["a", "b"], crop_size=16, num_folds=None,
                              test_manifest=held_out, predict_root=new)  # fmt: skip
    data.setup("fit")
    assert len(data.train_dataset) == 4 and data.val_dataset is None and data.val_dataloader() == []
    data.setup("test")
    assert [r.image.name for r in data.test_dataset.records] == ["i0.png", "i1.png"]
    data.setup("predict")
    sample = data.predict_dataset[0]
    assert sample["image"].shape[-2:] == (30, 20) and "mask" not in sample and "label" not in sample
    without = SegmentationFolder(tmp_path / "train", ["a", "b"], crop_size=16, num_folds=None)
    without.setup("test")
    with pytest.raises(ValueError, match="test_manifest"):
        without.test_dataloader()
