"""LP-FT against the linear probe on the held-out UHCS-3 groups: all images and 5 / 10 per class, CPU wall time.

Protocol: train on the training manifest of benchmarks/uhcs3_probe.py (every UHCS-3 image outside the
held-out groups of benchmarks/uhcs3_held_out.csv) with ``num_folds: null``, i.e. no validation and no early
stopping: the last epoch (with EMA, its averaged weights) is the model, so nothing is chosen on any score. The
model is then scored once on the 96 held-out micrographs (``test_manifest``, as ``smalldata test`` does).
Learning-curve points use the DataModule's own ``train_per_class`` / ``subsample_seed`` draws, the same subsets
uhcs3_probe.py scores the probe on.

Each point is the shipped config with only the data section swapped for the manifests (same augmentation, batch
and image size unless ``--image_size`` overrides it) and, for the one-ingredient runs, one callback changed:

- ``probe``: configs/probe_efficientnet_lite0_offline.yaml (frozen features + logistic regression);
- ``probe_views``: configs/probe_views_efficientnet_lite0_offline.yaml (the probe on every allowed D4 view, TTA);
- ``lpft``: configs/lpft_efficientnet_lite0_offline.yaml (probe head, staged unfreezing, keep_bn_eval, EMA);
- ``lpft_no_ema`` / ``lpft_bn_train``: LP-FT without EMAWeightAveraging / with BatchNorm training after unfreezing;
- ``exercise``: configs/exercise_efficientnet_lite0_offline.yaml (the old recipe, random head, no probe).

    python benchmarks/uhcs3_lpft.py --root ../shared/data/uhcs3 --image_size 224 \
        --points probe:all:0,lpft:all:0,lpft:10:0,lpft:10:1

A point is ``recipe:per_class:seed`` (``all`` = every training image); the seed is ``seed_everything`` and
either the subsample draw (5 / 10 per class) or the DataModule's shuffling and augmentation seed (all images).
Each finished point is appended to benchmarks/runs/lpft/points.jsonl, and a rerun skips the points already there;
benchmarks/runs/lpft/results.json and summary.md aggregate them. The probe's features are not cached across
points, so every point's wall time is what it costs on its own.
"""

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from smalldata_pl.cli import SmallDataCLI
from smalldata_pl.datamodules import UHCS3
from smalldata_pl.datasets.uhcs3 import UHCS3_CLASSES

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
MANIFESTS = HERE / "runs" / "probe"
OUT = HERE / "runs" / "lpft"
UHCS3_INVARIANCES = dataclasses.asdict(UHCS3.invariances)


def _callback(config: dict, name: str) -> dict:
    return next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith(name))


def _without_ema(config: dict) -> None:
    config["trainer"]["callbacks"] = [
        c for c in config["trainer"]["callbacks"] if not c["class_path"].endswith("EMAWeightAveraging")
    ]


def _bn_train(config: dict) -> None:
    _callback(config, "StagedUnfreezing")["init_args"]["keep_bn_eval"] = False


RECIPES: dict[str, tuple[str, Callable[[dict], None] | None]] = {
    "probe": ("probe_efficientnet_lite0_offline.yaml", None),
    "probe_views": ("probe_views_efficientnet_lite0_offline.yaml", None),
    "lpft": ("lpft_efficientnet_lite0_offline.yaml", None),
    "lpft_no_ema": ("lpft_efficientnet_lite0_offline.yaml", _without_ema),
    "lpft_bn_train": ("lpft_efficientnet_lite0_offline.yaml", _bn_train),
    "exercise": ("exercise_efficientnet_lite0_offline.yaml", None),
}


def point_config(recipe: str, per_class: int | None, seed: int, args: argparse.Namespace) -> dict:
    """The recipe's shipped config with the held-out protocol's data section and this point's seed."""
    name, change = RECIPES[recipe]
    config = yaml.safe_load((CONFIGS / name).read_text())
    shipped = config["data"]["init_args"]
    config["seed_everything"] = seed
    config["data"] = {
        "class_path": "smalldata_pl.datamodules.MicrographFolder",
        "init_args": {
            "root": str(Path(args.root).resolve()),
            "manifest": str(MANIFESTS / "train_manifest.csv"),
            "test_root": str(Path(args.root).resolve()),
            "test_manifest": str(MANIFESTS / "held_out_manifest.csv"),
            "class_names": list(UHCS3_CLASSES),
            "invariances": UHCS3_INVARIANCES,
            "augmentation": shipped["augmentation"],
            "num_folds": None,
            "leakage_check": "off",  # the split is by whole groups already; the check only costs time here
            "train_per_class": per_class,
            "subsample_seed": seed,
            # Shuffling and augmentation draws follow the DataModule's seed, not seed_everything; with all images
            # it is the repeat's seed. Subsample points keep seed 0: the DataModule draws subsets from it too, and
            # these must be the subsets uhcs3_probe.py scores the probe on.
            "seed": seed if per_class is None else 0,
            "image_size": args.image_size or shipped["image_size"],
            "in_chans": shipped["in_chans"],
            "batch_size": shipped["batch_size"],
            "num_workers": shipped["num_workers"],
        },
    }
    if args.max_epochs is not None and recipe != "probe":
        config["trainer"]["max_epochs"] = args.max_epochs
    config["trainer"]["logger"]["init_args"].update(save_dir=str(OUT / "logs"), name=recipe)
    config["trainer"]["enable_progress_bar"] = False
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("LinearProbe"):
            callback["init_args"]["cache"] = False  # every point pays for its own features
    if change is not None:
        change(config)
    return config


def run_point(recipe: str, per_class: int | None, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Fit one point on the training manifest and score it on the held-out manifest."""
    config = point_config(recipe, per_class, seed, args)
    path = OUT / "configs" / f"{recipe}_{per_class or 'all'}_{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cli = SmallDataCLI(args=["-c", str(path)], run=False)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_seconds = time.perf_counter() - start
    train_images = len(cli.datamodule.train_dataset)
    start = time.perf_counter()
    # The weights in memory are the model: the probe, or the last epoch (EMA: its average, swapped in at the end).
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return {
        "recipe": recipe,
        "per_class": per_class or "all",
        "seed": seed,
        "data_seed": config["data"]["init_args"]["seed"],
        "image_size": config["data"]["init_args"]["image_size"],
        "max_epochs": config["trainer"]["max_epochs"],
        "train_images": train_images,
        "held_out_images": len(cli.datamodule.test_dataloader().dataset),
        "held_out_acc": round(float(metrics["test/acc"]), 4),
        "held_out_f1": round(float(metrics["test/f1"]), 4),
        "fit_seconds": round(fit_seconds, 1),
        "test_seconds": round(time.perf_counter() - start, 1),
        "config": str(path.relative_to(HERE.parent)),
    }


def summarise(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """Mean ± std (sample) of held-out accuracy and mean fit seconds per recipe, size and per-class count."""
    table: dict[str, Any] = {}
    for row in rows:
        key = f"{row['recipe']}@{row['image_size']}"
        table.setdefault(key, {}).setdefault(str(row["per_class"]), []).append(row)
    summary: dict[str, Any] = {}
    lines = [
        "| recipe | px | 5 / class | 10 / class | all | s per point, fit + test (5 / 10 / all) |",
        "|---|---|---|---|---|---|",
    ]
    for key, sizes in sorted(table.items()):
        summary[key] = {}
        cells, seconds = [], []
        for size in ("5", "10", "all"):
            points = sizes.get(size, [])
            if not points:
                cells.append("")
                seconds.append("")
                continue
            accs = [p["held_out_acc"] for p in points]
            std = statistics.stdev(accs) if len(accs) > 1 else None
            mean_s = statistics.mean(p["fit_seconds"] + p["test_seconds"] for p in points)
            summary[key][size] = {"mean": statistics.mean(accs), "std": std, "n": len(accs), "seconds": mean_s}
            cells.append(
                f"{statistics.mean(accs):.3f}" + (f" ± {std:.3f}" if std is not None else "") + f" (n={len(accs)})"
            )
            seconds.append(f"{mean_s:.0f}")
        recipe, size_px = key.split("@")
        lines.append(f"| {recipe} | {size_px} | " + " | ".join(cells) + " | " + " / ".join(seconds) + " |")
    return summary, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/uhcs3")
    parser.add_argument("--image_size", type=int, default=224, help="0 keeps each config's own size")
    parser.add_argument("--max_epochs", type=int, default=None, help="override (smoke tests only)")
    parser.add_argument("--points", required=True, help="comma-separated recipe:per_class:seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the output files (smoke tests)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (MANIFESTS / "train_manifest.csv").is_file():
        raise SystemExit(f"{MANIFESTS / 'train_manifest.csv'} missing: run benchmarks/uhcs3_probe.py first")
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"points{args.tag}.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    for spec in args.points.split(","):
        recipe, count, seed = spec.split(":")
        per_class = None if count == "all" else int(count)
        size = args.image_size or None
        if any(
            (r["recipe"], str(r["per_class"]), r["seed"]) == (recipe, count, int(seed))
            and (size is None or r["image_size"] == size)
            for r in done
        ):
            print(f"skip {spec}: already in {log}")
            continue
        row = run_point(recipe, per_class, int(seed), args)
        print(json.dumps(row), flush=True)
        with log.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        done.append(row)
    summary, table = summarise(done)
    (OUT / f"results{args.tag}.json").write_text(json.dumps({"points": done, "summary": summary}, indent=1))
    (OUT / f"summary{args.tag}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
