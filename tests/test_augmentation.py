import csv

import numpy as np
import pytest
import torch
from conftest import pattern, write_image
from scipy import ndimage

from smalldata_pl.cli import main
from smalldata_pl.datamodules import MicrographFolder, SyntheticGrains
from smalldata_pl.datasets.leakage import LeakageError, find_leaks
from smalldata_pl.datasets.splits import fold_indices
from smalldata_pl.transforms.augmentation import build_augmentation
from smalldata_pl.transforms.invariances import LabelInvariances, PhysicsViolationError, check_augmentation
from smalldata_pl.transforms.pipeline import ImagePipeline


@pytest.mark.parametrize(
    ("spec", "agreement"),
    [
        ("micrograph", 0.9),  # rotation and a resized crop interpolate the image, plus blur and noise
        ([{"HorizontalFlip": {"p": 1.0}}, "RandomRotate90", {"Rotate": {"limit": 20, "p": 1.0}}], 0.97),
        ({"__class_fullname__": "Compose", "transforms": [{"__class_fullname__": "VerticalFlip", "p": 1.0}]}, 1.0),
    ],
    ids=["preset", "list", "albumentations_dict"],
)
def test_pipelines_keep_masks_aligned_with_images(spec, agreement):
    """A two-level image of its own mask, warped (interpolated) beside the mask (nearest-neighbour), still matches it.

    Away from label borders (pixels whose 3x3 neighbourhood in the warped mask is one label) the image must sit on
    its label's side of the threshold: interpolation, blur and noise move values by far less than the 0.6 step,
    while a one-pixel misalignment of an interpolating pipeline fails several percent of these pixels. Over all
    pixels only label borders may disagree, as many as the spec's interpolation explains (none for pure flips).
    """
    rng = np.random.default_rng(0)
    mask = np.kron((rng.random((6, 6)) > 0.5).astype(np.uint8), np.ones((8, 8), dtype=np.uint8))
    pipeline = ImagePipeline(1, 48, build_augmentation(spec, 48), (0.0,), (1.0,))
    moved = 0
    for seed in range(8):
        out = pipeline(0.2 + 0.6 * mask.astype(np.float32), mask=mask, seed=seed)
        image, warped = out["image"][0].numpy(), out["mask"].numpy()
        assert set(np.unique(warped)) <= {0, 1}  # nearest-neighbour: no interpolated labels
        moved += not np.array_equal(warped, mask)
        inside = ndimage.minimum_filter(warped, 3) == 1
        outside = ndimage.maximum_filter(warped, 3) == 0
        assert inside.sum() > 100 and outside.sum() > 100, seed
        threshold = (np.median(image[inside]) + np.median(image[outside])) / 2
        assert (image[inside] > threshold).mean() >= 0.98, seed
        assert (image[outside] < threshold).mean() >= 0.98, seed
        assert ((image > threshold) == (warped == 1)).mean() >= agreement, seed
    assert moved >= 6  # the geometry really changed the masks, so this is not the agreement of untouched inputs


def test_unknown_preset_and_transform_are_named():
    with pytest.raises(ValueError, match="unknown augmentation preset 'rotations'"):
        build_augmentation("rotations")
    with pytest.raises(ValueError, match="unknown Albumentations transform 'Twirl'"):
        build_augmentation([{"Twirl": {}}])


def test_rescaling_crop_is_refused_on_a_grain_size_task():
    dm = SyntheticGrains(train_size=4, val_size=4, image_size=32, augmentation="micrograph")
    with pytest.raises(PhysicsViolationError, match="RandomResizedCrop.*scale"):
        dm.setup("fit")


def test_hue_jitter_is_refused_on_greyscale_sem(class_folder):
    dm = MicrographFolder(root=class_folder, num_folds=3, split="stratified", augmentation=[{"HueSaturationValue": {}}])
    with pytest.raises(PhysicsViolationError, match="HueSaturationValue.*colour"):
        dm.setup("fit")


def test_free_rotation_is_refused_on_a_directional_microstructure(class_folder):
    rolled = LabelInvariances(rotation=False)
    dm = MicrographFolder(
        root=class_folder, num_folds=3, split="stratified", invariances=rolled, augmentation=[{"Rotate": {"limit": 15}}]
    )
    with pytest.raises(PhysicsViolationError, match="Rotate rotates"):
        dm.setup("fit")
    check_augmentation(build_augmentation([{"HorizontalFlip": {}}]), rolled, "rolled sheet")  # flips are fine


def test_eval_is_deterministic_and_augmentation_varies_by_epoch_but_repeats(class_folder):
    def make():
        dm = MicrographFolder(
            root=class_folder, num_folds=3, split="stratified", augmentation="micrograph", image_size=32, seed=7
        )
        dm.setup("fit")
        return dm

    dm, again = make(), make()
    assert torch.equal(dm.val_dataset[0]["image"], dm.val_dataset[0]["image"])
    epoch0, epoch1 = dm.train_dataset[(0, 2)]["image"], dm.train_dataset[(1, 2)]["image"]
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch0, again.train_dataset[(0, 2)]["image"])
    assert not torch.equal(dm.train_dataset[(0, 2)]["image"], dm.train_dataset[(0, 3)]["image"])


def test_augmented_batches_do_not_depend_on_worker_count(class_folder):
    def batches(workers):
        dm = MicrographFolder(
            root=class_folder,
            num_folds=3,
            split="stratified",
            augmentation="micrograph",
            image_size=32,
            batch_size=4,
            num_workers=workers,
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(3)
        return [b["image"] for b in loader]

    for a, b in zip(batches(0), batches(2), strict=True):
        assert torch.equal(a, b)


PLANTS = {
    "rot90": lambda im: np.rot90(im),
    "flip": lambda im: im[:, ::-1],
    "crop10": lambda im: im[int(im.shape[0] * 0.1) :, int(im.shape[1] * 0.1) :],
    "brightness": lambda im: np.clip(im.astype(np.int16) + 40, 0, 255).astype(np.uint8),
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_leakage_guard_catches_planted_copies(tmp_path, plant):
    rng = np.random.default_rng(0)
    train = [write_image(tmp_path / f"train_{i}.png", pattern(i, 96, rng)) for i in range(8)]
    source = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(train[3]))
    val = [write_image(tmp_path / f"val_{i}.png", pattern(i, 96, rng)) for i in range(4)]
    val.append(write_image(tmp_path / "planted.png", np.ascontiguousarray(PLANTS[plant](source))))
    pairs = find_leaks(train, val)
    assert [(p.first, p.second) for p in pairs] == [(str(train[3]), str(val[-1]))]


def test_leakage_check_stops_setup_and_names_both_files(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        image = pattern(i % 2, 80, rng)
        write_image(tmp_path / f"img{i}.png", image)
        rows.append({"file": f"img{i}.png", "label": str(i % 2), "group": f"g{i}"})
        if i == 0:  # a flipped copy filed as another specimen
            write_image(tmp_path / "copy.png", image[:, ::-1].copy())
            rows.append({"file": "copy.png", "label": "0", "group": "g-copy"})
    with (tmp_path / "m.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    separated = 0
    for fold in range(3):
        dm = MicrographFolder(
            root=tmp_path, manifest=tmp_path / "m.csv", class_names=["a", "b"], num_folds=3, fold=fold
        )
        train, val = fold_indices([r.label for r in dm.records], [r.group for r in dm.records], 3, fold)
        sides = {dm.records[i].group: "train" for i in train} | {dm.records[i].group: "val" for i in val}
        if sides["g0"] == sides["g-copy"]:
            dm.setup("fit")  # copies on the same side leak nothing
            continue
        separated += 1
        with pytest.raises(LeakageError, match=r"img0\.png.*copy\.png|copy\.png.*img0\.png"):
            dm.setup("fit")
    assert separated >= 1
    main(
        [
            "audit",
            "--data=smalldata_pl.datamodules.MicrographFolder",
            f"--data.root={tmp_path}",
            f"--data.manifest={tmp_path / 'm.csv'}",
            "--data.class_names=[a,b]",
            "--data.num_folds=3",
            "--data.leakage_check=off",
            "--model=smalldata_pl.tasks.MicrographClassifier",
            "--model.backbone=test_resnet",
            "--report",
            str(tmp_path / "leaks.csv"),
        ]
    )
    report = list(csv.DictReader((tmp_path / "leaks.csv").open()))
    assert any("copy.png" in r["train"] + r["validation"] for r in report if r["kind"] == "copy")


def test_augment_export_keeps_groups_and_loads_back(tmp_path, grouped_manifest):
    out = tmp_path / "augmented"
    main(
        [
            "augment",
            "--copies",
            "2",
            "--out",
            str(out),
            "--data=smalldata_pl.datamodules.MicrographFolder",
            f"--data.root={grouped_manifest.parent}",
            f"--data.manifest={grouped_manifest}",
            "--data.augmentation=micrograph",
            "--data.image_size=32",
            "--model=smalldata_pl.tasks.MicrographClassifier",
            "--model.backbone=test_resnet",
        ]
    )
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 40 and {r["group"] for r in rows} == {
        f"{c}-{g}" for c in ("ferrite", "pearlite") for g in range(5)
    }
    dm = MicrographFolder(root=out, manifest=out / "manifest.csv", num_folds=5, image_size=32, leakage_check="off")
    dm.setup("fit")
    assert not {r.group for r in dm.train_dataset.records} & {r.group for r in dm.val_dataset.records}
