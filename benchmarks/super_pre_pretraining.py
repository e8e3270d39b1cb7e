"""Does synthetic pre-pretraining pay with 1 and 2 real training images? Superalloy, 3 seeds, paired inits.

Every point fine-tunes the EfficientNet-Lite0 U-Net of `configs/segmentation/superalloy_imagenet.yaml`, as
shipped except for the data and the start, with the same seed from each of three starts (``--inits``):

- ``imagenet``: ImageNet encoder weights, fresh decoder and head (the config as shipped);
- ``synthetic``: the encoder of a synthetic pre-training run (`smalldata export-encoder`), fresh decoder and head;
- ``network``: the whole synthetic segmenter, encoder, decoder and head (``init_weights``).

Scored on the Super1/Super3 test images (group spot2), which no decision here touches: every setting below was
fixed before the first score, except ``--lr`` (a gentler fine-tune for every start) and ``--keep_bn`` (the
pretrained BatchNorm statistics kept, for every start), both added after the shipped fine-tune's scores were seen,
and ``--mix_in`` (16 fresh synthetic precipitate images mixed into every epoch of the fine-tune, training only),
added last.

- 1 image: the upstream one-shot split Super3 (its single training image), seeds 0-2.
- 2 or 5 images (``--images 2,5``): training images of different specimen groups drawn from the Super1
  training pool (draw = seed, 0-2), validated on Super1's validation images.

Each training image gives 16 random crops per epoch (as the one-shot row of benchmarks/sim_to_real.sh). The
synthetic encoder and network come from `bash benchmarks/super1_adapted.sh` (its `adabn_only` run: the shipped
synthetic pre-training of `synthetic_pretrain_precipitates.yaml`, then AdaBN on the unlabelled Super1 training
images; no real label is used). Its ``adabn_frozen_encoder`` run (the ImageNet encoder frozen during synthetic
training, so only the decoder and head learn from synthetic labels) is another start for ``--inits network``
through ``--synthetic_checkpoint``, and so is the student of ``super1_distil.py`` (the ``adabn_only`` network
distilled on its own masks of the unlabelled Super1 training images; still no real label), whose encoder
``--inits synthetic`` exports from the same ``--synthetic_checkpoint``.

    python benchmarks/super_pre_pretraining.py --root ../shared/data/superalloy [--inits imagenet,network] [--lr 2e-4]
        [--keep_bn --out benchmarks/runs/pre_pretraining_keep_bn] [--mix_in]

Results go to benchmarks/runs/pre_pretraining/ (`points.jsonl`, one line per finished fit; a rerun skips them, so
an interrupted run resumes) and the table is printed.
"""

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from smalldata_pl.datasets.folder import read_manifest
from smalldata_pl.evaluation.summary import final_metrics
from smalldata_pl.io.tables import write_csv

CONFIG = "configs/segmentation/superalloy_imagenet.yaml"
SYNTHETIC = Path("benchmarks/runs/super1_adapted/adabn_only/version_0/checkpoints/adabn.ckpt")
CROPS_PER_IMAGE = 16
METRICS = ("test/miou", "test/iou_matrix", "test/iou_secondary", "test/iou_tertiary")
INITS = ("imagenet", "synthetic", "network")
# The shipped fine-tune with the pretrained BatchNorm statistics kept: every layer trains from the first epoch at
# the config's LR; only a fresh decoder's BatchNorm learns statistics.
KEEP_BN = "configs/overlays/keep_pretrained_bn.yaml"
# Fresh synthetic precipitates mixed into every fine-tune epoch beside the real crops (training only).
MIX_IN = "configs/overlays/mix_in_synthetic_precipitates.yaml"


def split_manifest(root: Path, out: Path, images: int, seed: int) -> tuple[Path, str]:
    """A manifest for one point and the name of its split (rows tagged ``<split>:train|val|test``)."""
    if images == 1:
        return root / "manifest.csv", "Super3"  # the upstream one-shot split, as published
    rows = read_manifest(root / "manifest.csv", required=("image", "mask", "group", "official_splits"))

    def tagged(tag: str) -> list[dict]:
        return [r for r in rows if tag in r["official_splits"].split(";")]

    pool = tagged("Super1:train")
    groups = sorted({r["group"] for r in pool})
    rng = np.random.default_rng(seed)
    chosen_groups = rng.choice(groups, size=images, replace=False)
    # One image of each drawn group, so the two never come from one specimen.
    chosen = []
    for group in chosen_groups:
        members = sorted((r for r in pool if r["group"] == group), key=lambda r: r["image"])
        chosen.append(members[rng.integers(len(members))])
    name = f"Draw{images}x{seed}"
    parts = {"train": chosen, "val": tagged("Super1:val"), "test": tagged("Super1:test")}
    written = [
        {"image": str(root / r["image"]), "mask": str(root / r["mask"]), "group": r["group"],
         "official_splits": f"{name}:{part}"}
        for part, members in parts.items()
        for r in members
    ]  # fmt: skip
    manifest = write_csv(out / f"{name}.csv", written, ["image", "mask", "group", "official_splits"])
    return manifest, name


def test_scalars(run_dir: Path) -> dict[str, float]:
    """The last value of each of METRICS that the test run logged."""
    return {m: v for m, v in final_metrics(run_dir, prefix="test/").items() if m in METRICS}


def point_options(
    root: Path,
    out: Path,
    images: int,
    seed: int,
    init: str,
    encoder: Path,
    network: Path,
    max_epochs: int,
    lr: float | None = None,
    keep_bn: bool = False,
    mix_in: bool = False,
) -> tuple[list[str], str, str]:
    """The `smalldata` options of one point, its run name and its split (also used by `super_weight_averaging.py`)."""
    manifest, split = split_manifest(root, out, images, seed)
    name = f"{init}_{images}img_seed{seed}"
    options = [
        "-c", CONFIG,
        f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
        f"--data.init_args.root={root}", f"--data.init_args.manifest={manifest}",
        f"--data.init_args.official_split={split}", f"--data.init_args.crops_per_image={CROPS_PER_IMAGE}",
        f"--trainer.max_epochs={max_epochs}", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={out}",
    ]  # fmt: skip
    if lr is not None:
        options.append(f"--model.init_args.optimizer.init_args.lr={lr}")
    if keep_bn:
        options += ["-c", KEEP_BN]
    if mix_in:
        options += ["-c", MIX_IN]
    if init == "synthetic":
        options.append(f"--model.init_args.pretrained={encoder}")
    elif init == "network":
        options.append(f"--model.init_args.init_weights={network}")
    return options, name, split


def run_point(out: Path, options: list[str], name: str) -> dict:
    """Fit and test one point with its ``point_options``; returns its scores and fit time."""
    start = time.perf_counter()
    with (out / f"{name}.log").open("w") as log:
        subprocess.run(
            ["smalldata", "fit", *options, f"--trainer.logger.init_args.name={name}"],
            check=True,
            stdout=log,
            stderr=log,
        )
        fitted = time.perf_counter() - start
        checkpoint = out / name / "version_0" / "checkpoints" / "last.ckpt"
        subprocess.run(
            ["smalldata", "test", *options, f"--trainer.logger.init_args.name={name}_test", f"--ckpt_path={checkpoint}"],
            check=True, stdout=log, stderr=log,
        )  # fmt: skip
    return {
        **test_scalars(out / f"{name}_test"),
        # The last epoch's validation score (the tested checkpoint's): what a user could choose a fine-tune by.
        "val/miou": final_metrics(out / name, prefix="val/")["val/miou"],
        "fit_seconds": round(fitted, 1),
    }


def summary(points: list[dict]) -> str:
    lines = [
        "| real training images | start | ImageNet mIoU | its mIoU | paired difference (start − ImageNet) |",
        "|---|---|---|---|---|",
    ]
    for images in sorted({p["images"] for p in points}):
        by_init = {
            init: {p["seed"]: p["test/miou"] for p in points if p["images"] == images and p["init"] == init}
            for init in INITS
        }
        for init in INITS[1:]:
            seeds = sorted(set(by_init["imagenet"]) & set(by_init[init]))
            if not seeds:
                continue
            a = np.array([by_init["imagenet"][s] for s in seeds])
            b = np.array([by_init[init][s] for s in seeds])
            spread = (
                (lambda x: f"{x.mean():.3f} ± {x.std(ddof=1):.3f}") if len(seeds) > 1 else (lambda x: f"{x.mean():.3f}")
            )
            per_seed = " / ".join(f"{d:+.3f}" for d in b - a)
            lines.append(
                f"| {images} ({len(seeds)} seeds) | {init} | {spread(a)} | {spread(b)} | {spread(b - a)} ({per_seed}) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/superalloy"))
    parser.add_argument("--synthetic_checkpoint", type=Path, default=SYNTHETIC)
    parser.add_argument("--images", default="1,2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--inits", default=",".join(INITS), help=f"starts to fine-tune from, of {INITS}")
    parser.add_argument("--max_epochs", type=int, default=30, help="the shipped config's 30; fewer only to try it")
    parser.add_argument("--lr", type=float, help="fine-tune learning rate for every start (default: the config's)")
    parser.add_argument(
        "--keep_bn", action="store_true", help="keep pretrained BatchNorm statistics during the fine-tune (every start)"
    )
    parser.add_argument(
        "--mix_in", action="store_true", help=f"mix fresh synthetic precipitates into every fine-tune ({MIX_IN})"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/pre_pretraining"))
    args = parser.parse_args()
    root, out = args.root.resolve(), args.out
    out.mkdir(parents=True, exist_ok=True)
    synthetic_starts = {"synthetic", "network"} & set(args.inits.split(","))
    if synthetic_starts and not args.synthetic_checkpoint.is_file():
        raise SystemExit(f"{args.synthetic_checkpoint} is missing: run `bash benchmarks/super1_adapted.sh` first")
    encoder = out / "synthetic_encoder.pth"
    if "synthetic" in synthetic_starts and not encoder.is_file():
        subprocess.run(
            ["smalldata", "export-encoder", str(args.synthetic_checkpoint), "--out", str(encoder)], check=True
        )
    done_file = out / "points.jsonl"
    done = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.is_file() else []
    finished = {(p["init"], p["images"], p["seed"]) for p in done}
    for images in (int(n) for n in args.images.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            for init in args.inits.split(","):
                if (init, images, seed) in finished:
                    continue
                options, name, split = point_options(
                    root, out, images, seed, init, encoder, args.synthetic_checkpoint, args.max_epochs, args.lr,
                    args.keep_bn, args.mix_in,
                )  # fmt: skip
                point = {"init": init, "images": images, "seed": seed, "split": split}
                point |= run_point(out, options, name)
                point["machine"] = platform.processor() or platform.machine()
                print(point, flush=True)
                with done_file.open("a") as handle:
                    handle.write(json.dumps(point) + "\n")
                done.append(point)
    table = summary(done)
    (out / "summary.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
