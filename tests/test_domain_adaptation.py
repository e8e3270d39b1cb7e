"""Domain adaptation to unlabelled target images: style, AdaBN, self-training, imaging calibration, scale."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tensorboard_scalars, write_image
from lightning.pytorch import LightningModule
from PIL import Image
from torch import nn
from typing_extensions import override

from smalldata_pl.callbacks import AdaptiveBatchNorm, SelfTraining, adapt_batch_norm
from smalldata_pl.callbacks.adabn import adapt_to_targets, batch_norm_layers
from smalldata_pl.cli.main import main
from smalldata_pl.datamodules import SegmentationFolder, SyntheticGrainBoundaries
from smalldata_pl.datamodules.base import MicrographDataModule
from smalldata_pl.datasets.pseudo_labels import (
    ConcatSamples,
    PseudoLabelDataset,
    class_balanced_thresholds,
    keep_confident,
    target_records,
)
from smalldata_pl.generators.calibration import calibrate_imaging, rescale_sample, scale_factor
from smalldata_pl.generators.grains import GRAIN_MORPHOLOGIES, GrainMorphology, render_grain_micrograph
from smalldata_pl.generators.imaging import IMAGING_PRESETS, ImagingModel
from smalldata_pl.generators.renderers import GrainBoundaryRenderer
from smalldata_pl.io.images import read_image
from smalldata_pl.tasks import MicrographSegmenter
from smalldata_pl.transforms.invariances import leaves
from smalldata_pl.transforms.pipeline import IGNORE_INDEX, ImagePipeline
from smalldata_pl.transforms.target_style import TargetFDA, TargetHistogramMatching


@pytest.fixture
def target_folder(tmp_path: Path) -> Path:
    """Six bright, yellowish 40 px colour 'real' images with blobs."""
    rng = np.random.default_rng(7)
    root = tmp_path / "target"
    for i in range(6):
        blobs = np.kron(rng.random((5, 5)), np.ones((8, 8)))
        image = np.stack([0.6 + 0.3 * blobs, 0.55 + 0.3 * blobs, 0.2 + 0.2 * blobs], axis=2)
        write_image(root / f"real_{i}.png", (np.clip(image, 0, 1) * 255).astype(np.uint8))
    return root


def test_histogram_matching_moves_the_synthetic_histogram_to_the_target() -> None:
    rng = np.random.default_rng(0)
    reference = (0.6 + 0.3 * rng.random((32, 32, 1))).astype(np.float32)  # same size: no resampling
    image = (0.1 + 0.2 * rng.random((32, 32, 1))).astype(np.float32)
    matched = TargetHistogramMatching([reference], blend_ratio=(1.0, 1.0), p=1.0)(image=image)["image"]
    quantiles = np.linspace(0.05, 0.95, 7)
    assert np.allclose(np.quantile(matched, quantiles), np.quantile(reference, quantiles), atol=0.03)
    assert np.corrcoef(matched.ravel(), image.ravel())[0, 1] > 0.99  # the content (the order of grey levels) stays


def test_fda_takes_the_low_frequencies_of_the_target() -> None:
    rng = np.random.default_rng(1)
    rows = np.mgrid[0:64, 0:64][0] / 63
    reference = (0.2 + 0.6 * rows)[:, :, None].astype(np.float32)  # a strong illumination ramp
    image = (0.5 + 0.1 * rng.standard_normal((64, 64, 1))).clip(0, 1).astype(np.float32)
    styled = TargetFDA([reference], beta_limit=(0.05, 0.05), p=1.0)(image=image)["image"]

    def spectrum(x: np.ndarray) -> np.ndarray:
        return np.abs(np.fft.fftshift(np.fft.fft2(x[:, :, 0])))

    low = (slice(30, 35), slice(30, 35))  # centre of the shifted spectrum
    before = np.abs(spectrum(image)[low] - spectrum(reference)[low]).sum()
    after = np.abs(spectrum(styled)[low] - spectrum(reference)[low]).sum()
    assert after < 0.2 * before
    assert styled.mean() == pytest.approx(reference.mean(), abs=0.02)  # the zero frequency is the target's


def test_target_style_option_styles_training_images_only(target_folder: Path) -> None:
    common = {"train_size": 4, "val_size": 2, "image_size": 32, "in_chans": 3, "target_root": str(target_folder)}
    styled = SyntheticGrainBoundaries(**common, target_style="histogram", target_style_p=1.0)
    plain = SyntheticGrainBoundaries(**common)
    styled.setup("fit")
    plain.setup("fit")
    mean, std = torch.tensor(plain.mean)[:, None, None], torch.tensor(plain.std)[:, None, None]
    styled_image = styled.train_dataset[0]["image"] * std + mean
    plain_image = plain.train_dataset[0]["image"] * std + mean
    # Grey synthetic images take the yellowish target colours: blue falls below red.
    assert styled_image[2].mean() < styled_image[0].mean() - 0.15
    assert torch.allclose(plain_image[0], plain_image[2], atol=1e-5)
    assert torch.equal(styled.val_dataset[0]["image"], plain.val_dataset[0]["image"])
    assert torch.equal(styled.train_dataset[0]["mask"], plain.train_dataset[0]["mask"])


def test_adaptation_options_need_target_images() -> None:
    with pytest.raises(ValueError, match="target_root"):
        SyntheticGrainBoundaries(target_style="fda")


def test_target_callbacks_name_their_own_option_when_the_datamodule_has_no_targets() -> None:
    class PseudoLabels:  # a DataModule with no target_root of its own, e.g. SegmentationFolder
        pass

    trainer = SimpleNamespace(datamodule=PseudoLabels())
    for callback in (AdaptiveBatchNorm(), SelfTraining()):
        message = f"{type(callback).__name__} has no target images and PseudoLabels names none: set the callback's"
        with pytest.raises(ValueError, match=message):
            callback.setup(trainer, nn.Identity(), "fit")  # type: ignore[arg-type]


def test_adabn_replaces_running_statistics_by_the_targets() -> None:
    model = nn.Sequential(nn.BatchNorm2d(2, momentum=0.1), nn.Dropout(0.5))
    model.train()
    generator = torch.Generator().manual_seed(0)
    batches = [3.0 + 2.0 * torch.randn(4, 2, 5, 5, generator=generator) for _ in range(2)]
    assert adapt_batch_norm(model, batches) == 2
    layer = model[0]
    # momentum=None: the plain average of the batches' means and unbiased variances.
    expected_mean = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    expected_var = torch.stack([b.transpose(0, 1).reshape(2, -1).var(dim=1) for b in batches]).mean(0)
    assert torch.allclose(layer.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(layer.running_var, expected_var, atol=1e-4)
    assert layer.momentum == 0.1 and model.training and model[1].training  # modes and momentum restored
    with pytest.raises(ValueError, match="no BatchNorm"):
        adapt_batch_norm(nn.Conv2d(1, 1, 1), batches)


def test_pseudo_labels_keep_only_confident_pixels(target_folder: Path) -> None:
    probabilities = torch.tensor([[[0.95, 0.6], [0.3, 0.05]], [[0.05, 0.4], [0.7, 0.95]]])
    labels = keep_confident(*probabilities.max(dim=0), 0.9, IGNORE_INDEX)
    assert labels.tolist() == [[0, IGNORE_INDEX], [IGNORE_INDEX, 1]]

    records = target_records(target_folder, limit=2)
    masks = [np.full((40, 40), IGNORE_INDEX), np.ones((40, 40), dtype=int)]
    pipeline = ImagePipeline(1, 32, None, (0.5,), (0.25,), train=True)
    dataset = PseudoLabelDataset([r.path for r in records], masks, pipeline)
    mixed = ConcatSamples([dataset, dataset])
    assert len(mixed) == 4 and mixed[(3, 2)]["group"] == records[0].group
    assert set(mixed[(0, 0)]["mask"].unique().tolist()) == {IGNORE_INDEX}
    assert set(mixed[(0, 3)]["mask"].unique().tolist()) == {1}


class PlainData(MicrographDataModule):
    def setup(self, stage: str) -> None:
        pass


def test_target_pipeline_trains_on_targets_without_styling(target_folder: Path) -> None:
    plain = PlainData(["a", "b"], image_size=16).target_pipeline()
    assert plain.augment is None
    assert plain(np.zeros((20, 30)))["image"].shape == (1, 16, 16)  # a training pipeline: square outputs
    procedural = SyntheticGrainBoundaries(
        image_size=32, augmentation="micrograph", target_root=str(target_folder), target_style="histogram"
    ).target_pipeline()
    assert procedural.augment is not None
    transforms = {type(t) for t in leaves(procedural.augment)}
    assert transforms and TargetHistogramMatching not in transforms  # its augmentation, not the targets' style


def test_segmentation_folder_crops_pseudo_labelled_targets_like_its_training_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["image,mask,group"]
    for i in range(2):
        mask = (rng.random((40, 48)) > 0.5).astype(np.uint8)
        write_image(tmp_path / f"i{i}.png", (mask * 200 + 20).astype(np.uint8))
        write_image(tmp_path / f"m{i}.png", mask)
        rows.append(f"i{i}.png,m{i}.png,g{i}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    data = SegmentationFolder(tmp_path, ["a", "b"], crop_size=16, num_folds=None, augmentation="micrograph")
    pipeline = data.target_pipeline()
    target = write_image(tmp_path / "target.png", (rng.random((30, 36)) * 255).astype(np.uint8))
    pseudo = PseudoLabelDataset([target], [np.full((30, 36), 1, dtype=np.int16)], pipeline)
    sample = pseudo[0]
    assert sample["image"].shape == (1, 16, 16) and set(sample["mask"].unique().tolist()) == {1}


def test_self_training_adabn_predicts_with_target_statistics_then_restores_them(target_folder: Path) -> None:
    torch.manual_seed(0)
    model = MicrographSegmenter("test_resnet", num_classes=2, in_chans=3)
    trainer: Any = SimpleNamespace(datamodule=SyntheticGrainBoundaries(image_size=32, in_chans=3))
    records = target_records(target_folder)
    before = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in batch_norm_layers(model)]
    plain, adapted = SelfTraining(threshold=0.5), SelfTraining(threshold=0.5, adapt_batch_norm=True)
    plain.records = adapted.records = records
    masks = [callback.pseudo_labels(trainer, model) for callback in (plain, adapted)]
    assert any(not torch.equal(a, b) for a, b in zip(*masks, strict=True))  # the target statistics were used
    for layer, state in zip(batch_norm_layers(model), before, strict=True):
        assert all(torch.equal(value, state[key]) for key, value in layer.state_dict().items())
    # Six 32 px targets: batches of the given size; without a size, one image at a time.
    assert adapt_to_targets(trainer, model, records, image_size=None, batch_size=4) == 2
    no_data: Any = SimpleNamespace(datamodule=None)  # the model's in_chans and ImageNet statistics, no size
    assert adapt_to_targets(no_data, model, records, image_size=None, batch_size=4) == 6


class LeftRightSegmenter(LightningModule):
    """A teacher that is plainly not rotation-equivariant: class 1 grows from left to right, plus image content."""

    @override
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-3.0, 3.0, images.shape[-1]).expand_as(images[:, :1])
        score = ramp + 10 * (images.mean(dim=1, keepdim=True) - images.mean())
        return torch.cat([-score, score], dim=1)


def test_self_training_tta_pseudo_labels_turn_with_the_image(target_folder: Path, tmp_path: Path) -> None:
    """Averaged over the D4 views the grain DataModule allows, the teacher is rotation-equivariant: a quarter-turned
    target gets the quarter-turned pseudo-labels; from one view it does not."""
    trainer: Any = SimpleNamespace(datamodule=SyntheticGrainBoundaries(image_size=32, in_chans=3))
    turned_folder = tmp_path / "turned"
    for path in sorted(target_folder.glob("*.png")):
        write_image(turned_folder / path.name, np.rot90(np.asarray(Image.open(path))).copy())
    matches = {}
    for tta in (False, True):
        callback = SelfTraining(threshold=0.5, tta=tta)
        callback.records = target_records(target_folder)
        upright = callback.pseudo_labels(trainer, LeftRightSegmenter())
        callback.records = target_records(turned_folder)
        turned = callback.pseudo_labels(trainer, LeftRightSegmenter())
        assert all(len(mask.unique()) > 1 for mask in upright + turned)  # neither side is a constant mask
        matches[tta] = [torch.equal(torch.rot90(a), b) for a, b in zip(upright, turned, strict=True)]
    assert all(matches[True])
    assert not any(matches[False])


class BrightIsBoundary(SelfTraining):
    """A refinement that overrules the teacher with what the image itself shows: bright pixels are class 1."""

    def refine(self, probabilities: torch.Tensor, image: np.ndarray) -> torch.Tensor:
        assert probabilities.shape[-2:] == image.shape[:2]  # the teacher's view at the image's own size
        bright = torch.from_numpy(np.asarray(image).mean(axis=-1) > 0.5).to(probabilities)
        return torch.stack([1 - bright, bright])[None]


def test_self_training_pseudo_labels_follow_the_refined_teacher(target_folder: Path) -> None:
    trainer: Any = SimpleNamespace(datamodule=SyntheticGrainBoundaries(image_size=32, in_chans=3))
    callback = BrightIsBoundary(threshold=0.9)
    callback.records = target_records(target_folder)
    masks = callback.pseudo_labels(trainer, LeftRightSegmenter())
    for record, mask in zip(callback.records, masks, strict=True):
        image = read_image(record.path)
        assert torch.equal(mask, torch.from_numpy(image.mean(axis=-1) > 0.5).long())


def test_class_balanced_thresholds_keep_the_surer_share_of_a_rare_class() -> None:
    confidences = [torch.tensor([0.95, 0.97, 0.55, 0.6]), torch.tensor([0.99, 0.7, 0.8])]
    labels = [torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1])]
    thresholds = class_balanced_thresholds(confidences, labels, 3, threshold=0.9, share=0.5)
    # Class 0 is sure of itself: the 0.9 threshold stays; class 1 keeps its two surest of four; class 2 is absent.
    assert thresholds.tolist() == pytest.approx([0.9, 0.7, 0.9])
    kept = [keep_confident(c, lab, thresholds, IGNORE_INDEX) for c, lab in zip(confidences, labels, strict=True)]
    assert [k.tolist() for k in kept] == [[0, 0, IGNORE_INDEX, IGNORE_INDEX], [0, 1, 1]]
    assert keep_confident(confidences[1], labels[1], 0.9, IGNORE_INDEX).tolist() == [0, IGNORE_INDEX, IGNORE_INDEX]
    with pytest.raises(ValueError, match="share"):
        class_balanced_thresholds(confidences, labels, 2, threshold=0.9, share=0.0)


def test_self_training_class_balance_keeps_the_surer_share_of_every_class(target_folder: Path) -> None:
    trainer: Any = SimpleNamespace(datamodule=SyntheticGrainBoundaries(image_size=32, in_chans=3))
    records = target_records(target_folder)
    everything, balanced = SelfTraining(threshold=0.5), SelfTraining(threshold=1.0, class_balance=0.3)
    everything.records = balanced.records = records
    predicted = torch.stack(everything.pseudo_labels(trainer, LeftRightSegmenter()))  # two classes: all kept
    kept = torch.stack(balanced.pseudo_labels(trainer, LeftRightSegmenter()))
    labelled = kept != IGNORE_INDEX
    assert torch.equal(kept[labelled], predicted[labelled])
    assert balanced.class_thresholds is not None and max(balanced.class_thresholds) < 1.0
    for cls in (0, 1):  # a threshold of 1 keeps nothing; the balance keeps the surer 30 % of each class
        assert int((kept == cls).sum()) / int((predicted == cls).sum()) == pytest.approx(0.3, abs=0.01)
    with pytest.raises(ValueError, match="class_balance"):
        SelfTraining(class_balance=1.5)


def test_calibration_recovers_noise_and_blur_of_targets() -> None:
    clean = GrainBoundaryRenderer(64, "clean", 1)
    truth = ImagingModel(blur_sigma=1.5, read_noise=0.05, gradient=0.2, contrast=1.2)
    ideal = [clean(np.random.default_rng([1, i]), i)[0] for i in range(8)]
    targets = [truth.apply(clean(np.random.default_rng([2, i]), i)[0], np.random.default_rng([3, i])) for i in range(8)]
    fitted = calibrate_imaging(ideal, targets, IMAGING_PRESETS["optical"], sweeps=2)
    assert fitted.blur_sigma == pytest.approx(1.5, abs=0.4)
    assert fitted.read_noise == pytest.approx(0.05, abs=0.012)
    assert fitted.contrast == pytest.approx(1.2, abs=0.3)
    assert fitted.randomize == IMAGING_PRESETS["optical"].randomize  # domain randomisation kept for training


# Zoom in on fine grains and out of coarse ones, so both sides have grains of several pixels and many of them.
@pytest.mark.parametrize(("factor", "morphology"), [(2.0, GRAIN_MORPHOLOGIES[0]), (0.5, GRAIN_MORPHOLOGIES[1])])
def test_scale_matching_recovers_a_known_zoom(factor: float, morphology: GrainMorphology) -> None:
    def render(seed: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        micrograph = render_grain_micrograph(np.random.default_rng([seed, i]), (128, 128), morphology)
        return micrograph.image, micrograph.boundaries.astype(np.uint8)

    synthetic = [render(0, i)[0] for i in range(12)]
    targets = [rescale_sample(*render(1, i), factor, 128)[0] for i in range(12)]
    assert scale_factor(synthetic, targets) == pytest.approx(factor, rel=0.15)


def test_scale_and_calibration_options_adapt_the_generator(target_folder: Path) -> None:
    dm = SyntheticGrainBoundaries(
        train_size=4, val_size=2, image_size=32, target_root=str(target_folder), match_target_scale=True,
        calibrate_imaging=True,
    )  # fmt: skip
    dm.setup("fit")
    assert dm.target_scale != 1.0 and dm.calibrated_imaging is not None
    sample = dm.val_dataset[0]  # validation follows the adapted generator
    assert sample["image"].shape == (1, 32, 32) and sample["mask"].shape == (32, 32)


def test_fit_with_target_style_adabn_and_self_training_from_yaml(target_folder: Path, tmp_path: Path) -> None:
    config = tmp_path / "adapted.yaml"
    config.write_text(
        f"""
trainer:
  max_epochs: 2
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: smalldata_pl.callbacks.AdaptiveBatchNorm
      init_args: {{target_root: {target_folder}, batch_size: 3}}
    - class_path: smalldata_pl.callbacks.SelfTraining
      init_args: {{start_epoch: 1, every_n_epochs: 1, threshold: 0.5, repeats: 2}}  # the data's targets
model:
  class_path: smalldata_pl.tasks.MicrographSegmenter
  init_args: {{backbone: test_resnet, boundary_class: 1}}
data:
  class_path: smalldata_pl.datamodules.SyntheticGrainBoundaries
  init_args:
    train_size: 8
    val_size: 4
    image_size: 32
    batch_size: 4
    in_chans: 3
    target_root: {target_folder}
    target_style: histogram
"""
    )
    main(["fit", "-c", str(config)])
    (run,) = sorted((tmp_path / "lightning_logs").rglob("events.out.tfevents.*"))
    scalars = tensorboard_scalars(run.parent)
    assert len(scalars["self_training/kept_fraction"]) == 2  # refreshed after epochs 0 and 1
    assert all(0.0 <= v <= 1.0 for v in scalars["self_training/kept_fraction"])
    (adapted,) = list((tmp_path / "lightning_logs").rglob("adabn.ckpt"))
    state = torch.load(adapted, map_location="cpu", weights_only=False)["state_dict"]
    assert any(key.endswith("running_mean") for key in state)
