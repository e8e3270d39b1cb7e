"""Test-time augmentation: D4 views and their inverses, the views invariances allow, TTA in the Predictor and
in the tasks' validation, test and predict steps (``tta: true`` in configs, ``validate`` and ``cv``)."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import tensorboard_scalars, write_manifest_config
from lightning.pytorch import LightningDataModule, Trainer
from torch import nn
from torch.utils.data import DataLoader

from smalldata_pl.cli import main
from smalldata_pl.inference import Predictor
from smalldata_pl.inference.tta import segment
from smalldata_pl.models.losses import segmentation_loss
from smalldata_pl.tasks import MicrographClassifier, MicrographSegmenter
from smalldata_pl.transforms.invariances import LabelInvariances
from smalldata_pl.transforms.views import allowed_views

ALL_NAMES = ["identity", "rot90", "rot180", "rot270", "transpose", "vflip", "anti_transpose", "hflip"]


def _preprocessing(rotation: bool | None, mirror: bool | None, **extra: object) -> dict:
    record: dict = {"task": "toy", "class_names": ["a", "b"], "in_chans": 1, "mean": [0.5], "std": [0.25], **extra}
    if rotation is not None and mirror is not None:
        record["invariances"] = {"rotation": rotation, "mirror": mirror, "scale": True, "intensity": True}
    return record


class PooledClassifier(nn.Module):
    """Logits from the mean and mean square of the image: exactly invariant to every D4 view."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.stack([images.mean((1, 2, 3)), (images**2).mean((1, 2, 3))], dim=1))


class PixelClassifier(nn.Module):
    """Logits from a fixed weighting of every pixel: changes under every view."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(size * size, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))


class ThresholdSegmenter(nn.Module):
    """Class 1 where the normalised pixel is above 0 (the raw image above 0.5): a per-pixel function."""

    tile_size = None
    tile_overlap = 0

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([-images, images], dim=1) * self.scale

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self(images)


def test_views_are_exact_inverses_and_the_eight_d4_elements():
    x = torch.randn(2, 3, 5, 7)  # non-square: quarter turns and transposes swap height and width
    views = allowed_views(rotation=True, mirror=True)
    assert [v.name for v in views] == ALL_NAMES
    for view in views:
        assert torch.equal(view.inverse(view.forward(x)), x)
        assert torch.equal(view.forward(view.inverse(x)), x)
    by_name = {v.name: v.forward(x) for v in views}
    assert torch.equal(by_name["hflip"], x.flip(-1))
    assert torch.equal(by_name["vflip"], x.flip(-2))
    assert torch.equal(by_name["rot180"], x.flip(-1).flip(-2))
    assert torch.equal(by_name["transpose"], x.transpose(-2, -1))
    assert torch.equal(by_name["rot90"], torch.rot90(x, 1, dims=(-2, -1)))
    square = torch.randn(1, 1, 6, 6)
    outputs = [v.forward(square) for v in views]
    assert all(not torch.equal(a, b) for i, a in enumerate(outputs) for b in outputs[i + 1 :])


@pytest.mark.parametrize(
    ("rotation", "mirror", "expected"),
    [
        (True, True, ALL_NAMES),
        (True, False, ["identity", "rot90", "rot180", "rot270"]),
        (False, True, ["identity", "transpose", "vflip", "anti_transpose", "hflip"]),
        (False, False, ["identity"]),
    ],
)
def test_allowed_views_per_invariance_combination(rotation, mirror, expected):
    views = allowed_views(rotation, mirror)
    assert [v.name for v in views] == expected
    assert all(v.rotates <= rotation and v.mirrors <= mirror for v in views)


def test_tta_of_a_d4_invariant_classifier_equals_no_tta():
    torch.manual_seed(0)
    model = PooledClassifier()
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    plain = Predictor(model, _preprocessing(True, True, image_size=16)).predict(image)
    augmented = Predictor(model, _preprocessing(True, True, image_size=16), tta=True).predict(image)
    assert (plain.views, augmented.views) == (1, 8)
    assert plain.probabilities is not None and augmented.probabilities is not None
    np.testing.assert_allclose(augmented.probabilities, plain.probabilities, atol=1e-6)
    # The same views do change a classifier that is not invariant, so the equality above is not vacuous.
    pixel = PixelClassifier(16)
    varied = Predictor(pixel, _preprocessing(True, True, image_size=16), tta=True).predict(image).probabilities
    assert varied is not None
    assert (
        np.abs(varied - Predictor(pixel, _preprocessing(True, True, image_size=16)).predict(image).probabilities).max()
        > 1e-3
    )
    np.testing.assert_allclose(augmented.logits, plain.logits, atol=1e-6)  # logits are the identity view's


def test_segmentation_tta_maps_every_view_back_onto_the_image():
    image = np.random.default_rng(1).uniform(0.02, 0.98, (20, 28)).astype(np.float32)  # non-square, no symmetry
    image[np.abs(image - 0.5) < 0.01] = 0.3  # no pixel sits on the threshold
    truth = (image > 0.5).astype(np.int64)
    model = ThresholdSegmenter()
    plain = Predictor(model, _preprocessing(True, True)).predict(image)
    augmented = Predictor(model, _preprocessing(True, True), tta=True).predict(image)
    assert augmented.views == 8
    np.testing.assert_array_equal(plain.mask, truth)
    np.testing.assert_array_equal(augmented.mask, truth)
    # Averaging views without mapping them back would blur the mask: the inverse is what keeps it aligned.
    square = torch.from_numpy(image[:20, :20] - 0.5)[None, None]  # centred like the normalised input
    views = allowed_views(True, True)
    unaligned = sum(model(v.forward(square)).softmax(dim=1) for v in views) / len(views)
    aligned = segment(model, square, views)
    assert (unaligned.argmax(dim=1) != torch.from_numpy(truth[:20, :20])).float().mean() > 0.2
    assert torch.equal(aligned.argmax(dim=1)[0], torch.from_numpy(truth[:20, :20]))


class ConvSegmenter(nn.Module):
    """A fixed 5 x 5 convolution: its answer changes with the zoom of the image."""

    tile_size = None
    tile_overlap = 0

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 5, padding=2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self(images)


def test_multi_scale_segmentation_averages_the_probabilities_of_each_zoom_at_the_image_size():
    image = np.random.default_rng(2).random((20, 28)).astype(np.float32)
    model = ConvSegmenter().eval()
    record = _preprocessing(True, True)
    plain = Predictor(model, record).predict(image)
    np.testing.assert_array_equal(Predictor(model, record, scales=(1.0, 1.0)).predict(image).mask, plain.mask)
    scaled = Predictor(model, record, scales=(0.5, 1.0)).predict(image)
    tensor = (torch.from_numpy(image) - 0.5)[None, None] / 0.25
    with torch.no_grad():
        half = F.interpolate(tensor, (10, 14), mode="bilinear", align_corners=False, antialias=True)
        back = F.interpolate(model(half).softmax(dim=1), (20, 28), mode="bilinear", align_corners=False)
        expected = (model(tensor).softmax(dim=1) + back) / 2
    np.testing.assert_array_equal(scaled.mask, expected.argmax(dim=1)[0].numpy())
    assert scaled.tiles == 2 and (scaled.mask != plain.mask).any()  # one pass per scale, and it matters
    for bad in ([], [0.0], [1.0, -0.5]):
        with pytest.raises(ValueError, match="positive zoom factors"):
            Predictor(model, record, scales=bad)
    with pytest.raises(ValueError, match="classifier"):
        Predictor(PooledClassifier(), {**record, "image_size": 16}, scales=(0.5, 1.0))


@pytest.mark.parametrize(
    ("rotation", "mirror", "names", "logged"),
    [
        (False, True, ["identity", "transpose", "vflip", "anti_transpose", "hflip"], "not invariant to rotation"),
        (True, False, ["identity", "rot90", "rot180", "rot270"], "not invariant to mirror"),
        (False, False, ["identity"], "only the identity view is used"),
        (None, None, ["identity"], "no invariances are declared"),
    ],
)
def test_tta_uses_only_the_views_the_invariances_allow_and_says_so(rotation, mirror, names, logged, caplog):
    with caplog.at_level(logging.INFO, logger="smalldata_pl.transforms.views"):
        predictor = Predictor(PooledClassifier(), _preprocessing(rotation, mirror, image_size=8), tta=True)
    assert [v.name for v in predictor.views] == names
    assert logged in caplog.text
    assert predictor.predict(np.zeros((8, 8), np.float32)).views == len(names)
    assert [v.name for v in Predictor(PooledClassifier(), _preprocessing(True, True)).views] == ["identity"]


class TinyData(LightningDataModule):
    """Fixed non-square validation batches; ``invariances`` as a DataModule declares them (or not at all)."""

    def __init__(self, samples: list[dict], invariances: LabelInvariances | None) -> None:
        super().__init__()
        self.samples = samples
        if invariances is not None:
            self.invariances = invariances

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.samples, batch_size=len(self.samples))

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def _trainer() -> Trainer:
    return Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)


def _by_hand(model: nn.Module, images: torch.Tensor, views: list, per_pixel: bool) -> torch.Tensor:
    """Mean softmax over views, each mapped back by rotating and transposing the other way (no View.inverse)."""
    total = torch.zeros(())
    with torch.no_grad():
        for view in views:
            out = model(view.forward(images))
            if per_pixel:
                out = torch.rot90(out, -view.quarter_turns, dims=(-2, -1))
                out = out.transpose(-2, -1) if view.transpose else out
            total = total + out.softmax(dim=1)
    return total / len(views)


@pytest.mark.parametrize(
    ("invariances", "names"),
    [
        (LabelInvariances(), ALL_NAMES),
        (LabelInvariances(rotation=False), ["identity", "transpose", "vflip", "anti_transpose", "hflip"]),
        (None, ["identity"]),
    ],
)
def test_classifier_validate_with_tta_scores_the_mean_probabilities_of_the_allowed_views(invariances, names):
    torch.manual_seed(0)
    images = torch.randn(4, 1, 24, 40)  # non-square: quarter turns give 40 x 24 inputs
    labels = torch.tensor([0, 1, 1, 0])
    samples = [{"image": i, "label": y, "group": f"g{k}"} for k, (i, y) in enumerate(zip(images, labels, strict=True))]
    model = MicrographClassifier("test_resnet", num_classes=2, tta=True)
    data = TinyData(samples, invariances)
    (metrics,) = _trainer().validate(model, datamodule=data, verbose=False)
    assert [v.name for v in model.eval_views] == names
    model.eval()
    expected = _by_hand(model, images, model.eval_views, per_pixel=False)
    assert metrics["val/loss"] == pytest.approx(F.nll_loss(expected.log(), labels).item(), abs=1e-5)
    assert metrics["val/acc"] == pytest.approx((expected.argmax(1) == labels).float().mean().item())
    predicted = _trainer().predict(model, datamodule=data)[0]["probabilities"]
    torch.testing.assert_close(predicted, expected, atol=1e-6, rtol=1e-5)
    if len(names) > 1:  # the views really change this model's output, so the equality is not vacuous
        plain = _by_hand(model, images, allowed_views(False, False), per_pixel=False)
        assert (plain - expected).abs().max() > 1e-4


def test_tta_off_leaves_validation_as_the_plain_model():
    torch.manual_seed(0)
    images, labels = torch.randn(3, 1, 24, 32), torch.tensor([0, 1, 0])
    samples = [{"image": i, "label": y, "group": "g"} for i, y in zip(images, labels, strict=True)]
    model = MicrographClassifier("test_resnet", num_classes=2)
    (metrics,) = _trainer().validate(model, datamodule=TinyData(samples, LabelInvariances()), verbose=False)
    assert [v.name for v in model.eval_views] == ["identity"]
    with torch.no_grad():
        model.eval()  # Lightning restores train mode after validate
        assert metrics["val/loss"] == pytest.approx(F.cross_entropy(model(images), labels).item(), abs=1e-5)


def test_segmenter_validate_with_tta_maps_every_allowed_view_back_on_a_non_square_image():
    torch.manual_seed(0)
    images = torch.randn(2, 1, 32, 48)
    masks = (images[:, 0] > 0).long()
    samples = [{"image": i, "mask": m, "group": f"g{k}"} for k, (i, m) in enumerate(zip(images, masks, strict=True))]
    model = MicrographSegmenter("test_resnet", num_classes=2, loss="ce", tta=True)
    data = TinyData(samples, LabelInvariances(mirror=False))  # quarter turns only
    (metrics,) = _trainer().validate(model, datamodule=data, verbose=False)
    assert [v.name for v in model.eval_views] == ["identity", "rot90", "rot180", "rot270"]
    model.eval()
    expected = _by_hand(model, images, model.eval_views, per_pixel=True)
    loss = segmentation_loss(expected.log(), masks, "ce", None)
    assert metrics["val/loss"] == pytest.approx(loss.item(), abs=1e-5)
    predicted = _trainer().predict(model, datamodule=data)[0]
    assert predicted["probabilities"].shape == (2, 2, 32, 48)
    torch.testing.assert_close(predicted["probabilities"], expected, atol=1e-6, rtol=1e-5)
    plain = _by_hand(model, images, allowed_views(False, False), per_pixel=True)
    assert (plain - expected).abs().max() > 1e-4


def test_cli_validate_with_tta_true_averages_the_views_end_to_end(tmp_path, grouped_manifest, caplog):
    config = write_manifest_config(tmp_path / "c.yaml", grouped_manifest, max_epochs=1, num_folds=2)
    args = ["validate", "-c", str(config), "--data.init_args.leakage_check=off"]
    main(args)
    with caplog.at_level(logging.INFO, logger="smalldata_pl.transforms.views"):
        main([*args, "--model.init_args.tta", "true"])
    assert "test-time augmentation over 8 views" in caplog.text
    plain, augmented = sorted(Path("lightning_logs").rglob("events.out.tfevents.*"))
    losses = [tensorboard_scalars(run.parent)["val/loss"] for run in (plain, augmented)]
    assert len(losses[0]) == len(losses[1]) == 1
    assert losses[0] != pytest.approx(losses[1], abs=1e-6)  # same seed and weights, different views


def test_cv_forwards_tta_to_every_fold(tmp_path, grouped_manifest, caplog):
    config = write_manifest_config(tmp_path / "c.yaml", grouped_manifest, max_epochs=1, num_folds=2)
    cv_dir = tmp_path / "cv"
    with caplog.at_level(logging.INFO, logger="smalldata_pl.transforms.views"):
        main(["cv", "-c", str(config), "--data.init_args.leakage_check=off", "--model.init_args.tta", "true",
              "--cv_dir", str(cv_dir)])  # fmt: skip
    for fold in (0, 1):
        assert yaml.safe_load((cv_dir / f"fold_{fold}" / "hparams.yaml").read_text())["tta"] is True
    # Each fold's fit (validation, checkpoint monitor) and its out-of-fold predictions use the eight views.
    assert caplog.text.count("test-time augmentation over 8 views") == 4
    assert (cv_dir / "summary.json").is_file()
