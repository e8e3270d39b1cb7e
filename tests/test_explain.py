"""Grad-CAM maps (captum) and `smalldata apply --tta --temperature --explain` on a trained checkpoint."""

import csv
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pattern, write_image, write_manifest_config
from PIL import Image
from torch import nn

from smalldata_pl.cli import main
from smalldata_pl.inference import Predictor, load_predictor
from smalldata_pl.inference.calibration import calibrate_from_labelled_images
from smalldata_pl.models.gradcam import gradcam, last_stage_layer
from smalldata_pl.tasks import MicrographClassifier


class LeftHalf(nn.Module):
    """Zeroes the right half of a feature map."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        left = torch.ones_like(features)
        left[..., features.shape[-1] // 2 :] = 0
        return features * left


class LeftHalfOnly(nn.Module):
    """Its last stage sees only the left half of the image, so class scores depend on nothing else."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            OrderedDict(
                stem=nn.Conv2d(1, 4, 3, padding=1),
                stage1=nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), LeftHalf()),
            )
        )
        self.head = nn.Linear(6, 2)
        with torch.no_grad():  # positive evidence for class 1, so its Grad-CAM is not empty
            self.head.weight.copy_(torch.tensor([[-1.0] * 6, [1.0] * 6]))
        self.param_groups = {
            "stem": ["backbone.stem.weight", "backbone.stem.bias"],
            "stage1": ["backbone.stage1.0.weight", "backbone.stage1.0.bias"],
            "head": ["head.weight", "head.bias"],
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).mean((-2, -1)))


def test_gradcam_has_the_input_shape_values_in_unit_range_and_mass_where_the_score_comes_from():
    model = LeftHalfOnly().eval()
    image = torch.rand(1, 24, 40)  # non-square: a transposed or flipped map would show
    cam = gradcam(model, image, target_class=1)
    assert cam.shape == (24, 40) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert cam[:, :20].sum() / cam.sum() > 0.9
    assert last_stage_layer(model, image[None]) is model.backbone.stage1


@pytest.mark.parametrize(
    ("backbone", "layer"),
    [
        ("test_resnet", "backbone.layer4"),
        ("test_efficientnet", "backbone.bn2"),  # last group: blocks.4, conv_head and bn2 -> the final feature map
        ("test_convnext", "backbone.stages.3"),  # last group: the pooled head norm, not a spatial map -> skipped
    ],
)
def test_last_stage_layer_of_timm_backbones(backbone, layer):
    model = MicrographClassifier(backbone, num_classes=3, in_chans=1).eval()
    images = torch.randn(1, 1, 64, 64)
    assert last_stage_layer(model, images) is model.get_submodule(layer)
    cam = gradcam(model, images[0], target_class=2)
    assert cam.shape == (64, 64) and 0 <= cam.min() <= cam.max() <= 1


def test_predictor_explains_a_tiled_classifier_tile_by_tile_at_the_image_size():
    record = {"task": "toy", "class_names": ["a", "b"], "in_chans": 1, "mean": [0.5], "std": [0.25]}
    predictor = Predictor(LeftHalfOnly(), {**record, "image_size": 16, "tile_size": 16})
    cam = predictor.explain(np.random.default_rng(0).random((16, 32)).astype(np.float32), target=1)
    assert cam.shape == (16, 32) and cam.max() == pytest.approx(1.0)
    # Two tiles side by side, each hot on its own left half.
    columns = cam.sum(axis=0)
    assert columns[:8].sum() + columns[16:24].sum() > 0.9 * columns.sum()
    assert columns[:8].sum() > 0.3 * columns.sum() and columns[16:24].sum() > 0.3 * columns.sum()


def test_explain_refuses_a_segmenter():
    from test_tta import ThresholdSegmenter

    predictor = Predictor(ThresholdSegmenter(), {"task": "toy", "class_names": ["a", "b"], "in_chans": 1})
    with pytest.raises(ValueError, match="classifiers"):
        predictor.explain(np.zeros((8, 8), np.float32))


def test_apply_with_tta_temperature_and_explain_on_a_trained_classifier(tmp_path, grouped_manifest):
    config = write_manifest_config(tmp_path / "config.yaml", grouped_manifest, max_epochs=1, num_folds=2)
    main(["fit", "-c", str(config), "--data.init_args.leakage_check=off"])
    checkpoint = next(Path("lightning_logs").rglob("last.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["preprocessing"]["invariances"]["rotation"]
    rng = np.random.default_rng(5)
    write_image(tmp_path / "new" / "wide.png", pattern(1, 48, rng)[:30])  # explained at its own 30 x 48 size
    write_image(tmp_path / "new" / "sub" / "square.png", pattern(0, 32, rng))
    out = tmp_path / "out"
    main(["apply", str(checkpoint), str(tmp_path / "new"), "--out", str(out), "--tta", "--temperature", "2",
          "--explain"])  # fmt: skip
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(row["views"] == "8" for row in rows)
    assert Image.open(out / "explain" / "wide.png").size == (48, 30)
    assert Image.open(out / "explain" / "sub" / "square.png").mode == "RGB"
    # Temperature 2 over the 8 views: the written probabilities are the mean of softmax(view logits / 2).
    predictor = load_predictor(checkpoint, tta=True, temperature=2.0)
    wide = predictor.predict(tmp_path / "new" / "wide.png")
    assert wide.probabilities is not None
    row = next(r for r in rows if r["file"].endswith("wide.png"))
    np.testing.assert_allclose([float(row["p_ferrite"]), float(row["p_pearlite"])], wide.probabilities, atol=1e-5)

    scored = tmp_path / "scored"
    main(["apply", str(checkpoint), str(grouped_manifest.parent / "img"), "--out", str(scored), "--labels",
          str(grouped_manifest)])  # fmt: skip
    assert 0 <= json.loads((scored / "metrics.json").read_text())["ece"] <= 1
    images = [(grouped_manifest.parent / "img" / f"{name}_{g}_0.png", name) for name in ("ferrite", "pearlite")
              for g in range(5)]  # fmt: skip
    report = calibrate_from_labelled_images(load_predictor(checkpoint), images, tmp_path / "calibration")
    assert report["images"] == 10 and report["temperature"] > 0
    assert (tmp_path / "calibration" / "reliability.png").is_file()
