"""Does averaging a fine-tuned network's weights with its synthetic start make pre-pretraining pay? Superalloy.

Weight-space ensembling (WiSE-FT, Wortsman et al. 2022): a network fine-tuned from a start that already solves the
task is averaged with that start, weight by weight, ``(1 - alpha) * start + alpha * fine-tuned``. Averaging keeps
what the start knew and the single real image would make the fine-tune forget. It needs a start that is already a
whole segmenter: the synthetic network or the distilled student, not ImageNet's encoder with a fresh decoder.

This reads a finished ``super_pre_pretraining.py --inits network --keep_bn`` run (``--run``, the same
``--synthetic_checkpoint``): with the BatchNorm statistics kept, start and fine-tune share them exactly, so only the
learnt weights are averaged (a run whose statistics moved is refused; the framework's `average_checkpoints`, which
`smalldata average-weights` runs). For each of its fits and each ``alpha`` the
averaged network is scored as the run scored its fits: `smalldata validate` on the Super1 validation images (spot1)
and `smalldata test` on the test images (spot2). ``alpha`` is chosen per budget by the mean validation mIoU, and the
chosen one is compared on the test images with the ImageNet fits of ``--imagenet_points`` (a ``points.jsonl`` of the
same fine-tune from ImageNet; its fresh decoder has no start to average with).

    python benchmarks/super_weight_averaging.py --run benchmarks/runs/pre_pretraining_student_no_adabn \\
        --synthetic_checkpoint benchmarks/runs/super1_distil/seed0/student/student_before_adabn.ckpt \\
        --imagenet_points benchmarks/runs/pre_pretraining_student_no_adabn/points.jsonl

Writes ``averaged.jsonl`` (one line per scored network; a rerun skips them) and ``averaged.md`` under ``--run``.
"""

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
from super_pre_pretraining import point_options, test_scalars

from smalldata_pl.evaluation.summary import final_metrics
from smalldata_pl.models.weight_averaging import average_checkpoints


def score(options: list[str], checkpoint: Path, out: Path, name: str) -> dict[str, float]:
    """Validation and test mIoU of ``checkpoint`` under the point's options (logs go to ``out / name``)."""
    scores = {}
    for command, suffix in (("validate", "val"), ("test", "test")):
        with (out / f"{name}_{suffix}.log").open("w") as log:
            subprocess.run(
                ["smalldata", command, *options, f"--trainer.logger.init_args.save_dir={out}",
                 f"--trainer.logger.init_args.name={name}_{suffix}", f"--ckpt_path={checkpoint}"],
                check=True, stdout=log, stderr=log,
            )  # fmt: skip
    scores["val/miou"] = final_metrics(out / f"{name}_val", prefix="val/")["val/miou"]
    scores |= test_scalars(out / f"{name}_test")
    return scores


def table(points: list[dict], imagenet: list[dict]) -> str:
    """Per budget: each alpha's validation mean and test scores, the chosen alpha's paired difference to ImageNet."""
    lines = [
        "| images | alpha | validation mIoU, mean | test mIoU per seed | test mean ± std | paired difference to ImageNet |",
        "|---|---|---|---|---|---|",
    ]
    for images in sorted({p["images"] for p in points}):
        reference = {p["seed"]: p["test/miou"] for p in imagenet if p["images"] == images}
        by_alpha: dict[float, list[dict]] = {}
        for p in points:
            if p["images"] == images:
                by_alpha.setdefault(p["alpha"], []).append(p)
        chosen = max(by_alpha, key=lambda a: np.mean([p["val/miou"] for p in by_alpha[a]]))
        for alpha, rows in sorted(by_alpha.items()):
            rows = sorted(rows, key=lambda p: p["seed"])
            test = np.array([p["test/miou"] for p in rows])
            difference = ""
            if alpha == chosen and all(p["seed"] in reference for p in rows):
                paired = test - np.array([reference[p["seed"]] for p in rows])
                difference = (
                    f"{paired.mean():+.3f} ± {paired.std(ddof=1):.3f} (" + " / ".join(f"{d:+.3f}" for d in paired) + ")"
                )
            mark = " (chosen)" if alpha == chosen else ""
            lines.append(
                f"| {images} | {alpha:g}{mark} | {np.mean([p['val/miou'] for p in rows]):.3f} | "
                f"{' / '.join(f'{t:.3f}' for t in test)} | {test.mean():.3f} ± {test.std(ddof=1):.3f} | {difference} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/superalloy"))
    parser.add_argument("--run", type=Path, required=True, help="a super_pre_pretraining.py --keep_bn run's --out")
    parser.add_argument("--synthetic_checkpoint", type=Path, required=True, help="the start that run fine-tuned")
    parser.add_argument("--imagenet_points", type=Path, required=True, help="points.jsonl with the ImageNet fits")
    parser.add_argument("--alphas", default="0.25,0.5,0.75,1.0", help="weights of the fine-tune (1: the fine-tune)")
    parser.add_argument("--images", default="1,2")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    root, out = args.root.resolve(), args.run
    averaged = out / "averaged"
    averaged.mkdir(exist_ok=True)
    done_file = out / "averaged.jsonl"
    done = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.is_file() else []
    finished = {(p["images"], p["seed"], p["alpha"]) for p in done}
    for images in (int(n) for n in args.images.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            # The run's own options (keep_bn: the statistics kept, as it was fine-tuned), so the split is the same.
            options, name, split = point_options(
                root, out, images, seed, "network", Path(), args.synthetic_checkpoint, 30, keep_bn=True
            )
            tuned = out / name / "version_0" / "checkpoints" / "last.ckpt"
            for alpha in (float(a) for a in args.alphas.split(",")):
                if (images, seed, alpha) in finished:
                    continue
                checkpoint = averaged / f"{name}_alpha{alpha:g}.ckpt"
                average_checkpoints(args.synthetic_checkpoint, tuned, alpha, checkpoint)
                point = {"images": images, "seed": seed, "split": split, "alpha": alpha}
                point |= score(options, checkpoint, averaged, f"{name}_alpha{alpha:g}")
                checkpoint.unlink()  # 40 MB each; rebuilt in seconds from the two checkpoints kept
                print(point, flush=True)
                with done_file.open("a") as handle:
                    handle.write(json.dumps(point) + "\n")
                done.append(point)
    imagenet = [json.loads(line) for line in args.imagenet_points.read_text().splitlines()]
    result = table(done, [p for p in imagenet if p["init"] == "imagenet"])
    (out / "averaged.md").write_text(result + "\n")
    print(result)


if __name__ == "__main__":
    main()
