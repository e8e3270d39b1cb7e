"""Learning curves on the held-out UHCS-3 groups: accuracy vs labelled images per class, probe and LP-FT.

Reads what `benchmarks/uhcs3_probe.py` (benchmarks/runs/probe/results.csv, and results_d4.csv from its
``--views d4 --tag _d4`` run) and `benchmarks/uhcs3_lpft.py` (benchmarks/runs/lpft/points.jsonl) measured and
draws mean ± std over draws/seeds per point (EfficientNet-Lite0 throughout):

    python benchmarks/uhcs3_held_out_figure.py   # writes benchmarks/uhcs3_held_out_curve.png
"""

import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
TRAIN_IMAGES = 382  # "all": every training image, about 127 per class


def curves() -> dict[str, dict[float, list[float]]]:
    """``label -> images per class -> held-out accuracies``."""
    found: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name in ("results.csv", "results_d4.csv"):
        if not (RUNS / "probe" / name).is_file():
            continue
        with (RUNS / "probe" / name).open() as handle:
            for row in csv.DictReader(handle):
                if row["C_mode"] == "1.0" and row["backbone"] == "lite0":
                    views = " + D4 views" if row.get("views", "identity") == "d4" else ""
                    size = TRAIN_IMAGES / 3 if row["per_class"] == "all" else float(row["per_class"])
                    found[f"linear probe{views}, {row['image_size']} px"][size].append(float(row["held_out_acc"]))
    names = {"probe": "linear probe", "lpft": "LP-FT", "exercise": "staged recipe"}
    for line in (RUNS / "lpft" / "points.jsonl").read_text().splitlines():
        point = json.loads(line)
        if point["recipe"] in names:
            size = TRAIN_IMAGES / 3 if point["per_class"] == "all" else float(point["per_class"])
            found[f"{names[point['recipe']]}, {point['image_size']} px"][size].append(float(point["held_out_acc"]))
    return found


def main() -> None:
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, points in sorted(curves().items()):
        sizes = sorted(points)
        means = [float(np.mean(points[s])) for s in sizes]
        stds = [float(np.std(points[s], ddof=1)) if len(points[s]) > 1 else 0.0 for s in sizes]
        axes.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=label)
    axes.set_xscale("log")
    axes.set_xticks([5, 10, TRAIN_IMAGES / 3], ["5", "10", "all (~127)"])
    axes.set_xlabel("labelled training images per class")
    axes.set_ylabel("accuracy on 96 held-out micrographs")
    axes.set_title("UHCS-3, held-out groups (mean ± std over draws/seeds)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(HERE / "uhcs3_held_out_curve.png", dpi=120)


if __name__ == "__main__":
    main()
