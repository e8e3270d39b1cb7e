"""Nothing silent, nothing lost: outputs never clobber, files appear whole or not at all, odd names survive."""

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from conftest import pattern, write_image, write_manifest_config
from lightning.pytorch import Trainer
from PIL import Image
from torch.utils.data import DataLoader

from smalldata_pl.callbacks import PredictionWriter
from smalldata_pl.callbacks.writers import merge_shards
from smalldata_pl.cli import main
from smalldata_pl.datamodules import MicrographFolder, SegmentationFolder
from smalldata_pl.datasets.disk_copies import write_augmented, write_synthetic
from smalldata_pl.datasets.folder import MicrographFolderDataset, Record
from smalldata_pl.datasets.segmentation import MaskRecord
from smalldata_pl.evaluation.cross_validation import _mask_name
from smalldata_pl.io.output_folder import prepare_output
from smalldata_pl.io.tables import write_csv, write_json
from smalldata_pl.tasks import MicrographClassifier, MicrographSegmenter
from smalldata_pl.transforms.pipeline import IGNORE_INDEX


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------ outputs never clobber
def test_synth_refuses_a_non_empty_folder_and_overwrite_clears_it(tmp_path):
    out = tmp_path / "synthetic"
    (out / "grains").mkdir(parents=True)
    (out / "grains" / "precious.png").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match=rf"{out} is not empty.*--overwrite true"):
        main(["synth", "--count", "2", "--size", "16", "--out", str(out)])
    assert (out / "grains" / "precious.png").read_bytes() == b"not ours"  # untouched

    main(["synth", "--count", "2", "--size", "16", "--out", str(out), "--overwrite", "true"])
    assert not (out / "grains" / "precious.png").exists()
    rows = read_rows(out / "manifest.csv")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(r["file"] for r in rows)


def test_an_unwritable_out_folder_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "synthetic"  # cannot exist: its parent is a file
    with pytest.raises(OSError, match=rf"cannot write to output folder {out}.*writable --out"):
        main(["synth", "--count", "1", "--size", "16", "--out", str(out)])


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_a_read_only_out_folder_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OSError, match=rf"cannot write to output folder {locked / 'out'}"):
        write_synthetic("grains", 1, locked / "out", 16, None, 0, 8)


def test_overwrite_never_clears_the_inputs_or_the_working_directory(tmp_path):
    source = write_image(tmp_path / "data" / "a" / "x.png", pattern(0, 16, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="holds input file"):
        prepare_output(tmp_path / "data", overwrite=True, inputs=[source])
    with pytest.raises(ValueError, match="working directory"):
        prepare_output(Path("."), overwrite=True)  # tests run in tmp_path, which holds data/
    assert source.is_file()


def test_augment_names_copies_by_their_path_so_same_names_do_not_collide(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    rows = []
    for label in ("ferrite", "pearlite"):
        for folder in ("spec1", "spec2"):  # spec1/x.png and spec2/x.png: one file name in two folders
            write_image(root / folder / label / "x.png", pattern(len(rows), 16, rng))
            rows.append({"file": f"{folder}/{label}/x.png", "label": label, "group": f"{folder}-{label}"})
    write_csv(root / "manifest.csv", rows)
    config = write_manifest_config(tmp_path / "aug.yaml", root / "manifest.csv", 1, 2, augmentation="micrograph")
    out = tmp_path / "augmented"
    main(["augment", "-c", str(config), "--copies", "2", "--out", str(out)])

    manifest = read_rows(out / "manifest.csv")
    assert len(manifest) == 8
    files = [r["file"] for r in manifest]
    assert len(set(files)) == 8  # every copy its own file
    assert "ferrite/spec1/ferrite/x_aug0.png" in files and "ferrite/spec2/ferrite/x_aug0.png" in files
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(files)
    by_file = {r["file"]: r for r in manifest}
    assert by_file["ferrite/spec1/ferrite/x_aug1.png"]["group"] == "spec1-ferrite"
    assert by_file["ferrite/spec2/ferrite/x_aug1.png"]["group"] == "spec2-ferrite"
    assert Path(by_file["ferrite/spec2/ferrite/x_aug1.png"]["source"]) == root / "spec2" / "ferrite" / "x.png"

    with pytest.raises(FileExistsError, match="not empty"):  # a second run does not write over the first
        main(["augment", "-c", str(config), "--copies", "1", "--out", str(out)])


def test_augment_transforms_image_and_mask_together(tmp_path):
    root = tmp_path / "seg"
    image = np.zeros((12, 20), np.uint8)
    image[:, :5] = 255  # bright left strip
    mask = (image > 0).astype(np.uint8)
    records = []
    for folder in ("spot1", "spot2"):
        write_image(root / folder / "im.png", image)
        write_image(root / folder / "mask.png", mask)
        records.append(MaskRecord(root / folder / "im.png", root / folder / "mask.png", folder))
    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    manifest = write_augmented(records, flip, ["matrix", "phase"], 1, tmp_path / "out", root=root)

    rows = read_rows(manifest)
    assert [r["image"] for r in rows] == ["images/spot1/im_aug0.png", "images/spot2/im_aug0.png"]
    assert [r["mask"] for r in rows] == ["masks/spot1/im_aug0.png", "masks/spot2/im_aug0.png"]
    assert [r["group"] for r in rows] == ["spot1", "spot2"]
    for row in rows:
        written = np.asarray(Image.open(tmp_path / "out" / row["image"]))
        written_mask = np.asarray(Image.open(tmp_path / "out" / row["mask"]))
        assert np.array_equal(written_mask, mask[:, ::-1])  # flipped like its image
        assert np.array_equal(written > 127, written_mask == 1)


# --------------------------------------------------------------------------------------- files appear whole or not
def test_a_failure_while_writing_a_csv_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "predictions.csv"
    write_csv(path, [{"sample": "old", "prediction": 1}])
    before = path.read_bytes()
    calls = []
    original = csv.DictWriter.writerow

    def failing(self, row):
        calls.append(row)
        if len(calls) > 2:  # the header and the first row go through, the second row fails
            raise OSError("disk full")
        return original(self, row)

    monkeypatch.setattr(csv.DictWriter, "writerow", failing)
    with pytest.raises(OSError, match="disk full"):
        write_csv(path, [{"sample": f"new{i}", "prediction": i} for i in range(5)])
    assert len(calls) == 3
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # no temporary file left behind


def test_a_json_report_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"accuracy": 0.5})
    before = path.read_bytes()
    assert before.endswith(b"\n") and json.loads(before) == {"accuracy": 0.5}
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(path, {"accuracy": 0.75, "model": object()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left behind


@pytest.mark.skipif(sys.platform != "linux", reason="file names are bytes only on Linux file systems")
def test_predict_survives_file_names_that_are_not_utf8(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "micrographs"
    odd = Path(os.fsdecode(os.fsencode(str(root / "alpha")) + b"/caf\xff.png"))  # byte 0xff: not UTF-8
    write_image(odd, pattern(0, 16, rng))
    write_image(root / "beta" / "plain.png", pattern(1, 16, rng))
    data = MicrographFolder(root, image_size=16, num_folds=2, split="stratified", leakage_check="off")
    dataset = MicrographFolderDataset(data.records, data.pipeline(None))
    model = MicrographClassifier("test_resnet", num_classes=2, class_names=data.class_names)
    out = tmp_path / "predictions"
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[PredictionWriter(str(out))],
    )
    trainer.predict(model, dataloaders=DataLoader(dataset, batch_size=2), return_predictions=False)

    text = (out / "predictions.csv").read_bytes().decode("utf-8")  # valid UTF-8
    rows = list(csv.DictReader(text.splitlines()))
    assert [Path(r["sample"]).name for r in rows] == ["caf\\xff.png", "plain.png"]
    assert {r["prediction"] for r in rows} <= {"alpha", "beta"}


def test_ddp_ranks_write_shards_that_rank_zero_merges_in_dataset_order(tmp_path):
    class FakeStrategy:
        def __init__(self):
            self.barriers = 0

        def barrier(self, name=None):
            self.barriers += 1

    class FakeTrainer:
        def __init__(self, rank):
            self.global_rank, self.world_size, self.strategy, self.log_dir = rank, 2, FakeStrategy(), None

    model = torch.nn.Module()
    model.class_names = ["a", "b"]
    writers = {rank: PredictionWriter(str(tmp_path)) for rank in (0, 1)}
    trainers = {rank: FakeTrainer(rank) for rank in (0, 1)}
    for rank in (0, 1):
        writers[rank].on_predict_epoch_start(trainers[rank], model)
    # An unrepeated distributed sampler: rank 0 gets samples 0, 2, 4 and rank 1 gets 1, 3 ((epoch, index) pairs).
    for rank, indices in ((0, [0, 2, 4]), (1, [1, 3])):
        prediction = {
            "path": [f"s{i}.png" for i in indices],
            "group": [f"g{i}" for i in indices],
            "prediction": torch.tensor([i % 2 for i in indices]),
            "probabilities": torch.tensor([[1.0 - i % 2, float(i % 2)] for i in indices]),
        }
        writers[rank].write_on_batch_end(trainers[rank], model, prediction, [(0, i) for i in indices], None, 0)
    writers[1].on_predict_epoch_end(trainers[1], model)  # rank 1 reaches the barrier first
    assert (tmp_path / "predictions.rank1.csv").is_file() and not (tmp_path / "predictions.csv").exists()
    writers[0].on_predict_epoch_end(trainers[0], model)

    rows = read_rows(tmp_path / "predictions.csv")
    assert [r["sample"] for r in rows] == [f"s{i}.png" for i in range(5)]
    assert [r["prediction"] for r in rows] == ["a", "b", "a", "b", "a"]
    assert list(rows[0]) == ["sample", "prediction", "p_a", "p_b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]  # shards merged and removed
    assert trainers[0].strategy.barriers == 2


def _digest(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:8]


def test_predicted_masks_of_images_with_the_same_stem_never_overwrite_each_other(tmp_path):
    torch.manual_seed(0)
    paths = ["a/img.png", "b/img.png", "a/img.tif", "a/other.png"]  # two clashes: folder and format
    samples = [{"image": torch.randn(1, 32, 48), "group": "g", "path": p} for p in paths]
    model = MicrographSegmenter("test_resnet", num_classes=3)
    out = tmp_path / "predictions"

    def predict() -> list[dict]:
        trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                          callbacks=[PredictionWriter(str(out))])  # fmt: skip
        return trainer.predict(model, dataloaders=DataLoader(samples, batch_size=2))

    batches = predict()
    expected = ["img.png", f"img-{_digest('b/img.png')}.png", f"img-{_digest('a/img.tif')}.png", "other.png"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(expected)
    rows = read_rows(out / "predictions.csv")
    assert [(r["sample"], r["mask"]) for r in rows] == list(zip(paths, expected, strict=True))
    masks = torch.cat([b["prediction"] for b in batches]).numpy()
    for name, mask in zip(expected, masks, strict=True):
        assert np.array_equal(np.asarray(Image.open(out / "masks" / name)), mask)
    predict()  # a rerun into the same folder: the same names, nothing added
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(expected)


def test_ddp_ranks_cannot_see_each_others_mask_names_so_every_mask_carries_its_digest(tmp_path):
    class FakeTrainer:
        global_rank, world_size, log_dir = 0, 2, None

    writer = PredictionWriter(str(tmp_path))
    trainer, model = FakeTrainer(), torch.nn.Module()
    writer.on_predict_epoch_start(trainer, model)  # type: ignore[arg-type]
    prediction = {"path": ["x/img.png"], "group": ["g"], "prediction": torch.zeros(1, 4, 4, dtype=torch.long)}
    writer.write_on_batch_end(trainer, model, prediction, [(0, 0)], None, 0)  # type: ignore[arg-type]
    assert [p.name for p in (tmp_path / "masks").iterdir()] == [f"img-{_digest('x/img.png')}.png"]


def test_cv_mask_names_keep_the_stem_and_disambiguate_a_clash_by_path(tmp_path):
    assert _mask_name("a/img.png", tmp_path) == "img.png"
    (tmp_path / "img.png").touch()
    assert _mask_name("b/img.png", tmp_path) == f"img-{_digest('b/img.png')}.png"
    assert _mask_name("b/img.png", tmp_path) == _mask_name("b/img.png", tmp_path)  # stable
    (tmp_path / f"img-{_digest('b/img.png')}.png").touch()  # the same path twice: a counter follows
    assert _mask_name("b/img.png", tmp_path) == f"img-{_digest('b/img.png')}-1.png"


def test_run_output_names_live_in_io_and_stay_importable_from_the_callbacks():
    from smalldata_pl.callbacks import hparams, writers
    from smalldata_pl.io import output_folder

    assert writers.mask_file_name is output_folder.mask_file_name
    assert hparams.SETTINGS_FILE == output_folder.SETTINGS_FILE == "settings.json"


def test_merging_no_shards_writes_nothing(tmp_path):
    merge_shards([tmp_path / "predictions.rank0.csv"], tmp_path / "predictions.csv")
    assert not (tmp_path / "predictions.csv").exists()


def test_augmented_masks_write_invented_borders_and_unlabelled_pixels_as_255_and_read_back(tmp_path, caplog):
    root = tmp_path / "seg"
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 1
    write_image(root / "im.png", (mask * 200 + 20).astype(np.uint8))
    write_image(root / "mask.png", mask)
    records = [MaskRecord(root / "im.png", root / "mask.png", "spot")]
    # As train_augmentation leaves a rotation with constant borders: its invented mask pixels IGNORE_INDEX.
    rotate = A.Compose([A.Rotate(limit=(30, 30), border_mode=0, fill_mask=IGNORE_INDEX, p=1.0)])
    with caplog.at_level("WARNING", logger="smalldata_pl.datasets.disk_copies"):
        write_augmented(records, rotate, ["matrix", "phase"], 1, tmp_path / "plain", root=root)
    written = np.asarray(Image.open(tmp_path / "plain" / "masks" / "im_aug0.png"))
    corner, centre = written[0, 0], written[12:20, 12:20]
    assert set(np.unique(written)) == {0, 1, 255} and corner == 255 and 255 not in centre
    assert "ignore_value: 255" in caplog.text

    partly = mask.copy()
    partly[14:18, 14:18] = 255  # a source with unlabelled pixels (apply --unsure_below)
    write_image(root / "mask.png", partly)
    caplog.clear()
    with caplog.at_level("WARNING", logger="smalldata_pl.datasets.disk_copies"):
        manifest = write_augmented(
            records, rotate, ["matrix", "phase"], 1, tmp_path / "out", root=root, ignore_value=255
        )
    assert caplog.text == ""  # the DataModule reads them already
    written = np.asarray(Image.open(tmp_path / "out" / "masks" / "im_aug0.png"))
    assert written[0, 0] == 255 and np.all(written[15:17, 15:17] == 255)  # the centre stays where it was
    data = SegmentationFolder(
        tmp_path / "out", ["matrix", "phase"], manifest=manifest, num_folds=None, ignore_value=255
    )
    data.setup("fit")
    assert data.train_dataset.records[0].mask == tmp_path / "out" / "masks" / "im_aug0.png"
    assert set(np.unique(data.train_dataset[0]["mask"].numpy())) == {IGNORE_INDEX, 0, 1}
    write_image(root / "mask.png", mask)
    with pytest.raises(ValueError, match="255 is one of the 300 classes"):  # 255 cannot mean "no label" there
        write_augmented(records, rotate, [f"c{i}" for i in range(300)], 1, tmp_path / "many", root=root)


def test_write_augmented_refuses_mixed_records(tmp_path):
    records = [Record(tmp_path / "a.png", 0, "a"), MaskRecord(tmp_path / "b.png", tmp_path / "m.png", "b")]
    with pytest.raises(TypeError, match="all labelled records or all image/mask"):
        write_augmented(records, A.Compose([]), ["x"], 1, tmp_path / "out")


DDP_PREDICT = """
import sys
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from smalldata_pl.callbacks import PredictionWriter
from smalldata_pl.datamodules import MicrographFolder, SegmentationFolder
from smalldata_pl.tasks import MicrographClassifier

out = Path(sys.argv[1])
data = MicrographFolder(out / "data", image_size=16, num_folds=2, split="stratified", leakage_check="off", batch_size=2)
model = MicrographClassifier("test_resnet", num_classes=2, class_names=data.class_names)
trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=TensorBoardLogger(out, name="run"),
                  enable_progress_bar=False, enable_model_summary=False, callbacks=[PredictionWriter()])
trainer.predict(model, datamodule=data, return_predictions=False)
"""


@pytest.mark.slow
def test_two_ddp_ranks_predict_into_one_complete_table(tmp_path):
    rng = np.random.default_rng(0)
    for kind, name in enumerate(("a", "b")):
        for i in range(5):
            write_image(tmp_path / "data" / name / f"{name}{i}.png", pattern(kind, 16, rng))
    script = tmp_path / "ddp_predict.py"
    script.write_text(DDP_PREDICT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=env, timeout=300, cwd=tmp_path)
    folder = tmp_path / "run" / "version_0" / "predictions"
    data = MicrographFolder(tmp_path / "data", num_folds=2, split="stratified", leakage_check="off")
    data.setup("predict")
    expected = [str(r.path) for r in data.predict_dataset.records]
    assert len(expected) == 5  # an odd count: the ranks get 3 and 2 samples, in 2 and 1 batches
    assert [r["sample"] for r in read_rows(folder / "predictions.csv")] == expected  # each once, in dataset order
    assert sorted(p.name for p in folder.iterdir()) == ["predictions.csv"]  # the shards are merged away
