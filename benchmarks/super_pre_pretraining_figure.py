"""Figure for the pre-pretraining report: Super1 test mIoU per seed with 1 and 2 real images, ImageNet against the
synthetic starts from the distilled student, every fine-tune with the pretrained BatchNorm statistics kept.

Reads what `benchmarks/super_pre_pretraining.py --keep_bn` (``points.jsonl``: ``imagenet``, ``network`` for the whole
student, ``synthetic`` for its encoder with a fresh decoder) and `benchmarks/super_weight_averaging.py`
(``averaged.jsonl``) wrote into one run folder. The averaged student is drawn at the alpha that the validation images
chose per budget, the rule of its run, so no test score picks anything here:

    python benchmarks/super_pre_pretraining_figure.py [--run benchmarks/runs/pre_pretraining_student_no_adabn]
        # writes benchmarks/super_pre_pretraining.png

Each seed (one image: Super3, seeds 0-2) or draw (two images from the Super1 pool, draws 0-2) is one marker; a line
joins the starts of one seed, so a paired difference reads as a slope.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

HERE = Path(__file__).resolve().parent
STARTS = {
    "imagenet": "ImageNet",
    "network": "student,\nfine-tuned",
    "averaged": "student,\naveraged",
    "synthetic": "student's encoder,\nfresh decoder",
}


def read_points(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chosen_alpha(averaged: list[dict], images: int) -> float:
    """The alpha of the best mean validation mIoU over the budget's seeds (the averaging run's rule)."""
    by_alpha: dict[float, list[float]] = defaultdict(list)
    for point in averaged:
        if point["images"] == images:
            by_alpha[point["alpha"]].append(point["val/miou"])
    return max(by_alpha, key=lambda alpha: float(np.mean(by_alpha[alpha])))


def scores(run: Path) -> tuple[dict[int, dict[str, dict[int, float]]], dict[int, float]]:
    """``images -> start -> seed -> test mIoU`` for the starts of :data:`STARTS` found in ``run``, and the chosen
    alpha of each budget the ``averaged`` start was drawn at."""
    found: dict[int, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for point in read_points(run / "points.jsonl"):
        found[point["images"]][point["init"]][point["seed"]] = point["test/miou"]
    alphas: dict[int, float] = {}
    averaged_file = run / "averaged.jsonl"
    if averaged_file.is_file():
        averaged = read_points(averaged_file)
        for images in {p["images"] for p in averaged}:
            alphas[images] = chosen_alpha(averaged, images)
        for point in averaged:
            if point["alpha"] == alphas[point["images"]]:
                found[point["images"]]["averaged"][point["seed"]] = point["test/miou"]
    return found, alphas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=HERE / "runs" / "pre_pretraining_student_no_adabn")
    parser.add_argument("--out", type=Path, default=HERE / "super_pre_pretraining.png")
    args = parser.parse_args()
    found, alphas = scores(args.run)
    budgets = sorted(found)
    figure, all_axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 4.2), squeeze=False)
    for axes, images in zip(all_axes[0], budgets, strict=True):
        order = [start for start in STARTS if start in found[images]]
        seeds = sorted(set.intersection(*(set(found[images][s]) for s in order)))
        for seed in seeds:
            axes.plot(range(len(order)), [found[images][s][seed] for s in order], color="0.75", zorder=1)
        for x, start in enumerate(order):
            values = [found[images][start][seed] for seed in seeds]
            axes.scatter([x] * len(values), values, zorder=2)
            axes.hlines(np.mean(values), x - 0.2, x + 0.2, color="black", zorder=3)
        imagenet = float(np.mean([found[images]["imagenet"][seed] for seed in seeds]))
        axes.axhline(imagenet, color="tab:blue", linestyle=":", linewidth=1, zorder=0)
        labels = [STARTS[s] + (f" (alpha {alphas[images]:g})" if s == "averaged" else "") for s in order]
        axes.set_xticks(range(len(order)), labels, fontsize=8)
        axes.set_title(f"{images} real training image{'s' if images > 1 else ''} ({len(seeds)} seeds)")
        axes.set_ylabel("test mIoU (Super1 spot2)")
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle("Superalloy pre-pretraining: starts paired by seed (bar: mean; dotted: ImageNet mean)", fontsize=10)
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
