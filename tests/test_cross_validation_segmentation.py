"""Segmentation is first-class in cv and audit; the cv summary reports the corrected resampled t interval."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern, write_image
from PIL import Image

from smalldata_pl.cli import main
from smalldata_pl.datamodules import SegmentationFolder
from smalldata_pl.evaluation.summary import format_summary, summarize

CLASSES = ["matrix", "phase", "dots"]


def write_segmentation_manifest(root: Path, count: int = 6, size: int = 24) -> Path:
    """``count`` tiny image/mask pairs in ``images/``, ``masks/``, two per group (``spot0`` …)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        mask[rng.integers(0, size // 2) :, : rng.integers(size // 4, size)] = 1
        mask[rng.integers(0, size, 4), rng.integers(0, size, 4)] = 2
        write_image(root / "images" / f"im{i}.png", pattern(i, size, rng))  # each its own random texture
        write_image(root / "masks" / f"im{i}.png", mask)
        rows.append({"image": f"images/im{i}.png", "mask": f"masks/im{i}.png", "group": f"spot{i // 2}"})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "mask", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def write_segmentation_config(path: Path, root: Path, num_folds: int = 2) -> Path:
    path.write_text(
        f"""
trainer:
  max_epochs: 1
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
model:
  class_path: smalldata_pl.tasks.MicrographSegmenter
  init_args:
    backbone: test_resnet
data:
  class_path: smalldata_pl.datamodules.SegmentationFolder
  init_args:
    root: {root}
    class_names: {CLASSES}
    num_folds: {num_folds}
    crop_size: 24
    batch_size: 4
"""
    )
    return path


def test_cv_on_a_segmentation_config_summarises_val_metrics_and_writes_oof_masks(tmp_path, capsys):
    root = write_segmentation_manifest(tmp_path / "seg")
    config = write_segmentation_config(tmp_path / "seg.yaml", root)
    cv_dir = tmp_path / "cv"
    main(["cv", "-c", str(config), "--cv_dir", str(cv_dir)])

    summary = json.loads((cv_dir / "summary.json").read_text())
    assert summary["num_folds"] == 2 and set(summary["folds"]) == {"fold_0", "fold_1"}
    metrics = summary["metrics"]
    assert metrics and all(name.startswith("val/") for name in metrics)  # discovered from what the task logged
    assert "val/loss" in metrics and "val/acc" not in metrics
    for name, stats in metrics.items():
        folds = [summary["folds"][f][name] for f in ("fold_0", "fold_1")]
        assert stats["mean"] == pytest.approx(np.mean(folds), nan_ok=True)
        assert {"ci95_plain_low", "ci95_corrected_high"} <= set(stats)
    printed = capsys.readouterr()
    assert "corrected" in printed.out
    assert "fold 1/2" in printed.err and "fold 2/2" in printed.err and "left" in printed.err

    oof = list(csv.DictReader((cv_dir / "oof_predictions.csv").open()))
    assert len(oof) == 6 and len({r["path"] for r in oof}) == 6  # every image once, from the fold that held it out
    for row in oof:
        mask_file = cv_dir / row["mask"]
        assert mask_file.parent == cv_dir / "oof_masks" / f"fold_{row['fold']}"
        mask = np.asarray(Image.open(mask_file))
        assert mask.shape == (24, 24) and set(np.unique(mask).tolist()) <= {0, 1, 2}
    assert {p.parent.name for p in (cv_dir / "oof_masks").rglob("*.png")} == {"fold_0", "fold_1"}


def test_audit_checks_the_group_folds_of_a_segmentation_datamodule(tmp_path):
    root = write_segmentation_manifest(tmp_path / "seg")
    # A planted copy: spot2's first image is spot0's first image flipped.
    planted = np.asarray(Image.open(root / "images" / "im0.png"))[:, ::-1]
    write_image(root / "images" / "im4.png", np.ascontiguousarray(planted))
    config = write_segmentation_config(tmp_path / "seg.yaml", root, num_folds=3)
    report = tmp_path / "leaks.csv"
    main(["audit", "-c", str(config), "--report", str(report)])
    rows = list(csv.DictReader(report.open()))
    copies = [r for r in rows if r["kind"] == "copy"]
    assert copies and all({Path(r["train"]).name, Path(r["validation"]).name} == {"im0.png", "im4.png"} for r in copies)
    assert not [r for r in rows if r["kind"] == "group"]  # group K-fold keeps every spot on one side
    assert len({r["fold"] for r in copies}) == 2  # found from both sides: spot0 held out, then spot2


def test_summary_reports_the_nadeau_bengio_corrected_interval_beside_the_plain_one():
    scores = [0.8, 0.9, 0.7, 0.85, 0.75]
    summary = summarize({f"fold_{k}": {"val/acc": s} for k, s in enumerate(scores)})
    stats = summary["metrics"]["val/acc"]
    # By hand: mean 0.8; squared deviations 0, .01, .01, .0025, .0025 sum to .025, s² = .025/4 = .00625;
    # t(0.975, 4) = 2.776445105; plain half-width t·sqrt(s²/5) = t·0.0353553 = 0.0981621;
    # corrected half-width t·sqrt(s²·(1/5 + 1/4)) = t·sqrt(.0028125) = t·0.0530330 = 0.1472432.
    t = 2.7764451051977987
    assert stats["mean"] == pytest.approx(0.8)
    assert stats["std"] == pytest.approx(math.sqrt(0.00625))
    assert stats["ci95_plain_high"] - stats["mean"] == pytest.approx(t * math.sqrt(0.00625 / 5))
    assert stats["ci95_plain_high"] - stats["mean"] == pytest.approx(0.0981621, abs=1e-6)
    assert stats["mean"] - stats["ci95_corrected_low"] == pytest.approx(0.1472432, abs=1e-6)
    assert summary["interval"]["test_train_ratio"] == pytest.approx(0.25)
    text = format_summary(summary)
    assert "plain 0.7018 to 0.8982" in text and "corrected 0.6528 to 0.9472" in text and "Nadeau-Bengio" in text

    # A known n_test/n_train (e.g. a held-out fraction) replaces the K-fold default 1/(K-1).
    explicit = summarize({f"fold_{k}": {"val/acc": s} for k, s in enumerate(scores)}, test_train_ratio=0.5)
    half = explicit["metrics"]["val/acc"]["ci95_corrected_high"] - 0.8
    assert half == pytest.approx(t * math.sqrt(0.00625 * (0.2 + 0.5)))


def test_summary_leaves_out_metrics_that_some_folds_did_not_log():
    summary = summarize({"fold_0": {"val/loss": 1.0, "val/iou_dots": 0.2}, "fold_1": {"val/loss": 0.5}})
    assert list(summary["metrics"]) == ["val/loss"]
    assert summary["incomplete_metrics"] == ["val/iou_dots"]
    assert "val/iou_dots" in format_summary(summary)


def test_augment_writes_image_and_mask_pairs_that_load_back(tmp_path):
    root = write_segmentation_manifest(tmp_path / "seg")
    config = write_segmentation_config(tmp_path / "seg.yaml", root)
    out = tmp_path / "augmented"
    main(
        [
            "augment",
            "-c",
            str(config),
            "--data.init_args.augmentation",
            "micrograph",
            "--copies",
            "2",
            "--out",
            str(out),
        ]
    )
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 12 and len({r["image"] for r in rows}) == 12
    assert rows[0] == {
        "image": "images/images/im0_aug0.png",
        "mask": "masks/images/im0_aug0.png",
        "group": "spot0",
        "source": str(root / "images" / "im0.png"),
    }
    data = SegmentationFolder(out, CLASSES, num_folds=3, crop_size=24)  # checks every pair exists
    data.setup("fit")
    sample = data.val_dataset[0]  # the mask matches its image and holds only class indices
    assert sample["image"].shape[-2:] == sample["mask"].shape == (24, 24)
