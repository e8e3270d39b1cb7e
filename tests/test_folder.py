import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, pattern, write_image, write_manifest_config

from smalldata_pl.cli import main
from smalldata_pl.datamodules import UHCS3, MicrographFolder
from smalldata_pl.datasets.splits import GroupLeakError, check_no_group_leak, fold_indices
from smalldata_pl.datasets.uhcs3 import download_uhcs3
from smalldata_pl.io.images import ImageReadError, read_image
from smalldata_pl.transforms.pipeline import normalization_stats

REPO = Path(__file__).resolve().parents[1]


def test_reads_png_jpeg_16bit_float_tiff_and_rgba(tmp_path):
    rng = np.random.default_rng(0)
    grey = pattern(0, 24, rng)
    assert read_image(write_image(tmp_path / "a.png", grey)).max() <= 1.0
    assert read_image(write_image(tmp_path / "a.jpg", grey)).shape == (24, 24)
    sixteen = (np.arange(24 * 24).reshape(24, 24) * 100).astype(np.uint16)
    assert read_image(write_image(tmp_path / "a.tif", sixteen)) == pytest.approx(sixteen / 65535, abs=1e-6)
    assert read_image(write_image(tmp_path / "b.png", sixteen)) == pytest.approx(sixteen / 65535, abs=1e-6)
    floats = np.linspace(-2, 3, 24 * 24, dtype=np.float32).reshape(24, 24)
    scaled = read_image(write_image(tmp_path / "f.tif", floats))
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    assert read_image(write_image(tmp_path / "c.png", rgba)).shape == (24, 24, 4)


def test_truncated_image_error_names_the_file(tmp_path):
    path = write_image(tmp_path / "bad.png", pattern(0, 64, np.random.default_rng(0)))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(path)


def test_class_folder_loads_with_greyscale_normalisation(class_folder):
    dm = MicrographFolder(root=class_folder, num_folds=3, split="stratified", image_size=32, in_chans=1)
    assert dm.class_names == ["alpha", "beta", "gamma"] and dm.num_classes == 3
    dm.setup("fit")
    sample = dm.train_dataset[0]
    assert sample["image"].shape == (1, 32, 32) and sample["path"].endswith(".png")
    assert dm.mean == pytest.approx((0.4590,), abs=1e-3) and dm.std == pytest.approx((0.2256,), abs=1e-3)
    assert len(dm.train_dataset) + len(dm.val_dataset) == 18


def test_epoch_samples_gives_a_small_subset_as_many_steps_as_the_full_set(class_folder):
    def train_batches(**kwargs):
        dm = MicrographFolder(root=class_folder, num_folds=3, split="stratified", image_size=32, batch_size=4, **kwargs)
        dm.setup("fit")
        return dm, list(dm.train_dataloader())

    dm, batches = train_batches(train_per_class=1, epoch_samples=12, augmentation="micrograph")
    assert len(dm.train_dataset) == 3 and len(batches) == 3  # 4 passes of 3 images
    images = torch.cat([b["image"] for b in batches])
    paths = [p for b in batches for p in b["path"]]
    assert all(paths.count(p) == 4 for p in paths)
    first = [i for i, p in enumerate(paths) if p == paths[0]]
    assert len(first) == 4 and not torch.equal(images[first[0]], images[first[1]])  # fresh augmentation per pass
    assert len(dm.val_dataloader().dataset) == 6  # evaluation is never repeated
    _, full = train_batches()
    assert len(full) == 3  # the 12 training images of the full fold: the same number of steps
    with pytest.raises(ValueError, match="epoch_samples"):
        MicrographFolder(root=class_folder, epoch_samples=0)


def test_three_channel_backbones_get_replicated_grey(class_folder):
    dm = MicrographFolder(root=class_folder, num_folds=3, split="stratified", image_size=32, in_chans=3)
    dm.setup("fit")
    image = dm.val_dataset[0]["image"]
    assert image.shape == (3, 32, 32)
    mean, std = normalization_stats(3)
    raw = image * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    assert torch.allclose(raw[0], raw[1], atol=1e-5)


def test_grouped_folds_are_disjoint_stratified_and_cover_everything(grouped_manifest):
    seen = []
    for fold in range(5):
        dm = MicrographFolder(root=grouped_manifest.parent, manifest=grouped_manifest, num_folds=5, fold=fold)
        dm.setup("fit")
        train = {r.group for r in dm.train_dataset.records}
        val = {r.group for r in dm.val_dataset.records}
        assert not train & val
        assert {r.label for r in dm.val_dataset.records} == {0, 1}  # stratified: both classes in every fold
        seen += [str(r.path) for r in dm.val_dataset.records]
    assert len(seen) == len(set(seen)) == 20


def test_stratified_split_of_grouped_data_is_caught():
    labels, groups = [0, 0, 1, 1], ["a", "a", "b", "b"]
    with pytest.raises(GroupLeakError, match="'a'|'b'"):
        check_no_group_leak(["a", "b"], ["b"])
    train, val = fold_indices(labels, [str(i) for i in range(4)], 2, 0, "stratified")
    assert len(train) == len(val) == 2
    with pytest.raises(ValueError, match="only 1 group"):
        fold_indices(labels, groups, 2, 0, "stratified_group")


def test_tiles_keep_their_source_as_group(class_folder):
    dm = MicrographFolder(root=class_folder, num_folds=3, split="group", tile_size=20, image_size=None)
    dm.setup("fit")
    assert len(dm.train_dataset) == 4 * 12 and dm.train_dataset[0]["image"].shape == (1, 20, 20)
    assert len({r.group for r in dm.train_dataset.records}) == 12


def write_manifest(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_bad_inputs_name_the_file_and_the_fix(tmp_path, class_folder):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        MicrographFolder(
            root=class_folder,
            manifest=write_manifest(tmp_path / "m.csv", [{"file": "alpha/missing.png", "label": "alpha"}]),
        )
    with pytest.raises(ValueError, match="'delta'.*alpha_0.png|alpha_0.png.*class list"):
        MicrographFolder(
            root=class_folder,
            manifest=write_manifest(tmp_path / "n.csv", [{"file": "alpha/alpha_0.png", "label": "delta"}]),
            class_names=["alpha", "beta"],
        )
    with pytest.raises(ValueError, match=r"\['gamma'\] have no images"):
        MicrographFolder(
            root=class_folder,
            manifest=write_manifest(
                tmp_path / "o.csv",
                [{"file": "alpha/alpha_0.png", "label": "alpha"}, {"file": "beta/beta_0.png", "label": "beta"}],
            ),
            class_names=["alpha", "beta", "gamma"],
        )
    write_image(class_folder / "alpha" / "big.png", pattern(0, 64, np.random.default_rng(0)))
    dm = MicrographFolder(root=class_folder, num_folds=3, image_size=None)
    with pytest.raises(ValueError, match="different sizes.*image_size"):
        dm.setup("fit")


def test_strict_false_skips_and_reports_corrupt_files(class_folder, caplog):
    (class_folder / "beta" / "beta_0.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="beta_0.png"):
        MicrographFolder(root=class_folder, num_folds=3, split="stratified").setup("fit")
    dm = MicrographFolder(root=class_folder, num_folds=3, split="stratified", strict=False)
    dm.setup("fit")
    assert dm.skipped == [str(class_folder / "beta" / "beta_0.png")]
    assert len(dm.train_dataset) + len(dm.val_dataset) == 17


def test_download_verifies_checksums_against_a_local_mirror(tmp_path):
    import hashlib

    mirror = tmp_path / "mirror"
    rows = []
    for i in range(3):
        path = write_image(mirror / f"micrograph{i}.jpg", pattern(i, 16, np.random.default_rng(i)))
        rows.append(
            {
                "file": f"images/micrograph{i}.jpg",
                "label": "pearlite",
                "group": f"g{i}",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    labels = download_uhcs3(tmp_path / "uhcs3", base_url=mirror.as_uri(), manifest=manifest)
    assert labels.is_file() and len(list((tmp_path / "uhcs3" / "images").iterdir())) == 3
    rows[1]["sha256"] = "0" * 64
    (tmp_path / "uhcs3" / "images" / "micrograph1.jpg").unlink()
    with pytest.raises(OSError, match="checksum mismatch"):
        download_uhcs3(tmp_path / "uhcs3", base_url=mirror.as_uri(), manifest=write_manifest(manifest, rows))


@pytest.mark.slow
def test_cv_writes_summary_and_cv_report_reproduces_it(tmp_path, grouped_manifest):
    config = tmp_path / "cv.yaml"
    write_manifest_config(config, grouped_manifest, max_epochs=2, num_folds=3, augmentation="micrograph")
    main(["cv", "-c", str(config), "--cv_dir", str(tmp_path / "cv")])
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert summary["num_folds"] == 3 and set(summary["folds"]) == {"fold_0", "fold_1", "fold_2"}
    accuracies = [f["val/acc"] for f in summary["folds"].values()]
    assert summary["metrics"]["val/acc"]["mean"] == pytest.approx(np.mean(accuracies))
    assert summary["metrics"]["val/acc"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    oof = list(csv.DictReader((tmp_path / "cv" / "oof_predictions.csv").open()))
    assert len(oof) == 20 and {r["fold"] for r in oof} == {"0", "1", "2"}
    assert len({r["path"] for r in oof}) == 20  # every image predicted exactly once, by the model that never saw it
    report = {r["class"]: r for r in csv.DictReader((tmp_path / "cv" / "oof_report.csv").open())}
    for index, name in enumerate(["ferrite", "pearlite"]):
        mine = [r for r in oof if int(r["label"]) == index]
        assert int(report[name]["support"]) == len(mine) == 10
        recall = np.mean([int(r["prediction"]) == index for r in mine])
        assert float(report[name]["recall"]) == pytest.approx(recall, abs=1e-4)
    confusion = list(csv.DictReader((tmp_path / "cv" / "oof_confusion.csv").open()))
    assert all(float(r["ferrite"]) + float(r["pearlite"]) == pytest.approx(1, abs=2e-4) for r in confusion)
    assert (tmp_path / "cv" / "oof_confusion.png").stat().st_size > 0
    (tmp_path / "cv" / "summary.json").unlink()
    main(["cv-report", str(tmp_path / "cv")])
    assert json.loads((tmp_path / "cv" / "summary.json").read_text()) == summary
    assert "mean" in (tmp_path / "cv" / "summary.csv").read_text()


@pytest.mark.skipif(not (SHARED_DATA / "uhcs3" / "labels.csv").is_file(), reason="shared UHCS-3 data absent")
def test_uhcs3_from_the_shared_folder_splits_by_group():
    # The leakage detector has its own tests (planted copies); here only the group split of the real set matters.
    dm = UHCS3(root=SHARED_DATA / "uhcs3", image_size=64, leakage_check="off")
    assert dm.class_names == ["carbide_network", "pearlite", "spheroidite"] and len(dm.records) == 478
    dm.setup("fit")
    assert not {r.group for r in dm.train_dataset.records} & {r.group for r in dm.val_dataset.records}
    assert dm.train_dataset[0]["image"].shape == (1, 64, 64)
