"""Distil a synthetic-only Super1 segmenter into a student on the unlabelled Super1 training images.

    python benchmarks/super1_distil.py TEACHER.ckpt [--targets benchmarks/runs/super1_adapted/targets.csv]
        [--out benchmarks/runs/super1_distil/seed0] [--seed 0] [--epochs 15] [--lr 3e-4] [--crops 3]

The distillation recipe of ``tbm_distil.py`` on a second real material, translated with nothing tuned: the teacher
(a ``super1_adapted.sh`` checkpoint: synthetic labels only, then AdaBN on the unlabelled Super1 training images)
segments those training images with 8-view TTA (their masks are never read); its masks, written as ``smalldata
apply`` writes them, are the labels on which the teacher is fine-tuned from its own checkpoint for 15 epochs at
AdamW 3e-4, on 3 random 256 px crops of each image per epoch (``micrograph`` augmentation), with 128 fresh
``SyntheticPrecipitates`` images mixed into every epoch as the synthetic pre-training renders them; no validation,
last epoch. As the teacher was, the student then gets AdaBN on the same unlabelled images: the synthetic images mixed
into its batches would otherwise leave it with synthetic BatchNorm statistics. Teacher, student, and both averaged
are scored with 8-view TTA on the Super1 test images, which no decision touched. Writes ``results.json`` under
``--out``; the pseudo-labels and the student stay there, so a rerun only scores.

The student is also kept as the fine-tune left it, before its AdaBN (``student_before_adabn.ckpt``), and scored
alone (``before adabn``), so that the final AdaBN is measured, not assumed: ending the TBM students so lowered them.
Every row is also scored on the Super1 validation images (``validation``), on which a user could decide; there the
student before AdaBN scored higher on every seed, so ``superalloy_distilled.yaml`` no longer ends with AdaBN.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from tbm_distil import adapt_student, add_student_options, fine_tune

from smalldata_pl.datamodules import SegmentationFolder, Superalloy, SyntheticPrecipitates
from smalldata_pl.datasets.folder import read_manifest
from smalldata_pl.datasets.pseudo_labels import target_records
from smalldata_pl.inference import load_predictor
from smalldata_pl.inference.reports import apply_to_images
from smalldata_pl.models.metrics import ClassIoU


def fit_student(teacher: Path, manifest: Path, targets: Path, args: argparse.Namespace, folder: Path) -> Path:
    """Fine-tune ``teacher`` on its pseudo-labels with synthetic images mixed in (``student_before_adabn.ckpt``), then
    AdaBN on the targets (``student.ckpt``, returned); what is on disk is reused, so an interrupted run resumes."""
    plain = folder / "student_before_adabn.ckpt"
    if not plain.is_file():
        L.seed_everything(args.seed, workers=True)
        synthetic = SyntheticPrecipitates(
            train_size=128, val_size=1, test_size=1, image_size=args.crop, imaging="sem_se", fresh_each_epoch=True,
            augmentation="micrograph", batch_size=4, seed=args.seed,
        )  # fmt: skip
        data = SegmentationFolder(
            root=manifest.parent, class_names=["matrix", "secondary", "tertiary"], manifest=manifest,
            crop_size=args.crop, num_folds=None, crops_per_image=args.crops, batch_size=4, augmentation="micrograph",
            seed=args.seed, mix_in=synthetic,
        )  # fmt: skip
        fine_tune(teacher, data, args, plain)
    # The targets as the AdaptiveBatchNorm callback reads them, at the native 512 px the 256 px sliding windows see.
    return adapt_student(plain, target_records(None, targets), 512, 4, folder / "student.ckpt")


def mean_iou(checkpoints: list[Path], test: Any) -> dict[str, Any]:
    """Mean and per-class IoU over the test images, the checkpoints averaged, with 8-view TTA."""
    predictor = load_predictor(checkpoints, tta=True)
    iou = ClassIoU(3)
    for index, record in enumerate(test.records):
        predicted = torch.from_numpy(predictor.predict(record.image).mask)
        iou.update(predicted[None], test[index]["mask"][None])
    per_class = iou.compute()
    return {"miou": float(ClassIoU.mean(per_class)), "per_class": [round(v, 4) for v in per_class.tolist()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", type=Path, help="a synthetic-only Super1 checkpoint (adabn.ckpt)")
    parser.add_argument("--root", type=Path, default=Path("../shared/data/superalloy"))
    parser.add_argument("--targets", type=Path, default=Path("benchmarks/runs/super1_adapted/targets.csv"))
    add_student_options(parser, crop=256, unit="image")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/super1_distil/seed0"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timings: dict[str, float] = {}
    manifest = args.out / "pseudo" / "manifest.csv"
    if not manifest.is_file():
        start = time.perf_counter()
        images = [Path(row["file"]) for row in read_manifest(args.targets, ("file",))]
        apply_to_images(load_predictor(args.teacher, tta=True), [(p, p.name) for p in images], manifest.parent)
        timings["teacher_labels_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    student = fit_student(args.teacher, manifest, args.targets, args, args.out / "student")
    timings["fit_s"] = round(time.perf_counter() - start, 1)
    data = Superalloy(args.root, official_split="Super1", crop_size=args.crop)
    data.setup("test")
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "timings": timings}
    candidates = {
        "teacher": [args.teacher],
        "student": [student],
        "both": [args.teacher, student],
        "before adabn": [student.with_name("student_before_adabn.ckpt")],
    }
    for name, checkpoints in candidates.items():
        results[name] = mean_iou(checkpoints, data.test_dataset) | {
            "validation": mean_iou(checkpoints, data.val_dataset)
        }
        print(
            f"{name:12s} mean IoU {results[name]['miou']:.3f}  per class {results[name]['per_class']}  "
            f"validation {results[name]['validation']['miou']:.3f}",
            flush=True,
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
