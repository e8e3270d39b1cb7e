"""Physical scale: pixel sizes from file metadata and manifests, target_pixel_size, data-bar crops, batched windows."""

import csv
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import tifffile
import torch
from conftest import pattern, write_image, write_manifest_config
from PIL import Image

from smalldata_pl.cli import main
from smalldata_pl.datamodules import MicrographFolder, SegmentationFolder
from smalldata_pl.datasets.disk_copies import write_augmented
from smalldata_pl.datasets.folder import Record, find_records
from smalldata_pl.datasets.segmentation import MaskRecord
from smalldata_pl.evaluation.audit import audit_splits
from smalldata_pl.inference.predictor import Predictor
from smalldata_pl.io.images import read_image
from smalldata_pl.io.metadata import read_metadata
from smalldata_pl.models.unet import sliding_window
from smalldata_pl.tasks import MicrographSegmenter
from smalldata_pl.transforms.pipeline import PhysicalScale, PixelSizeError

BAR = 255  # data-bar rows are white, the micrographs below are darker


def _fei_text(image_rows: int, width: int = 48, pixel_size: float = 0.5) -> str:
    """FEI_HELIOS metadata: the pixel size and the scanned frame (rows below it are the data bar)."""
    text = (
        f"[User]\r\nDate=01/01/2026\r\n[Scan]\r\nPixelWidth={pixel_size * 1e-6}\r\nPixelHeight={pixel_size * 1e-6}\r\n"
    )
    return text + f"[Image]\r\nResolutionX={width}\r\nResolutionY={image_rows}\r\n"


def write_fei(path: Path, image: np.ndarray, pixel_size: float, bar: int, databar_key: bool = False) -> Path:
    """An FEI/Thermo TIFF: ``image`` with ``bar`` white data-bar rows below and its FEI_HELIOS metadata text."""
    text = _fei_text(image.shape[0], image.shape[1], pixel_size)
    if databar_key:
        text += f"[PrivateFei]\r\nDatabarHeight={bar}\r\n"
    stored = np.vstack([image, np.full((bar, image.shape[1]), BAR, np.uint8)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, stored, extratags=[(34682, "s", 0, text, True)])
    return path


def write_zeiss(path: Path, image: np.ndarray, value: str, stored_rows: int) -> Path:
    """A Zeiss SmartSEM TIFF whose CZ_SEM text gives the pixel size and the scanned frame (``DP_IMAGE_STORE``)."""
    text = (
        f"\r\n0\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = {value}\r\n"
        f"DP_IMAGE_STORE\r\nStore resolution = {image.shape[1]} * {stored_rows}\r\n"
    )
    # SmartSEM writes the micro sign as one Windows-1252 byte.
    tifffile.imwrite(path, image, extratags=[(34118, "s", 0, text.encode("cp1252"), True)])
    return path


def test_metadata_of_each_instrument_and_format(tmp_path):
    image = np.zeros((30, 20), np.uint8)
    fei = read_metadata(write_fei(tmp_path / "fei.tif", image, 0.0125, bar=6))
    assert fei.pixel_size == pytest.approx(0.0125) and fei.data_bar == 6 and fei.source == "FEI"
    assert read_metadata(write_fei(tmp_path / "key.tif", image, 0.5, bar=4, databar_key=True)).data_bar == 4
    zeiss = read_metadata(write_zeiss(tmp_path / "zeiss.tif", image, "2.5 nm", stored_rows=24))
    assert zeiss.pixel_size == pytest.approx(0.0025) and zeiss.data_bar == 6
    assert read_metadata(write_zeiss(tmp_path / "um.tif", image, "1.5 µm", stored_rows=30)).pixel_size == 1.5
    tifffile.imwrite(tmp_path / "ij.tif", image, imagej=True, resolution=(4.0, 4.0), metadata={"unit": "\\u00B5m"})
    assert read_metadata(tmp_path / "ij.tif").pixel_size == pytest.approx(0.25)
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(20000, 20000), resolutionunit="CENTIMETER")
    assert read_metadata(tmp_path / "cm.tif").pixel_size == pytest.approx(0.5)
    # 300 dpi is what an image editor writes, not a scale; a plain PNG says nothing.
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(300, 300), resolutionunit="INCH")
    assert read_metadata(tmp_path / "dpi.tif").pixel_size is None
    assert read_metadata(write_image(tmp_path / "plain.png", image)).pixel_size is None


def test_physical_scale_crops_the_bar_and_resamples_image_and_mask():
    image = np.random.default_rng(0).random((50, 40)).astype(np.float32)
    mask = np.zeros((50, 40), np.int64)
    mask[:20, :] = 2
    mask[40:] = 1  # the data bar's rows carry class 1 only: they must vanish
    scale = PhysicalScale(target_pixel_size=0.5)
    scaled, scaled_mask = scale(image, 0.25, 10, mask)
    assert scaled.shape == (20, 20) == scale.shape(image.shape, 0.25, 10)
    assert scaled_mask is not None and scaled_mask.dtype == np.int64 and set(np.unique(scaled_mask)) == {0, 2}
    assert PhysicalScale()(image, None, 0)[0] is image  # no target, no bar: untouched
    with pytest.raises(PixelSizeError, match="pixel_size column"):
        scale(image, None)


def test_manifest_pixel_size_column_beats_the_metadata_and_is_checked(tmp_path):
    rng = np.random.default_rng(0)
    write_fei(tmp_path / "a.tif", pattern(0, 20, rng), 0.25, bar=4)
    write_image(tmp_path / "b.png", pattern(1, 20, rng))
    (tmp_path / "m.csv").write_text("file,label,pixel_size\na.tif,x,0.3\nb.png,y,\n")
    records, _ = find_records(tmp_path, tmp_path / "m.csv", None)
    assert [r.pixel_size for r in records] == [0.3, None]
    (tmp_path / "bad.csv").write_text("file,label,pixel_size\na.tif,x,-1\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: pixel_size '-1'"):
        find_records(tmp_path, tmp_path / "bad.csv", None)


def _two_scales(root: Path, rows: int = 3) -> Path:
    """Per class: PNGs at 0.5 µm/px (manifest column) and FEI TIFFs at 0.25 µm/px, twice as large, with a bar."""
    rng = np.random.default_rng(1)
    lines = ["file,label,group,pixel_size"]
    for kind, name in enumerate(["ferrite", "pearlite"]):
        for i in range(rows):
            write_image(root / f"{name}{i}.png", pattern(kind, 24, rng) // 2)
            write_fei(root / f"{name}{i}.tif", pattern(kind, 48, rng) // 2, 0.25, bar=8)
            lines += [f"{name}{i}.png,{name},{name}{i}p,0.5", f"{name}{i}.tif,{name},{name}{i}t,"]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def test_folder_module_resamples_every_image_to_the_target_scale_without_the_bar(tmp_path):
    manifest = _two_scales(tmp_path / "data")
    dm = MicrographFolder(
        tmp_path / "data", manifest, num_folds=2, image_size=None, target_pixel_size=0.5, leakage_check="off"
    )
    dm.setup("fit")
    samples = [dm.train_dataset[i] for i in range(len(dm.train_dataset))]
    assert {tuple(s["image"].shape) for s in samples} == {(1, 24, 24)}
    # The white bar is gone: no normalised pixel reaches white (images are at most half grey).
    white = (1.0 - dm.mean[0]) / dm.std[0]
    assert max(float(s["image"].max()) for s in samples) < white - 1.0
    # Without a pixel size for the PNGs, setup names them and the fix.
    (tmp_path / "data" / "no_size.csv").write_text(manifest.read_text().replace(",0.5\n", ",\n"))
    unknown = MicrographFolder(
        tmp_path / "data", tmp_path / "data" / "no_size.csv", num_folds=2, target_pixel_size=0.5, leakage_check="off"
    )
    with pytest.raises(PixelSizeError, match=r"6 image\(s\) have no known pixel size, e.g. .*ferrite0.png"):
        unknown.setup("fit")


def test_segmentation_module_resamples_masks_nearest_and_crops_the_bar(tmp_path):
    root = tmp_path / "seg"
    rng = np.random.default_rng(2)
    rows = ["image,mask,group"]
    for i in range(2):
        mask = np.zeros((40, 40), np.uint8)
        mask[:, 20:] = 1
        image = (mask * 100 + rng.integers(0, 50, (40, 40))).astype(np.uint8)
        write_fei(root / f"im{i}.tif", image, 0.2, bar=10)
        write_image(root / f"m{i}.png", np.vstack([mask, np.full((10, 40), 2, np.uint8)]))  # bar rows: class 2
        rows.append(f"im{i}.tif,m{i}.png,g{i}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    dm = SegmentationFolder(root, ["a", "b", "c"], num_folds=2, crop_size=16, target_pixel_size=0.4)
    dm.setup("fit")
    assert dm.val_dataset is not None
    sample = dm.val_dataset[0]
    assert tuple(sample["image"].shape) == (1, 20, 20) and tuple(sample["mask"].shape) == (20, 20)
    assert set(sample["mask"].unique().tolist()) == {0, 1}  # nearest-neighbour: no blend, no bar class


def test_batched_sliding_windows_equal_one_window_at_a_time():
    torch.manual_seed(0)
    model = MicrographSegmenter("test_resnet", num_classes=3, pretrained=False).eval()
    image = torch.randn(2, 1, 70, 45)
    calls: list[int] = []

    def counted(tiles: torch.Tensor) -> torch.Tensor:
        calls.append(tiles.shape[0])
        return model(tiles)

    with torch.inference_mode():
        one = sliding_window(model, image, tile=32, overlap=8, batch_size=1)
        batched = sliding_window(counted, image, tile=32, overlap=8, batch_size=5)
    assert calls == [10, 2]  # 3 x 2 windows of 2 images: 5 windows, then 1, per forward pass
    torch.testing.assert_close(batched, one, atol=1e-5, rtol=0)


def test_predictor_resamples_crops_and_returns_masks_at_the_image_size(tmp_path):
    torch.manual_seed(0)
    model = MicrographSegmenter("test_resnet", num_classes=2, pretrained=False, tile_overlap=8)
    record = {
        "in_chans": 1,
        "crop_size": 32,
        "target_pixel_size": 0.5,
        "crop_data_bar": True,
        "class_names": ["a", "b"],
    }
    path = write_fei(tmp_path / "big.tif", pattern(0, 90, np.random.default_rng(3)), 0.25, bar=12)
    one, batched = Predictor(model, record, batch_size=1), Predictor(model, record, batch_size=8)
    first, second = one.predict(path), batched.predict(path)
    assert first.mask is not None and first.mask.shape == (90, 90) and first.tiles == 4  # 45 px at 0.5 µm
    assert second.mask is not None and np.array_equal(first.mask, second.mask)
    np.testing.assert_array_equal(first.image, read_image(path)[:90])  # what the mask covers: the bar cropped
    array = pattern(0, 40, np.random.default_rng(4))
    with pytest.raises(PixelSizeError, match="--pixel_size"):
        one.predict(array)
    assert one.predict(array, pixel_size=1.0).mask.shape == (40, 40)  # type: ignore[union-attr]


def test_apply_uses_the_checkpoints_target_pixel_size(tmp_path):
    manifest = _two_scales(tmp_path / "data", rows=2)
    config = write_manifest_config(
        tmp_path / "c.yaml", manifest, max_epochs=1, num_folds=2, target_pixel_size=0.5, tile_size=16
    )
    main(["fit", "-c", str(config), "--data.init_args.leakage_check=off"])
    checkpoint = next(Path("lightning_logs").rglob("last.ckpt"))
    preprocessing = torch.load(checkpoint, weights_only=True)["preprocessing"]
    assert preprocessing["target_pixel_size"] == 0.5 and preprocessing["crop_data_bar"] is True
    # The FEI file's own metadata gives 0.25 µm: 64 px become 32 at 0.5 µm, four 16 px tiles; the bar is cropped.
    write_fei(tmp_path / "fei" / "fei.tif", pattern(1, 64, np.random.default_rng(6)), 0.25, bar=8)
    main(["apply", str(checkpoint), str(tmp_path / "fei"), "--out", str(tmp_path / "out"), "--explain"])
    assert _tiles(tmp_path / "out") == {"fei.tif": 4}
    assert Image.open(tmp_path / "out" / "explain" / "fei.png").size == (64, 72)  # the map covers the file's image
    # A PNG says nothing of its scale: refused with the fix, then measured with --pixel_size.
    write_image(tmp_path / "png" / "plain.png", pattern(0, 64, np.random.default_rng(5)))
    with pytest.raises(PixelSizeError, match=r"plain.png has no known pixel size.*--pixel_size"):
        main(["apply", str(checkpoint), str(tmp_path / "png"), "--out", str(tmp_path / "refused")])
    main(["apply", str(checkpoint), str(tmp_path / "png"), "--out", str(tmp_path / "sized"), "--pixel_size", "0.25"])
    assert _tiles(tmp_path / "sized") == {"plain.png": 4}


def _tiles(out: Path) -> dict[str, int]:
    with (out / "predictions.csv").open() as handle:
        return {Path(r["file"]).name: int(r["tiles"]) for r in csv.DictReader(handle)}


def test_augmented_copies_are_cropped_and_resampled_like_training_images(tmp_path):
    image = np.full((20, 30), 40, np.uint8)
    write_fei(tmp_path / "a.tif", image, pixel_size=0.5, bar=6)
    mask = np.zeros((26, 30), np.uint8)  # the mask covers the stored frame, data bar included
    mask[:, 15:] = 1
    write_image(tmp_path / "a_mask.png", mask)
    scale = PhysicalScale(target_pixel_size=0.25)
    records = [MaskRecord(tmp_path / "a.tif", tmp_path / "a_mask.png", "s1")]
    manifest = write_augmented(records, A.Compose([]), ["matrix", "phase"], 1, tmp_path / "out", scale=scale)

    with manifest.open() as handle:
        row = next(csv.DictReader(handle))
    written = np.asarray(Image.open(tmp_path / "out" / row["image"]))
    written_mask = np.asarray(Image.open(tmp_path / "out" / row["mask"]))
    assert written.shape[:2] == written_mask.shape == (40, 60)  # bar cropped, then 2x to 0.25 µm per pixel
    assert written.max() < BAR  # no data-bar row left
    assert (written_mask[:, :30] == 0).all() and (written_mask[:, 30:] == 1).all()
    unscaled = write_augmented(records, A.Compose([]), ["matrix", "phase"], 1, tmp_path / "raw")
    with unscaled.open() as handle:
        assert np.asarray(Image.open(tmp_path / "raw" / next(csv.DictReader(handle))["image"])).shape[:2] == (26, 30)


def test_audit_fingerprints_micrographs_without_their_data_bar(tmp_path):
    rng = np.random.default_rng(0)
    bar = (rng.random((60, 48)) > 0.5).astype(np.uint8) * 255  # one instrument: the same text in every image
    records = []
    for index in range(2):  # two unrelated micrographs
        content = (rng.random((40, 48)) * 120).astype(np.uint8)
        path = tmp_path / f"m{index}.tif"
        tifffile.imwrite(path, np.vstack([content, bar]), extratags=[(34682, "s", 0, _fei_text(40), True)])
        records.append(Record(path, 0, f"s{index}"))
    split = [("0", [0], [1])]
    assert [row["kind"] for row in audit_splits(records, split)] == ["copy"]  # the bar alone looks like a copy
    assert audit_splits(records, split, scale=PhysicalScale()) == []
