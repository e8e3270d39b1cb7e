import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from lightning.pytorch import Trainer
from PIL import Image

from smalldata_pl.callbacks import Stage, StagedUnfreezing
from smalldata_pl.cli import main
from smalldata_pl.datamodules import SegmentationFolder, Superalloy
from smalldata_pl.models.losses import segmentation_loss, soft_dice_loss
from smalldata_pl.models.metrics import BoundaryF1
from smalldata_pl.models.unet import sliding_window
from smalldata_pl.tasks import MicrographSegmenter


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet"])
@pytest.mark.parametrize("size", [(50, 70), (64, 64), (33, 97)])
def test_segmenter_shapes_for_sizes_that_are_not_multiples_of_32(backbone, size):
    model = MicrographSegmenter(backbone, num_classes=3).eval()
    assert model(torch.zeros(2, 1, *size)).shape == (2, 3, *size)


def test_segmenter_groups_cover_every_parameter_once():
    model = MicrographSegmenter("test_resnet", num_classes=2)
    names = [p for group in model.param_groups.values() for p in group]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert model.param_group_names[-2:] == ["decoder", "head"]


def test_sliding_window_equals_whole_image_for_local_models():
    conv = torch.nn.Conv2d(1, 3, 1)
    image = torch.randn(2, 1, 70, 90)
    tiled = sliding_window(conv, image, tile=32, overlap=8)
    assert torch.allclose(tiled, conv(image), atol=1e-6)
    model = MicrographSegmenter("test_resnet", num_classes=3, tile_size=128).eval()
    with torch.no_grad():
        assert torch.equal(model.predict_logits(image), model(image))  # one tile covers it: identical


def test_tiled_segmenter_agrees_with_whole_image_inference():
    torch.manual_seed(0)
    model = MicrographSegmenter("test_resnet", num_classes=3, tile_size=64, tile_overlap=32).eval()
    image = torch.randn(1, 1, 96, 128)
    with torch.no_grad():
        agreement = (model.predict_logits(image).argmax(1) == model(image).argmax(1)).float().mean()
    assert agreement > 0.9


def test_losses_and_boundary_f1():
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[:, :, 8] = 1
    perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 20
    assert soft_dice_loss(perfect, target) < 0.05
    assert segmentation_loss(perfect, target, "ce+dice") < 0.1
    shifted = torch.roll(target, 1, dims=2)
    metric = BoundaryF1(boundary_class=1, tolerance=2)
    metric.update(shifted, target)
    assert metric.compute() == pytest.approx(1.0)
    metric.reset()
    metric.update(torch.zeros_like(target), target)
    assert metric.compute() == 0.0


def write_dataset(root: Path, count: int = 6, size: int = 48, bad: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        mask[rng.integers(0, size // 2) :, : rng.integers(size // 4, size)] = 1
        mask[rng.integers(0, size, 6), rng.integers(0, size, 6)] = 2
        image = (0.3 + 0.4 * (mask == 1) + 0.2 * (mask == 2) + 0.05 * rng.standard_normal((size, size))).clip(0, 1)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        if bad == "value" and i == 2:
            mask[0, 0] = 7
        if bad == "size" and i == 2:
            mask = mask[:-4]
        Image.fromarray((image * 65535).astype(np.uint16)).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
        rows.append({"image": f"images/im{i}.png", "mask": f"masks/im{i}.png", "group": f"spot{i // 2}"})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "mask", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.mark.parametrize(
    ("bad", "message"),
    [("value", r"im2.png \(of image .*im2.png\) contains value\(s\) \[7\]"), ("size", r"im2.png is 44x48")],
)
def test_mask_errors_name_the_file(tmp_path, bad, message):
    root = write_dataset(tmp_path / "data", bad=bad)
    dm = SegmentationFolder(root, ["background", "phase", "dots"], num_folds=3, crop_size=32)
    with pytest.raises(ValueError, match=message):
        dm.setup("fit")  # every mask is checked here, not when its sample is first read


def test_missing_mask_file_is_named(tmp_path):
    root = write_dataset(tmp_path / "data")
    (root / "masks" / "im3.png").unlink()
    with pytest.raises(FileNotFoundError, match="im3.png"):
        SegmentationFolder(root, ["background", "phase", "dots"])


def test_group_folds_keep_spots_together(tmp_path):
    root = write_dataset(tmp_path / "data")
    dm = SegmentationFolder(root, ["background", "phase", "dots"], num_folds=3, crop_size=32)
    dm.setup("fit")
    assert not {r.group for r in dm.train_dataset.records} & {r.group for r in dm.val_dataset.records}
    sample = dm.train_dataset[0]
    assert sample["image"].shape == (1, 32, 32) and sample["mask"].shape == (32, 32)


SEG_CONFIG = """
trainer:
  max_epochs: 2
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
model:
  class_path: smalldata_pl.tasks.MicrographSegmenter
  init_args:
    backbone: test_resnet
    tile_size: 32
    tile_overlap: 8
    class_weights: [1.0, 1.0, 5.0]
data:
  class_path: smalldata_pl.datamodules.SegmentationFolder
  init_args:
    root: {root}
    class_names: [background, phase, dots]
    num_folds: 3
    crop_size: 32
    batch_size: 4
    augmentation: micrograph
checkpoint:
  monitor: val/miou
  mode: max
"""


@pytest.mark.slow
def test_cli_fit_and_predict_write_mask_files(tmp_path):
    root = write_dataset(tmp_path / "data")
    config = tmp_path / "seg.yaml"
    config.write_text(SEG_CONFIG.format(root=root))
    main(["fit", "-c", str(config)])
    run = tmp_path / "lightning_logs" / "smalldata" / "version_0"
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    main(["predict", "-c", str(config), "--ckpt_path", str(checkpoint)])
    masks = sorted((tmp_path / "lightning_logs" / "smalldata" / "version_1" / "predictions" / "masks").glob("*.png"))
    assert masks
    assert np.asarray(Image.open(masks[0])).shape == (48, 48)
    main(["export-encoder", str(checkpoint), "--out", str(tmp_path / "encoder.pth")])
    fresh = MicrographSegmenter("test_resnet", num_classes=3, pretrained=str(tmp_path / "encoder.pth"))
    trained = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(fresh.encoder.state_dict()["conv1.0.weight"], trained["encoder.conv1.0.weight"])


@pytest.mark.skipif(not (SHARED_DATA / "superalloy" / "manifest.csv").is_file(), reason="shared superalloy data absent")
def test_superalloy_official_splits():
    one_shot = Superalloy(root=SHARED_DATA / "superalloy", official_split="Super3", crop_size=64)
    one_shot.setup("fit")
    assert len(one_shot.train_dataset) == 1 and len(one_shot.val_dataset) == 4
    standard = Superalloy(root=SHARED_DATA / "superalloy", official_split="Super1", crop_size=64)
    standard.setup("fit")
    assert len(standard.train_dataset) == 10
    sample = standard.val_dataset[0]
    assert sample["image"].shape == (1, 512, 512) and set(sample["mask"].unique().tolist()) <= {0, 1, 2}


def test_one_shot_training_gets_batches_and_several_crops(tmp_path):
    root = write_dataset(tmp_path / "data")
    dm = SegmentationFolder(
        root, ["background", "phase", "dots"], num_folds=3, crop_size=32, train_limit=1, crops_per_image=8, batch_size=4
    )
    dm.setup("fit")
    assert len(dm.train_dataset) == 8
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    assert not torch.equal(batches[0]["image"][0], batches[0]["image"][1])  # different random crops
    single = SegmentationFolder(root, ["background", "phase", "dots"], num_folds=3, crop_size=32, train_limit=1)
    single.setup("fit")
    assert len(list(single.train_dataloader())) == 1  # a lone sample is not dropped


def test_fitting_on_one_image_warns_unless_batchnorm_keeps_its_pretrained_statistics(tmp_path, caplog):
    root = write_dataset(tmp_path / "data")
    keep = StagedUnfreezing(stages=[Stage(epoch=0)], lr_decay=1.0, keep_bn_eval=True)
    warnings, trained_on = {}, {}
    for case, callbacks, limit in [("one image", [], 1), ("kept", [keep], 1), ("two images", [], 2)]:
        caplog.clear()
        dm = SegmentationFolder(root, ["background", "phase", "dots"], num_folds=3, crop_size=32, train_limit=limit)
        dm.trainer = Trainer(callbacks=callbacks, logger=False, enable_progress_bar=False)
        dm.setup("fit")
        warnings[case] = [r.getMessage() for r in caplog.records if "training on a single image" in r.getMessage()]
        trained_on[case] = [str(r.image) for r in dm.train_dataset.records]
    assert not warnings["kept"] and not warnings["two images"]
    (message,) = warnings["one image"]
    (image,) = trained_on["one image"]
    assert image in message and "keep_pretrained_bn.yaml" in message  # names the file and the fix
