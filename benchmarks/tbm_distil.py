"""Distil the TBM ensemble into its own members on unlabelled real tiles, scored on the half they never saw.

    python benchmarks/tbm_distil.py CHANNEL_CKPT ONLY_CKPT [--halves benchmarks/runs/tbm_edge_input_60]
        [--epochs 15] [--lr 3e-4] [--crops 3] [--rounds 1] [--unsure_below P|auto] [--with_students DIR]
        [--another_training CHANNEL_CKPT ONLY_CKPT] [--zoom_out] [--hysteresis LOW [--ridges]]
        [--out benchmarks/runs/tbm_distil]

The teacher is what ``smalldata apply`` runs best on the TBM tiles with no label: the ``edge_input: channel`` and
``only`` networks averaged (``--ensemble``), with 8-view TTA and the zooms 0.75 and 1 (``--scales``). For each
direction of the group 2-fold of ``tbm_sim_to_real.py`` (its ``labels_A.csv`` / ``labels_B.csv``, whose masks are
never read here except to score), the teacher segments the tuning half's tiles (36 and 44); its masks are the labels
of a second stage (redrawn at the synthetic labels' width, ``--boundary_width 2``) that fine-tunes each member from
its own checkpoint on random crops of those tiles (``SegmentationFolder`` at native scale, ``micrograph``
augmentation) with fresh synthetic ``tint_etched`` images mixed into every epoch (``mix_in``: the synthetic truth
keeps anchoring what a boundary is while the real crops show the real texture). The two students are then averaged
as the teacher was and segment the *other* half; the teacher segments it too, and so do teacher and students
averaged, four members (``both``, added after the students' seed-0 scores had been seen). Both halves pooled, every
tile is scored once by students whose teacher never saw it, against the teacher on the same tiles
(``score_boundaries``: skeletons, 3 px, Heyn intercepts). Every other setting was fixed before the first score.
Writes ``results.json`` under ``--out``.

With ``--rounds 2`` a second round follows in each direction: teacher and students averaged (the first round's
``both``) label the tuning half again, each member is fine-tuned again *from its own checkpoint* on those labels (the
same recipe; only the labels differ), and the new students are scored alone (``round2 students``) and averaged with
everything before them, six members (``round2 both``). The first round's students are reused from ``--out``, and its
rows are those of the one-round run (``results.json``); this run writes ``results_round2.json``.

With ``--unsure_below P`` the teacher's masks leave unlabelled (255, ``smalldata apply --unsure_below``) every pixel
whose written class it gives a probability below ``P``, and the students train on them with ``ignore_value: 255``:
faint boundaries the teacher hesitates on are not taught as grain, nor is the band its redrawn boundaries free.
With ``--unsure_below auto`` no threshold is set: per tile and class, as many of the least sure pixels as the teacher
expects to be wrong are left unlabelled (``smalldata apply --unsure_below auto``).

With ``--adabn`` each student is also ended with AdaBN, as ``super1_distil.py`` ends its students: its BatchNorm
statistics, estimated during the fine-tune over real crops and synthetic images together, are re-estimated on the
tuning half's whole tiles at native scale (``adapt_to_targets``, the ``AdaptiveBatchNorm`` callback's own step; no
label, nothing learnt), saved beside it as ``student_adabn.ckpt``, and scored alone (``students adabn``) and
averaged with the teacher (``both adabn``) beside the rows above.

With ``--with_students DIR`` (the ``--out`` of a run with the same teacher, e.g. one without ``--unsure_below``) the
run's students are not scored again: they are averaged with DIR's students (``students + other``, four members) and
with the teacher too (``teacher + all students``, six), and ``results_with_<DIR's name>.json`` is written.

With ``--another_training CHANNEL ONLY`` (the two members of another training seed) the teacher averages both
trainings' members, four networks, and each of the four is distilled into a student (``channel_2``, ``only_2`` for
the second training); ``both`` then averages eight.

With ``--zoom_out`` the students see the real crops at the zooms they are scored at: each crop is cut
``crop / 0.75`` px wide and resized to ``crop`` at a random zoom between 0.75 and 1 (``RandomResizedCrop`` after the
``micrograph`` augmentation, square, uniform in area), where the plain recipe cuts them at native scale only while the
teacher's labels and every score come from the zooms 0.75 and 1. The synthetic images mixed in are unchanged.

With ``--hysteresis LOW`` every row is also scored with Canny's hysteresis on the same probability maps
(:func:`grow_boundaries`): boundary pixels at or above ``LOW`` join a decided boundary they connect to. It lost on
TBM (benchmarks/README.md), so it stays here and is no option of ``smalldata apply``. The rows get `` hysteresis``
appended and the run writes ``results_hysteresis.json``. With ``--ridges`` as well, only the map's ridge pixels may
join, as one-pixel lines (:func:`ridge_pixels`, Canny's non-maximum suppression): rows `` ridge hysteresis``,
``results_ridge_hysteresis.json``. Students already in ``--out`` are reused, so a finished run's members are scored
again without training.

``--root`` and ``--halves`` may point at any two halves laid out so, e.g. rendered specimens with known truth from
``specimen_halves.py``.

The labels are written as ``smalldata apply`` with the ensemble and ``--boundary_width 2`` writes them (masks and their
``manifest.csv``, through ``apply_to_images``); a user then trains a student on them with
``configs/segmentation/grain_boundaries_distilled.yaml`` (``SegmentationFolder``, ``mix_in``, ``init_weights``).
"""

import argparse
import json
import math
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import albumentations as A
import lightning as L
import numpy as np
import torch
from skimage.feature import hessian_matrix, hessian_matrix_eigvals
from skimage.measure import label

from smalldata_pl.callbacks.adabn import adapt_to_targets
from smalldata_pl.datamodules import SegmentationFolder, SyntheticGrainBoundaries
from smalldata_pl.datasets.folder import Record, read_manifest
from smalldata_pl.datasets.segmentation import UNLABELLED
from smalldata_pl.inference.measurements import read_label_mask
from smalldata_pl.inference.metallography import score_boundaries
from smalldata_pl.inference.predictor import Prediction, load_predictor
from smalldata_pl.inference.reports import apply_to_images
from smalldata_pl.inference.unsure import UnsureBelow
from smalldata_pl.models.checkpoint_files import paths_allowed
from smalldata_pl.tasks import MicrographSegmenter
from smalldata_pl.transforms.augmentation import micrograph_preset

SCALES = (0.75, 1.0)
TILE = 256  # the TBM tiles' side: AdaBN sees them whole, at the native scale the students were tuned at
BOUNDARY_WIDTH = 2  # SyntheticGrainBoundaries' default, which the members were trained with
RIDGE_SIGMA = 1.0  # px: about the half-width of the ~3 px boundaries the networks learnt from
# Canny's four neighbour directions (row, column), in steps of 45 degrees from the row axis.
NEIGHBOURS = ((1, 0), (1, 1), (0, 1), (-1, 1))


def probability_or_auto(value: str) -> UnsureBelow:
    return "auto" if value == "auto" else float(value)


def read_half(halves: Path, name: str) -> list[dict[str, str]]:
    return read_manifest(halves / f"labels_{name}.csv", ("image", "mask", "group"))


def ridge_pixels(probability: np.ndarray, sigma: float = RIDGE_SIGMA) -> np.ndarray:
    """Where ``probability`` ``[H, W]`` peaks across a line: at least both neighbours along the Hessian's most negative
    eigenvector (at ``sigma``, binned to the nearest of Canny's four directions), with that eigenvalue negative."""
    hessian = hessian_matrix(probability, sigma=sigma, order="rc", use_gaussian_derivatives=False)
    hrr, hrc, hcc = hessian
    # The larger eigenvalue's eigenvector lies at 0.5 * atan2(2 hrc, hrr - hcc) from the row axis; across the
    # ridge is the other one, a right angle further.
    across = 0.5 * np.arctan2(2 * hrc, hrr - hcc) + np.pi / 2
    curvature = hessian_matrix_eigvals(hessian)[1]  # the smaller eigenvalue: the curvature across the ridge
    direction = np.round((across % np.pi) / (np.pi / 4)).astype(int) % len(NEIGHBOURS)
    padded = np.pad(probability, 1, mode="edge")
    height, width = probability.shape
    peak = np.zeros(probability.shape, dtype=bool)
    for k, (dr, dc) in enumerate(NEIGHBOURS):
        ahead = padded[1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width]
        behind = padded[1 - dr : 1 - dr + height, 1 - dc : 1 - dc + width]
        peak |= (direction == k) & (probability >= ahead) & (probability >= behind)
    return peak & (curvature < 0)


def grow_boundaries(
    mask: np.ndarray, probabilities: np.ndarray, boundary: int, weak_above: float, ridges: bool = False
) -> np.ndarray:
    """``mask`` with every pixel whose ``boundary`` probability is at least ``weak_above`` added to the boundary where
    its 8-connected run of such pixels reaches a decided boundary pixel (hysteresis; the decision is the strong
    threshold). With ``ridges`` only the map's ridge pixels (:func:`ridge_pixels`) may join."""
    strong = mask == boundary
    weak = probabilities[boundary] >= weak_above
    if ridges:
        weak &= ridge_pixels(probabilities[boundary])
    runs = label(strong | weak, connectivity=2)
    reached = np.unique(runs[strong])
    grown = mask.copy()
    grown[weak & np.isin(runs, reached[reached > 0])] = boundary
    return grown


def segment(checkpoints: list[Path], rows: list[dict[str, str]], root: Path) -> list[Prediction]:
    """Predictions of the rows' images (masks and the probabilities they were decided from), as ``smalldata apply
    --tta true --scales [0.75,1.0] --ensemble`` makes them."""
    predictor = load_predictor(checkpoints, tta=True, scales=SCALES)
    return [predictor.predict(root / row["image"]) for row in rows]


def write_pseudo_labels(
    teacher: list[Path], rows: list[dict[str, str]], root: Path, out: Path, unsure_below: UnsureBelow | None
) -> Path:
    """What ``smalldata apply TEACHER --tta true --scales [0.75,1.0] --boundary_width 2 [--unsure_below P]`` writes
    for the rows' images into ``out``: masks and their ``manifest.csv``, which is returned.

    The teacher draws its boundaries several pixels wide, the synthetic labels beside them about 3 px
    (``boundary_width`` 2): redrawn at that width, both sources tell the student one width.
    """
    predictor = load_predictor(
        teacher, tta=True, scales=SCALES, boundary_width=BOUNDARY_WIDTH, unsure_below=unsure_below
    )
    apply_to_images(predictor, [(root / row["image"], Path(row["image"]).name) for row in rows], out)
    return out / "manifest.csv"


def scored(label: str, masks: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, Any]:
    """Score the masks, print one line named ``label`` and return the score as a JSON-ready dict."""
    score = score_boundaries(masks, truth)
    print(
        f"{label:16s} F1 {score.f1:.3f} (P {score.precision:.3f}, R {score.recall:.3f}), "
        f"error {score.median_intercept_error:.1%}",
        flush=True,
    )
    return score.as_dict()


def real_crops(crop: int, zoom_out: bool) -> tuple[int, str | dict[str, Any]]:
    """The window cut from each pseudo-labelled tile and the augmentation that makes it a ``crop`` px crop.

    Plain: ``crop`` px at native scale with the ``micrograph`` preset. With ``zoom_out``: a ``crop / min(SCALES)``
    window, the preset, then a square ``RandomResizedCrop`` to ``crop`` whose area share runs from
    ``(crop / window)²`` (zoom 1) to the whole window (zoom ``min(SCALES)``), in Albumentations' serialised form.
    """
    if not zoom_out:
        return crop, "micrograph"
    window = math.ceil(crop / min(SCALES))
    zoom = A.RandomResizedCrop((crop, crop), scale=((crop / window) ** 2, 1.0), ratio=(1.0, 1.0), p=1.0)
    return window, A.to_dict(A.Compose([*micrograph_preset().transforms, zoom]))


def fit_student(checkpoint: Path, manifest: Path, args: argparse.Namespace, folder: Path) -> Path:
    """Fine-tune the member ``checkpoint`` on the pseudo-labelled crops with synthetic images mixed in (a student
    already in ``folder`` is reused, so an interrupted run resumes)."""
    path = folder / "student.ckpt"
    if path.is_file():
        return path
    L.seed_everything(args.seed, workers=True)
    window, augmentation = real_crops(args.crop, args.zoom_out)
    synthetic = SyntheticGrainBoundaries(
        train_size=128, val_size=1, image_size=args.crop, imaging="optical", fresh_each_epoch=True, batch_size=8,
        in_chans=3, style="tint_etched", seed=args.seed,
    )  # fmt: skip
    data = SegmentationFolder(
        root=manifest.parent, class_names=["grain", "boundary"], manifest=manifest, crop_size=window, num_folds=None,
        crops_per_image=args.crops, batch_size=8, in_chans=3, augmentation=augmentation, seed=args.seed,
        mix_in=synthetic, ignore_value=None if args.unsure_below is None else UNLABELLED,
    )  # fmt: skip
    return fine_tune(checkpoint, data, args, path)


def adapt_student(student: Path, records: Sequence[Record], image_size: int, batch_size: int, path: Path) -> Path:
    """The student with AdaBN on the ``records``' images (shorter side scaled to ``image_size``, central square
    kept), saved as ``path`` (reused if there); shared with ``super1_distil.py``, where it gives the same statistics
    as the ``AdaptiveBatchNorm`` callback at the end of the fit."""
    if path.is_file():
        return path
    with paths_allowed():
        model = MicrographSegmenter.load_from_checkpoint(student, map_location="cpu", pretrained=False)
    # A bare Trainer has no DataModule: the pipeline takes the model's channels and their default (ImageNet-derived)
    # statistics, which SegmentationFolder normalised the student's crops with.
    adapt_to_targets(L.Trainer(accelerator="cpu", logger=False), model, records, image_size, batch_size)
    checkpoint = torch.load(student, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = model.state_dict()
    torch.save(checkpoint, path)
    return path


def fine_tune(
    checkpoint: Path,
    data: L.LightningDataModule,
    args: argparse.Namespace,
    path: Path,
    callbacks: Sequence[L.Callback] = (),
) -> Path:
    """The second stage, shared with ``super1_distil.py``: ``checkpoint`` fine-tuned on ``data`` at AdamW
    ``args.lr`` for ``args.epochs`` with no validation, its last epoch saved to ``path`` (after ``callbacks`` have
    run at the end of the fit)."""
    # Paths: the callback state of the benchmark's own checkpoints holds one. pretrained=False: the checkpoint holds
    # every weight.
    with paths_allowed():
        model = MicrographSegmenter.load_from_checkpoint(
            checkpoint, map_location="cpu", pretrained=False, optimizer=partial(torch.optim.AdamW, lr=args.lr)
        )
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=path.parent, limit_val_batches=0,
        callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(path)
    return path


def distil(
    teacher: list[Path],
    members: list[tuple[str, Path]],
    rows: list[dict[str, str]],
    root: Path,
    args: argparse.Namespace,
    folder: Path,
) -> tuple[list[Path], dict[str, float]]:
    """One round: the teacher labels the tuning rows, each member is fine-tuned on them from its own checkpoint.

    Returns the students (in the order of ``members``) and the round's timings. Labels are written only when a
    student is still to be trained, so an interrupted run or a later round reuses what is on disk.
    """
    manifest = folder / "pseudo" / "manifest.csv"
    timings: dict[str, float] = {}
    if not all((folder / name / "student.ckpt").is_file() for name, _ in members) and not manifest.is_file():
        start = time.perf_counter()
        write_pseudo_labels(teacher, rows, root, folder / "pseudo", args.unsure_below)
        timings["teacher_labels_s"] = round(time.perf_counter() - start, 1)
    students = []
    for name, checkpoint in members:
        start = time.perf_counter()
        students.append(fit_student(checkpoint, manifest, args, folder / name))
        timings[f"fit_{name}_s"] = round(time.perf_counter() - start, 1)
    return students, timings


def add_student_options(parser: argparse.ArgumentParser, crop: int, unit: str) -> None:
    """The second stage's settings, shared with ``super1_distil.py``: epochs, LR, crops per ``unit`` and their size,
    seed and threads."""
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--crops", type=int, default=3, help=f"random crops of each pseudo-labelled {unit} per epoch")
    parser.add_argument("--crop", type=int, default=crop)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("channel", type=Path, help="the edge_input: channel member")
    parser.add_argument("only", type=Path, help="the edge_input: only member")
    parser.add_argument(
        "--another_training",
        nargs=2,
        action="append",
        default=[],
        type=Path,
        metavar=("CHANNEL", "ONLY"),
        help="the two members of another training seed: they join the teacher and are distilled too (repeatable)",
    )
    parser.add_argument("--root", type=Path, default=Path("../shared/data/grain_boundaries_tbm"))
    parser.add_argument("--halves", type=Path, default=Path("benchmarks/runs/tbm_edge_input_60"))
    add_student_options(parser, crop=128, unit="tile")
    parser.add_argument("--rounds", type=int, default=1, help="teacher + students label again for the next round")
    parser.add_argument(
        "--unsure_below", type=probability_or_auto, default=None, help="leave unsure pseudo-label pixels unlabelled"
    )
    parser.add_argument("--adabn", action="store_true", help="also score the students ended with AdaBN")
    parser.add_argument(
        "--zoom_out", action="store_true", help="real crops at a random zoom in [0.75, 1], the zooms scored at"
    )
    parser.add_argument("--hysteresis", type=float, default=None, help="also score every row with this low threshold")
    parser.add_argument("--ridges", action="store_true", help="hysteresis along the map's ridges only")
    parser.add_argument("--with_students", type=Path, default=None, help="another run's students to average with")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/tbm_distil"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.root.resolve()
    halves = {name: read_half(args.halves, name) for name in ("A", "B")}
    members = [("channel", args.channel), ("only", args.only)]
    for k, (channel, only) in enumerate(args.another_training, start=2):
        members += [(f"channel_{k}", channel), (f"only_{k}", only)]
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "folds": {}}
    predicted: dict[str, list[np.ndarray]] = {}
    truth: list[np.ndarray] = []
    for tune, evaluate in (("A", "B"), ("B", "A")):
        folder = args.out / f"{tune}_to_{evaluate}"
        teacher = [checkpoint for _, checkpoint in members]
        students: list[Path] = []
        fold: dict[str, Any] = {"timings": {}}
        for round_ in range(1, args.rounds + 1):
            teacher = [*teacher, *students]  # from round two on: everything so far, averaged
            round_folder = folder if round_ == 1 else folder / f"round{round_}"
            students, fold["timings"][f"round{round_}"] = distil(
                teacher, members, halves[tune], root, args, round_folder
            )
        scored_rows = halves[evaluate]
        fold_truth = [read_label_mask(root / row["mask"]) > 0 for row in scored_rows]
        truth += fold_truth
        # Earlier rounds' rows are those of a run with fewer rounds, and a later round's teacher is the round before's
        # "both": only a first round scores its teacher.
        prefix = "" if args.rounds == 1 else f"round{args.rounds} "
        if args.with_students is not None:
            other = [args.with_students / folder.name / name / "student.ckpt" for name, _ in members]
            candidates = {
                "students + other": [*students, *other],
                "teacher + all students": [*teacher, *students, *other],
            }
        else:
            candidates = {"teacher": teacher, "students": students, "both": [*teacher, *students]}
            if args.adabn:
                tiles = [Record(root / row["image"], -1, f"target/{Path(row['image']).stem}") for row in halves[tune]]
                adapted = [
                    adapt_student(student, tiles, TILE, 8, student.with_name("student_adabn.ckpt"))
                    for student in students
                ]
                candidates |= {"students adabn": adapted, "both adabn": [*teacher, *adapted]}
            if args.rounds > 1:
                del candidates["teacher"]
        for name, checkpoints in candidates.items():
            predictions = segment(checkpoints, scored_rows, root)
            rows = {prefix + name: [p.mask for p in predictions]}
            if args.hysteresis is not None:
                rows[f"{prefix}{name} {'ridge ' if args.ridges else ''}hysteresis"] = [
                    grow_boundaries(p.mask, p.probabilities, 1, args.hysteresis, args.ridges) for p in predictions
                ]
            for row, masks in rows.items():
                boundaries = [mask == 1 for mask in masks]
                predicted.setdefault(row, []).extend(boundaries)
                fold[row] = scored(f"{tune}->{evaluate} {row}", boundaries, fold_truth)
        results["folds"][f"{tune}_to_{evaluate}"] = fold
    for name, masks in predicted.items():
        results[name] = scored(f"pooled {name}", masks, truth)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.rounds == 1 else f"_round{args.rounds}"
    if args.with_students is not None:
        suffix += f"_with_{args.with_students.name}"
    if args.hysteresis is not None:
        suffix += "_ridge_hysteresis" if args.ridges else "_hysteresis"
    (args.out / f"results{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
