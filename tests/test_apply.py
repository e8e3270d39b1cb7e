"""`smalldata apply` and `load_predictor`: a checkpoint alone applied to new, unlabelled micrographs."""

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import pattern, write_image, write_manifest_config, write_segmenter_config
from PIL import Image

from smalldata_pl.cli import main
from smalldata_pl.inference import load_predictor
from smalldata_pl.io.images import class_palette


def _last_checkpoint() -> Path:
    return next(Path("lightning_logs").rglob("last.ckpt"))


@pytest.fixture
def classifier_checkpoint(tmp_path, grouped_manifest) -> Path:
    config = write_manifest_config(tmp_path / "config.yaml", grouped_manifest, max_epochs=1, num_folds=2)
    main(["fit", "-c", str(config), "--data.init_args.leakage_check=off"])
    return _last_checkpoint()


def _new_micrographs(folder: Path) -> list[Path]:
    """Unlabelled images of mixed sizes in two sub-folders with a repeated file name, plus one corrupt file."""
    rng = np.random.default_rng(7)
    files = [
        write_image(folder / "a" / "x.png", pattern(0, 48, rng)),
        write_image(folder / "b" / "x.png", pattern(1, 32, rng)),
        write_image(folder / "b" / "wide.tif", pattern(1, 64, rng)[:40]),
    ]
    (folder / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return files


def test_apply_classifier_writes_a_row_per_readable_image_and_names_the_bad_one(
    classifier_checkpoint, tmp_path, capsys
):
    good = _new_micrographs(tmp_path / "new")
    main(["apply", str(classifier_checkpoint), str(tmp_path / "new"), "--out", str(tmp_path / "out")])
    with (tmp_path / "out" / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["file"] for r in rows) == sorted(str(p) for p in good)
    for row in rows:
        probabilities = [float(row["p_ferrite"]), float(row["p_pearlite"])]
        assert abs(sum(probabilities) - 1) < 1e-4
        assert row["prediction"] == ["ferrite", "pearlite"][int(np.argmax(probabilities))]
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "broken.png" in skipped and "broken.png" in capsys.readouterr().out


def test_apply_refuses_a_non_empty_output_folder(classifier_checkpoint, tmp_path):
    _new_micrographs(tmp_path / "new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["apply", str(classifier_checkpoint), str(tmp_path / "new"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_apply_with_labels_scores_the_images(classifier_checkpoint, grouped_manifest, tmp_path):
    out = tmp_path / "scored"
    main(["apply", str(classifier_checkpoint), str(grouped_manifest.parent / "img"), "--out", str(out),
          "--labels", str(grouped_manifest)])  # fmt: skip
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20 and all(r["true"] in ("ferrite", "pearlite") for r in rows)
    correct = [int(r["correct"]) for r in rows]
    assert all(c == int(r["true"] == r["prediction"]) for c, r in zip(correct, rows, strict=True))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 20 and metrics["accuracy"] == pytest.approx(np.mean(correct))
    assert (out / "confusion_matrix.png").stat().st_size > 0


def test_python_predictor_gives_the_same_answer_for_a_file_and_its_array(classifier_checkpoint, tmp_path):
    path = write_image(tmp_path / "one.png", pattern(2, 40, np.random.default_rng(3)))
    predictor = load_predictor(classifier_checkpoint)
    from_file = predictor.predict(path).probabilities
    from_array = predictor.predict(np.asarray(Image.open(path))).probabilities
    assert from_file is not None and from_array is not None
    np.testing.assert_allclose(from_file, from_array, atol=1e-6)


@pytest.mark.slow
def test_apply_segmenter_on_images_larger_than_its_crop(tmp_path):
    config = write_segmenter_config(tmp_path / "seg.yaml", tile_overlap=8)
    main(["fit", "-c", str(config)])
    rng = np.random.default_rng(0)
    write_image(tmp_path / "big" / "large.png", (rng.random((90, 70)) * 255).astype(np.uint8))
    predictor = load_predictor(_last_checkpoint())
    assert predictor.predict(tmp_path / "big" / "large.png").tiles > 1  # windows of the 32 px training size
    main(["apply", str(_last_checkpoint()), str(tmp_path / "big"), "--out", str(tmp_path / "out")])
    mask = Image.open(tmp_path / "out" / "masks" / "large.png")
    assert mask.mode == "P" and mask.size == (70, 90)
    assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1}
    # The overlay: the micrograph in grey, each class but the first blended with its palette colour.
    overlay = np.asarray(Image.open(tmp_path / "out" / "overlays" / "large.png")).astype(np.float64)
    grey = np.repeat(np.asarray(Image.open(tmp_path / "big" / "large.png"))[:, :, None], 3, axis=2).astype(np.float64)
    colours = class_palette(2)[np.asarray(mask)]
    expected = np.where(np.asarray(mask)[:, :, None] > 0, 0.6 * grey + 0.4 * colours, grey)
    np.testing.assert_allclose(overlay, expected, atol=1)
    with (tmp_path / "out" / "areas.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["fraction_grain"]) + float(row["fraction_boundary"]) == pytest.approx(1.0, abs=1e-5)
    assert float(row["fraction_boundary"]) == pytest.approx(np.mean(np.asarray(mask) == 1), abs=1e-5)
    # Multi-scale: the image also seen at 0.6 x (its own windows there too), the command as the Python predictor;
    # with --probabilities the class probabilities its mask was decided from, as a float TIFF stack.
    main(["apply", str(_last_checkpoint()), str(tmp_path / "big"), "--out", str(tmp_path / "scaled"), "--scales",
          "[0.6, 1.0]", "--probabilities"])  # fmt: skip
    scaled = load_predictor(_last_checkpoint(), scales=[0.6, 1.0]).predict(tmp_path / "big" / "large.png")
    assert scaled.tiles > predictor.predict(tmp_path / "big" / "large.png").tiles
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "scaled" / "masks" / "large.png")), scaled.mask)
    with tifffile.TiffFile(tmp_path / "scaled" / "probabilities" / "large.tif") as tiff:
        stack, description = tiff.asarray(), tiff.shaped_metadata[0]
    assert (
        stack.dtype == np.float32 and stack.shape == (2, 90, 70) and description["class_names"] == ["grain", "boundary"]
    )
    np.testing.assert_allclose(stack.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(stack.argmax(axis=0), scaled.mask)
    with (tmp_path / "scaled" / "areas.csv").open() as handle:
        assert next(csv.DictReader(handle))["probabilities"] == "probabilities/large.tif"


def test_calibrate_command_fits_a_temperature_and_writes_the_evidence(
    classifier_checkpoint, grouped_manifest, tmp_path
):
    out = tmp_path / "calibration"
    report = main_returning(["calibrate", str(classifier_checkpoint), "--labels", str(grouped_manifest), "--out",
                             str(out)])  # fmt: skip
    saved = json.loads((out / "calibration.json").read_text())
    assert saved["temperature"] == pytest.approx(report["temperature"]) and report["temperature"] > 0
    assert saved["images"] == 20 and (out / "reliability.png").stat().st_size > 0


def test_bare_switches_mean_true(classifier_checkpoint, tmp_path):
    _new_micrographs(tmp_path / "new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    main(["apply", str(classifier_checkpoint), str(tmp_path / "new"), "--out", str(tmp_path / "out"), "--overwrite"])
    assert not (tmp_path / "out" / "old.txt").exists() and (tmp_path / "out" / "predictions.csv").is_file()


def main_returning(argv: list[str]) -> dict:
    from smalldata_pl.cli.main import COMMANDS

    return COMMANDS[argv[0]](argv[1:])  # type: ignore[return-value]


def test_apply_uses_test_time_augmentation_when_the_model_was_validated_with_it(tmp_path, grouped_manifest, caplog):
    config = write_manifest_config(tmp_path / "config.yaml", grouped_manifest, max_epochs=1, num_folds=2)
    main(["fit", "-c", str(config), "--data.init_args.leakage_check=off", "--model.init_args.tta", "true"])
    checkpoint = _last_checkpoint()
    assert len(load_predictor(checkpoint).views) == 8  # as validated: every view the invariances allow
    assert len(load_predictor(checkpoint, tta=False).views) == 1  # an explicit choice wins
    _new_micrographs(tmp_path / "new")
    main(["apply", str(checkpoint), str(tmp_path / "new"), "--out", str(tmp_path / "out"), "--tta", "false"])
    with (tmp_path / "out" / "predictions.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3
    # An exported graph is one view: the export says so instead of silently scoring below the validated model.
    with caplog.at_level(logging.WARNING, logger="smalldata_pl.inference.export"):
        main(["export", str(checkpoint), "--format", "torchscript", "--out", str(tmp_path / "model.pt")])
    assert "validated with test-time augmentation" in caplog.text and (tmp_path / "model.pt").is_file()


def test_apply_without_tta_stays_plain_for_a_model_validated_without_it(classifier_checkpoint):
    assert len(load_predictor(classifier_checkpoint).views) == 1
