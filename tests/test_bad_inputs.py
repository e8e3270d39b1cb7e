"""Bad input stops with an error that names the file or the parameter and the fix, never a silent wrong result."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from smalldata_pl.datamodules import MicrographFolder, SegmentationFolder, SyntheticGrains
from smalldata_pl.datasets.disk_copies import write_synthetic
from smalldata_pl.io.images import ImageReadError, read_image


def _bom_manifest(manifest: Path) -> Path:
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    return manifest


def _spaced_manifest(manifest: Path) -> Path:
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(" , ".join(f" {c} " for c in line.split(",")) for line in lines) + "\n")
    return manifest


def test_manifest_with_bom_and_padded_cells_reads_like_a_clean_one(grouped_manifest):
    clean = MicrographFolder(grouped_manifest.parent, manifest=grouped_manifest).records
    original = grouped_manifest.read_bytes()
    for damage in (_bom_manifest, _spaced_manifest):
        grouped_manifest.write_bytes(original)
        assert MicrographFolder(grouped_manifest.parent, manifest=damage(grouped_manifest)).records == clean


def _latin1(manifest: Path) -> None:
    manifest.write_bytes(manifest.read_bytes().replace(b"ferrite_0_0", b"ferrit\xe9_0_0"))


def _duplicate_row(manifest: Path) -> None:
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*lines, lines[1]]) + "\n")


def _no_label_column(manifest: Path) -> None:
    manifest.write_text(manifest.read_text().replace("label", "class", 1))


@pytest.mark.parametrize(
    ("damage", "error", "pattern"),
    [
        (_latin1, ValueError, "not UTF-8"),
        (_duplicate_row, ValueError, "listed twice"),
        (_no_label_column, ValueError, r"lacks column\(s\) \['label'\]"),
    ],
    ids=["latin1", "duplicate_row", "missing_column"],
)
def test_bad_manifests_name_the_file(grouped_manifest, damage: Callable, error: type, pattern: str):
    damage(grouped_manifest)
    with pytest.raises(error, match=pattern) as raised:
        MicrographFolder(grouped_manifest.parent, manifest=grouped_manifest)
    assert str(grouped_manifest) in str(raised.value)


def test_an_empty_class_folder_stops_discovery_instead_of_dropping_the_class(class_folder):
    (class_folder / "delta").mkdir()
    with pytest.raises(ValueError, match="holds no images") as raised:
        MicrographFolder(class_folder)
    assert str(class_folder / "delta") in str(raised.value)


@pytest.mark.parametrize("frames", [3, 5])
@pytest.mark.parametrize("suffix", [".tif", ".gif"])
def test_multi_frame_images_are_refused_not_read_as_colour(tmp_path, frames: int, suffix: str):
    stack = np.random.default_rng(0).integers(0, 255, (frames, 24, 24), dtype=np.uint8)
    path = tmp_path / f"stack{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, stack, photometric="minisblack")
    else:
        Image.fromarray(stack[0]).save(path, save_all=True, append_images=[Image.fromarray(f) for f in stack[1:]])
    with pytest.raises(ImageReadError, match=f"holds {frames} frames") as raised:
        read_image(path)
    assert str(path) in str(raised.value)


def test_an_rgb_tiff_is_still_one_frame(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert read_image(tmp_path / "rgb.tif").shape == (24, 24, 3)


def test_an_image_over_the_pixel_limit_is_a_read_error_that_strict_false_skips(class_folder, monkeypatch):
    big = class_folder / "alpha" / "alpha_big.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is then over twice the limit: a "bomb"
    with pytest.raises(ImageReadError, match="safety limit") as raised:
        read_image(big)
    assert str(big) in str(raised.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # the 40 px images pass, the 64 px one does not
    data = MicrographFolder(class_folder, strict=False, leakage_check="off", num_folds=2, image_size=32)
    data.setup("fit")
    assert data.skipped == [str(big)]


@pytest.mark.parametrize(
    ("kwargs", "parameter"), [({"batch_size": 0}, "batch_size"), ({"image_size": 0}, "image_size")]
)
def test_impossible_sizes_name_the_parameter(kwargs: dict, parameter: str):
    with pytest.raises(ValueError, match=f"data.{parameter}"):
        SyntheticGrains(**kwargs)


@pytest.mark.parametrize(("count", "size"), [(-5, 64), (0, 64), (3, 0)])
def test_synth_refuses_empty_or_degenerate_output(tmp_path, count: int, size: int):
    with pytest.raises(ValueError, match=r"count must be at least 1 and size at least 8"):
        write_synthetic("grains", count, tmp_path / "out", size, None, 0, 8)
    assert not (tmp_path / "out").exists()


def test_segmentation_manifest_missing_mask_column_names_the_file(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,group\nimg.png,a\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['mask'\]") as raised:
        SegmentationFolder(tmp_path, ["a", "b"])
    assert str(manifest) in str(raised.value)


def test_near_identical_labels_are_reported(grouped_manifest, caplog):
    grouped_manifest.write_text(
        grouped_manifest.read_text().replace("pearlite_0_0.png,pearlite", "pearlite_0_0.png,perlite")
    )
    with caplog.at_level("WARNING"):
        data = MicrographFolder(grouped_manifest.parent, manifest=grouped_manifest)
    assert data.class_names == ["ferrite", "pearlite", "perlite"]
    assert "'pearlite' and 'perlite'" in caplog.text and str(grouped_manifest) in caplog.text


def test_images_smaller_than_image_size_are_reported(class_folder, caplog):
    data = MicrographFolder(class_folder, image_size=64, leakage_check="off", num_folds=2)
    with caplog.at_level("WARNING"):
        data.setup("fit")
    assert "18 image(s) are smaller than image_size=64" in caplog.text


def test_a_second_setup_on_the_same_split_does_not_rescan(class_folder, monkeypatch):
    data = MicrographFolder(class_folder, num_folds=2, image_size=32)
    data.setup("fit")
    first = data.val_dataset
    monkeypatch.setattr(data, "_verified", lambda records: pytest.fail("rescanned"))
    data.setup("predict")
    assert data.val_dataset is first
