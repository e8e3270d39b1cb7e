import csv
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from PIL import Image

from smalldata_pl.datamodules import SegmentationFolder
from smalldata_pl.models.losses import segmentation_loss
from smalldata_pl.models.metrics import BoundaryF1, ClassIoU
from smalldata_pl.tasks import MicrographClassifier, MicrographSegmenter, SpectrumClassifier
from smalldata_pl.transforms.pipeline import IGNORE_INDEX

CLASSES = ["background", "phase", "dots"]


def write_split_dataset(
    root: Path, bad_split: str | None = None, bad: str = "value", small_train: int | None = None, size: int = 40
) -> Path:
    """Images 0-1 train, 2 val, 3 test (official split ``S``); the first image of ``bad_split`` gets a bad mask."""
    rows = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        side = small_train if small_train and i == 0 else size
        mask = np.zeros((side, side), np.uint8)
        mask[side // 2 :, : side - 3] = 1
        mask[2:5, 2:5] = 2
        image = (0.2 + 0.3 * mask).astype(np.float32)
        mask_file: np.ndarray = mask
        if split == bad_split:
            if bad == "value":
                mask_file = mask.copy()
                mask_file[0, 0] = 7
            elif bad == "size":
                mask_file = mask[:-4]
            else:  # "channels": a colour-coded RGB mask
                mask_file = np.stack([mask * 100] * 3, axis=-1)
            bad_split = None  # only the first image of that split
        for folder in ("images", "masks"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask_file).save(root / "masks" / f"im{i}.png")
        rows.append(
            {
                "image": f"images/im{i}.png",
                "mask": f"masks/im{i}.png",
                "group": f"g{i}",
                "official_splits": f"S:{split}",
            }
        )
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "mask", "group", "official_splits"])
        writer.writeheader()
        writer.writerows(rows)
    return root


FIXES = {"value": "extend class_names", "size": "pixel for pixel", "channels": "single-channel"}


@pytest.mark.parametrize("bad", ["value", "size", "channels"])
@pytest.mark.parametrize(("split", "index"), [("train", 0), ("val", 2), ("test", 3)])
def test_bad_mask_in_any_split_fails_at_setup_naming_mask_image_and_fix(tmp_path, bad, split, index):
    root = write_split_dataset(tmp_path / "data", bad_split=split, bad=bad)
    dm = SegmentationFolder(root, CLASSES, official_split="S", crop_size=32)
    with pytest.raises(ValueError, match=re.escape(str(root / "masks" / f"im{index}.png"))) as error:
        dm.setup("fit")
    assert str(root / "images" / f"im{index}.png") in str(error.value)
    assert FIXES[bad] in str(error.value)


def test_unlabelled_pixels_of_ignore_value_are_ignore_index_and_refused_without_it(tmp_path):
    root = write_split_dataset(tmp_path / "data")
    unlabelled = {}
    for index in range(4):  # pseudo-labels with pixels their teacher was unsure of (apply --unsure_below)
        path = root / "masks" / f"im{index}.png"
        mask = np.asarray(Image.open(path)).copy()
        mask[10:14, 5 + index : 20] = 255
        Image.fromarray(mask).save(path)
        unlabelled[index] = mask == 255
    with pytest.raises(ValueError, match=r"im0\.png.*\[255\].*ignore_value: 255"):
        SegmentationFolder(root, CLASSES, official_split="S", crop_size=32).setup("fit")
    with pytest.raises(ValueError, match="ignore_value 1 is the mask value of class 'phase'"):
        SegmentationFolder(root, CLASSES, official_split="S", ignore_value=1)

    dm = SegmentationFolder(root, CLASSES, official_split="S", crop_size=40, ignore_value=255)
    dm.setup("fit")
    for dataset, index in ((dm.train_dataset, 0), (dm.val_dataset, 2)):  # a whole-image crop, and evaluation
        mask = dataset[0]["mask"].numpy()
        original = np.asarray(Image.open(root / "masks" / f"im{index}.png")).astype(np.int64)
        np.testing.assert_array_equal(mask == IGNORE_INDEX, unlabelled[index])
        np.testing.assert_array_equal(mask[~unlabelled[index]], original[~unlabelled[index]])


class CountTrainingBatches(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, *args: object) -> None:
        self.batches += 1


def test_bad_validation_mask_stops_fit_before_the_first_training_step(tmp_path):
    root = write_split_dataset(tmp_path / "data", bad_split="val", bad="value")
    dm = SegmentationFolder(root, CLASSES, official_split="S", crop_size=32, batch_size=2)
    counter = CountTrainingBatches()
    trainer = Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[counter],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"im2\.png.*value\(s\) \[7\]"):
        trainer.fit(MicrographSegmenter("test_resnet", num_classes=3), datamodule=dm)
    assert counter.batches == 0


def test_image_smaller_than_crop_is_padded_with_ignore_index_and_warned(tmp_path, caplog):
    root = write_split_dataset(tmp_path / "data", small_train=20)
    dm = SegmentationFolder(root, CLASSES, official_split="S", crop_size=32)
    with caplog.at_level(logging.WARNING, logger="smalldata_pl.datamodules.segmentation"):
        dm.setup("fit")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(root / "images" / "im0.png") in warnings[0] and "20x20" in warnings[0]

    original = torch.from_numpy(np.asarray(Image.open(root / "masks" / "im0.png")).astype(np.int64))
    sample = dm.train_dataset[0]
    mask, image = sample["mask"], sample["image"]
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    labelled = mask != IGNORE_INDEX
    assert int(labelled.sum()) == 20 * 20  # no padded pixel passes for class 0
    rows, cols = labelled.any(1).nonzero()[:, 0], labelled.any(0).nonzero()[:, 0]
    assert torch.equal(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], original)
    padding = image[0][~labelled]
    assert torch.allclose(padding, torch.full_like(padding, (0.0 - dm.mean[0]) / dm.std[0]))  # image padded with 0

    # The loss of the padded crop is the loss of its labelled pixels alone, with or without class weights.
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 32, 32)
    inner = (slice(None), slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    for kind in ("ce", "dice", "ce+dice"):
        for weights in (None, torch.tensor([1.0, 2.0, 5.0])):
            padded = segmentation_loss(logits, mask[None], kind, weights)
            assert torch.isfinite(padded)
            expected = segmentation_loss(logits[inner], original[None], kind, weights)
            assert padded.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("kind", ["ce", "dice", "ce+dice"])
def test_loss_of_a_batch_without_labelled_pixels_is_finite(kind):
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 8, 8), IGNORE_INDEX), kind, torch.tensor([1.0, 1.0, 3.0]))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and torch.isfinite(logits.grad).all()


def test_mean_iou_leaves_out_classes_absent_from_prediction_and_truth():
    truth = torch.tensor([[0, 0, 1, 1, 1, 3, IGNORE_INDEX]])
    prediction = torch.tensor([[0, 1, 1, 1, 0, 3, 2]])  # class 2 appears only under an ignored pixel
    iou = ClassIoU(4)
    iou.update(prediction[:, :4], truth[:, :4])
    iou.update(prediction[:, 4:], truth[:, 4:])  # counts accumulate over batches
    per_class = iou.compute()
    # class 0: 1 / 3, class 1: 2 / 4, class 2: absent from both (NaN), class 3: 1 / 1
    assert per_class[[0, 1, 3]].tolist() == pytest.approx([1 / 3, 2 / 4, 1.0])
    assert torch.isnan(per_class[2])
    assert ClassIoU.mean(per_class).item() == pytest.approx((1 / 3 + 2 / 4 + 1.0) / 3)


def lines(shape: tuple[int, int], *segments: tuple[int, int, int]) -> torch.Tensor:
    """A class-index mask with boundary class 1 on vertical segments ``(column, first_row, last_row)``."""
    mask = torch.zeros(shape, dtype=torch.long)
    for column, first, last in segments:
        mask[first : last + 1, column] = 1
    return mask


def test_boundary_f1_matches_a_hand_computed_example():
    truth = lines((10, 10), (2, 0, 9))
    prediction = lines((10, 10), (4, 0, 4), (9, 0, 9))
    metric = BoundaryF1(boundary_class=1, tolerance=3)
    metric.update(prediction, truth)
    # Precision: the 5 pixels of column 4 lie 2 px from the truth, the 10 of column 9 lie 7 px away: 5 / 15.
    # Recall: true rows 0-6 lie within 3 px of (row 4, column 4) or above (row 6: sqrt(8)), row 7 is sqrt(13): 7 / 10.
    precision, recall = 5 / 15, 7 / 10
    assert metric.compute().item() == pytest.approx(2 * precision * recall / (precision + recall))
    assert metric.compute().item() == pytest.approx(14 / 31)


def test_boundary_f1_sums_counts_over_batches_of_unequal_size():
    shape = (12, 12)
    # Batch A (2 images): long boundaries found exactly. Batch B (1 image): a short one missed entirely.
    batch_a = (torch.stack([lines(shape, (3, 0, 11)), lines(shape, (8, 0, 11))]),) * 2
    batch_b = (lines(shape, (10, 0, 2))[None], lines(shape, (1, 9, 11))[None])
    metric = BoundaryF1(boundary_class=1)
    per_batch = []
    for prediction, truth in (batch_a, batch_b):
        metric.update(prediction, truth)
        single = BoundaryF1(boundary_class=1)
        single.update(prediction, truth)
        per_batch.append(single.compute().item())
    pooled = BoundaryF1(boundary_class=1)
    pooled.update(torch.cat([batch_a[0], batch_b[0]]), torch.cat([batch_a[1], batch_b[1]]))
    assert metric.compute().item() == pytest.approx(pooled.compute().item())
    # precision 24 / 27, recall 24 / 27: F1 8 / 9, not the per-batch mean (1 + 0) / 2
    assert metric.compute().item() == pytest.approx(8 / 9)
    assert per_batch == [1.0, 0.0]

    # Two ranks' states merge by summing (what DDP does with dist_reduce_fx="sum").
    rank0, rank1 = BoundaryF1(boundary_class=1), BoundaryF1(boundary_class=1)
    rank0.update(*batch_a)
    rank1.update(*batch_b)
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(8 / 9)


def test_boundary_f1_skips_predictions_on_ignored_pixels():
    truth = lines((10, 10), (2, 0, 9))
    prediction = lines((10, 10), (2, 0, 9), (8, 0, 9))
    truth[:, 7:] = IGNORE_INDEX
    metric = BoundaryF1(boundary_class=1)
    metric.update(prediction, truth)
    assert metric.compute().item() == pytest.approx(1.0)


def test_segmenter_logs_epoch_level_miou_and_boundary_f1(monkeypatch):
    # The image's first channel is the prediction the model makes for it, so the expected scores are known.
    shape = (12, 12)
    truths = [torch.stack([lines(shape, (3, 0, 11)), lines(shape, (8, 0, 11))]), lines(shape, (1, 9, 11))[None]]
    predictions = [truths[0], lines(shape, (10, 0, 2))[None]]
    batches = [{"image": p[:, None].float(), "mask": t} for p, t in zip(predictions, truths, strict=True)]
    model = MicrographSegmenter("test_resnet", num_classes=3, boundary_class=1)

    def predict_logits(images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(images[:, 0].long(), 3).permute(0, 3, 1, 2).float() * 20

    monkeypatch.setattr(model, "predict_logits", predict_logits)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # the two ready-made batches, as they are
    (scores,) = trainer.validate(model, dataloaders=loader, verbose=False)
    assert scores["val/boundary_f1"] == pytest.approx(8 / 9)
    # class 2 (dots) is in neither prediction nor truth: the mean covers background and boundary only
    iou = ClassIoU(3)
    iou.update(torch.cat([p.flatten() for p in predictions]), torch.cat([t.flatten() for t in truths]))
    expected = iou.compute()
    assert torch.isnan(expected[2])
    assert scores["val/miou"] == pytest.approx(expected[:2].mean().item())


@pytest.mark.parametrize("task", ["classification", "segmentation", "spectra"])
def test_losses_are_logged_synchronised_across_ranks(task, monkeypatch):
    if task == "classification":
        model: torch.nn.Module = MicrographClassifier("test_resnet", num_classes=3)
        batch = {"image": torch.randn(2, 1, 32, 32), "label": torch.tensor([0, 2])}
    elif task == "segmentation":
        model = MicrographSegmenter("test_resnet", num_classes=3)
        batch = {"image": torch.randn(2, 1, 32, 32), "mask": torch.randint(0, 3, (2, 32, 32))}
    else:
        model = SpectrumClassifier(num_classes=3, widths=(4, 8))
        batch = {"spectrum": torch.randn(2, 1, 64), "label": torch.tensor([0, 2])}
    logged: dict[str, dict] = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kwargs: logged.setdefault(name, kwargs))
    monkeypatch.setattr(model, "log_dict", lambda *args, **kwargs: None)
    for split, step in (("train", "training_step"), ("val", "validation_step"), ("test", "test_step")):
        getattr(model, step)(batch, 1)
        assert logged[f"{split}/loss"]["sync_dist"] is True


def test_constant_borders_of_a_user_rotation_are_ignored_not_class_0(tmp_path):
    root = write_split_dataset(tmp_path)
    data = SegmentationFolder(root, CLASSES, official_split="S", crop_size=32,
                              augmentation=[{"Rotate": {"limit": [30, 30], "border_mode": 0, "p": 1.0}}])  # fmt: skip
    data.setup("fit")
    mask = data.train_dataset[0]["mask"]
    assert (mask == IGNORE_INDEX).any()  # the rotated-in corners
    assert set(mask.unique().tolist()) <= {IGNORE_INDEX, 0, 1, 2}
