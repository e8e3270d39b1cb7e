"""Pseudo-labels from apply (boundaries redrawn at one width, unsure pixels unlabelled) and a student trained on them
with the shipped config."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image, write_segmenter_config
from PIL import Image

from smalldata_pl.cli import main
from smalldata_pl.datasets.folder import read_manifest
from smalldata_pl.generators.renderers import GrainBoundaryRenderer
from smalldata_pl.generators.styles import resolve_style
from smalldata_pl.inference import Predictor, load_predictor
from smalldata_pl.inference.boundary_maps import thin_boundaries
from smalldata_pl.inference.unsure import unsure_pixels
from smalldata_pl.io.images import class_palette, write_label_image
from smalldata_pl.tasks import MicrographClassifier, MicrographSegmenter

CONFIG = Path(__file__).parents[1] / "configs" / "segmentation" / "grain_boundaries_distilled.yaml"


def test_thin_boundaries_redraws_the_boundary_at_one_width_and_gives_freed_pixels_their_likeliest_class():
    probabilities = np.zeros((3, 40, 20))
    probabilities[0, :, :10], probabilities[2, :, 10:] = 0.6, 0.6  # two phases left and right
    probabilities[1, :, 7:13] = 0.9  # a boundary band 6 px wide between them
    mask = probabilities.argmax(axis=0)
    middle = slice(10, 30)  # away from the ends, where a skeleton forks
    for width in (1, 2, 3):
        thinned = thin_boundaries(mask, probabilities, boundary=1, width=width)[middle]
        assert np.all((thinned == 1).sum(axis=1) == 2 * width - 1)  # the centre column dilated width - 1 times
        assert np.all(thinned[:, :7] == 0) and np.all(thinned[:, 13:] == 2)
        freed = (mask[middle] == 1) & (thinned != 1)  # band pixels no longer boundary: their side's phase
        assert freed.any() and np.all(thinned[freed] == np.where(np.arange(20) < 10, 0, 2)[None].repeat(20, 0)[freed])
    np.testing.assert_array_equal(thin_boundaries(np.zeros((5, 5), int), probabilities[:, :5, :5], 1, 2), 0)


def test_boundary_width_is_refused_below_one_or_for_a_model_without_boundaries():
    segmenter = MicrographSegmenter("test_resnet", num_classes=2, boundary_class=1)
    with pytest.raises(ValueError, match="at least 1"):
        Predictor(segmenter, {"in_chans": 1}, boundary_width=0)
    with pytest.raises(ValueError, match="no boundary_class"):
        Predictor(MicrographSegmenter("test_resnet", num_classes=2), {"in_chans": 1}, boundary_width=2)


def test_a_palette_mask_keeps_values_beyond_its_palette(tmp_path: Path):
    labels = np.array([[0, 1, 255], [2, 7, 1]], np.uint8)  # 255: unsure pixels of a two-class palette
    write_label_image(tmp_path / "mask.png", labels, class_palette(2))
    written = Image.open(tmp_path / "mask.png")
    assert written.mode == "P"
    np.testing.assert_array_equal(np.asarray(written), labels)


class ImageAsBoundaryLogits(torch.nn.Module):
    """A boundary segmenter whose boundary logit is the normalised image itself, times 5: bright is boundary."""

    boundary_class, tile_size, tile_overlap, class_names = 1, None, 0.25, ["grain", "boundary"]

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([-5 * images, 5 * images], dim=1)


def test_unsure_pixels_are_those_the_written_class_is_unlikely_for_redrawn_and_faint_boundaries_alike():
    image = np.zeros((40, 40), np.float32)
    image[:, 5] = 0.55  # a faint boundary: P(boundary) = sigmoid(1) = 0.73
    image[:, 15:24] = 1.0  # a sure boundary band 9 px wide, redrawn 3 px wide about its centre
    preprocessing = {"in_chans": 1, "mean": [0.5], "std": [0.5]}
    predictor = Predictor(ImageAsBoundaryLogits(), preprocessing, boundary_width=2, unsure_below=0.9)  # type: ignore[arg-type]
    prediction = predictor.predict(image)
    assert prediction.mask is not None and prediction.unsure is not None
    middle = slice(10, 30)  # away from the ends, where a skeleton forks
    mask, unsure = prediction.mask[middle], prediction.unsure[middle]
    assert np.all(mask[:, 18:21] == 1) and not unsure[:, 18:21].any()  # the redrawn centre of the sure band
    assert np.all(mask[:, 15:18] == 0) and unsure[:, 15:18].all()  # freed by the redraw: grain it is unlikely to be
    assert np.all(mask[:, 21:24] == 0) and unsure[:, 21:24].all()
    assert np.all(mask[:, 4:7] == 1) and unsure[:, 4:7].all()  # the faint line, and the grain it was widened over
    interiors = np.r_[0:3, 8:13, 27:40]
    assert np.all(mask[:, interiors] == 0) and not unsure[:, interiors].any()
    assert Predictor(ImageAsBoundaryLogits(), preprocessing).predict(image).unsure is None  # type: ignore[arg-type]
    for wrong in (0.0, 1.0, "sure"):
        with pytest.raises(ValueError, match="between 0 and 1, or with 'auto'"):
            Predictor(ImageAsBoundaryLogits(), preprocessing, unsure_below=wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="classifier"):
        Predictor(MicrographClassifier("test_resnet", num_classes=2), {"in_chans": 1}, unsure_below="auto")


def test_auto_unsure_pixels_are_as_many_of_each_class_least_sure_pixels_as_the_model_expects_to_be_wrong():
    rng = np.random.default_rng(0)
    boundary = rng.beta(0.5, 0.5, (30, 40))  # soft and sure pixels of both classes
    probabilities = np.stack([1 - boundary, boundary])
    mask = (boundary > 0.5).astype(np.int64)
    mask[:2] = 1 - mask[:2]  # two rows written against the model (a redrawn boundary): least sure of all
    unsure = unsure_pixels(probabilities, mask, "auto")
    confidence = np.take_along_axis(probabilities, mask[None], axis=0)[0]
    assert unsure[:2].all()
    for label in (0, 1):
        pixels = mask == label
        assert unsure[pixels].sum() == round(float((1 - confidence[pixels]).sum()))
        assert confidence[pixels & unsure].max() <= confidence[pixels & ~unsure].min()
    assert 0 < unsure.mean() < (confidence < 0.9).mean()  # fewer than a 0.9 threshold leaves out of soft maps
    sure = np.stack([np.full((8, 8), 0.999), np.full((8, 8), 0.001)])
    assert not unsure_pixels(sure, np.zeros((8, 8), np.int64), "auto").any()  # expects under half a wrong pixel
    np.testing.assert_array_equal(unsure_pixels(probabilities, mask, 0.9), confidence < 0.9)


@pytest.mark.slow
def test_apply_writes_thin_pseudo_labels_and_the_distilled_config_trains_a_student_on_unsure_ones_that_joins_the_ensemble(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    teacher_config = write_segmenter_config(tmp_path / "teacher.yaml", boundary_class=1)
    main(["fit", "-c", str(teacher_config), "--data.init_args.in_chans", "3"])
    (teacher,) = (tmp_path / "lightning_logs").rglob("last.ckpt")
    renderer = GrainBoundaryRenderer(48, style=resolve_style("tint_etched"))
    for index in range(3):
        image, _ = renderer(np.random.default_rng(index), index)
        write_image(tmp_path / "tiles" / f"tile{index}.png", (image * 255).astype(np.uint8))
    main(["apply", str(teacher), "tiles", "--boundary_width", "2", "--out", "pseudo"])
    rows = read_manifest(tmp_path / "pseudo" / "manifest.csv", ("image", "mask"))
    assert [Path(r["image"]).name for r in rows] == [f"tile{i}.png" for i in range(3)]
    plain = load_predictor(teacher)
    for row in rows:
        written = np.asarray(Image.open(tmp_path / "pseudo" / row["mask"]))
        prediction = plain.predict(row["image"])
        np.testing.assert_array_equal(written, thin_boundaries(prediction.mask, prediction.probabilities, 1, 2))
    # Pseudo-labels that leave the pixels the teacher is unsure of unlabelled (255), and a student trained on them.
    main(["apply", str(teacher), "tiles", "--boundary_width", "2", "--unsure_below", "0.9", "--out", "unsure"])
    areas = read_manifest(tmp_path / "unsure" / "areas.csv", ("file", "mask", "fraction_unsure"))
    for row, area in zip(rows, areas, strict=True):
        written = np.asarray(Image.open(tmp_path / "unsure" / row["mask"]))
        thin = np.asarray(Image.open(tmp_path / "pseudo" / row["mask"]))
        prediction = plain.predict(row["image"])
        assert prediction.probabilities is not None
        unsure = np.take_along_axis(prediction.probabilities, thin[None].astype(np.int64), axis=0)[0] < 0.9
        np.testing.assert_array_equal(written, np.where(unsure, 255, thin))
        assert float(area["fraction_unsure"]) == pytest.approx(unsure.mean(), abs=1e-6)
    main([
        "fit", "-c", str(CONFIG), "--data.init_args.root", "unsure", "--data.init_args.ignore_value", "255",
        "--model.init_args.init_weights", str(teacher),
        "--model.init_args.backbone", "test_resnet", "--model.init_args.edge_input", "none",
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
        "--trainer.logger.init_args.save_dir", "students", "--data.init_args.crop_size", "32",
        "--data.init_args.crops_per_image", "1", "--data.init_args.batch_size", "4",
        "--data.init_args.mix_in.init_args.train_size", "4", "--data.init_args.mix_in.init_args.image_size", "32",
    ])  # fmt: skip
    (student,) = (tmp_path / "students").rglob("last.ckpt")
    main(["apply", str(teacher), "tiles", "--ensemble", str(student), "--out", "both"])
    assert len(list((tmp_path / "both" / "masks").glob("*.png"))) == 3
    # With no threshold: as many unsure pixels per tile and class as the teacher expects to be wrong.
    main(["apply", str(teacher), "tiles", "--boundary_width", "2", "--unsure_below", "auto", "--out", "auto"])
    for row in rows:
        written = np.asarray(Image.open(tmp_path / "auto" / row["mask"]))
        thin = np.asarray(Image.open(tmp_path / "pseudo" / row["mask"]))
        prediction = plain.predict(row["image"])
        assert prediction.probabilities is not None
        expected = unsure_pixels(prediction.probabilities, thin.astype(np.int64), "auto")
        np.testing.assert_array_equal(written, np.where(expected, 255, thin))


@pytest.mark.slow
def test_the_superalloy_distilled_config_trains_a_student_on_apply_masks_and_keeps_its_training_statistics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    tiny = ["--model.init_args.backbone", "test_resnet", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    synthetic = Path(__file__).parents[1] / "configs" / "segmentation" / "synthetic_pretrain_precipitates.yaml"
    main([
        "fit", "-c", str(synthetic), *tiny, "--model.init_args.pretrained", "false",
        "--data.init_args.train_size", "4", "--data.init_args.val_size", "2", "--data.init_args.image_size", "32",
        "--trainer.logger.init_args.save_dir", "teacher",
    ])  # fmt: skip
    (teacher,) = (tmp_path / "teacher").rglob("last.ckpt")
    rng = np.random.default_rng(0)
    for index in range(3):
        write_image(tmp_path / "micrographs" / f"m{index}.png", rng.integers(0, 255, (48, 48), dtype=np.uint8))
    main(["apply", str(teacher), "micrographs", "--tta", "true", "--out", "pseudo"])
    main([
        "fit", "-c", str(CONFIG.parent / "superalloy_distilled.yaml"), *tiny, "--data.init_args.root", "pseudo",
        "--model.init_args.init_weights", str(teacher), "--trainer.logger.init_args.save_dir", "student",
        "--data.init_args.crop_size", "32", "--data.init_args.crops_per_image", "1",
        "--data.init_args.mix_in.init_args.train_size", "4", "--data.init_args.mix_in.init_args.image_size", "32",
    ])  # fmt: skip
    (last,) = (tmp_path / "student").rglob("last.ckpt")
    start = torch.load(teacher, weights_only=True)["state_dict"]
    student = torch.load(last, weights_only=True)["state_dict"]
    assert student.keys() == start.keys()
    weights = [key for key in start if key.endswith("weight") and start[key].is_floating_point()]
    assert weights and any(not torch.equal(start[key], student[key]) for key in weights)  # it learnt from the masks
    assert not list(last.parent.glob("adabn.ckpt"))  # it keeps its training statistics: no AdaBN
    main(["apply", str(last), "micrographs", "--tta", "true", "--out", "student_masks"])
    assert len(list((tmp_path / "student_masks" / "masks").glob("*.png"))) == 3
