"""Realism score of each grain style and imaging preset against the real colour-etched TBM tiles.

Run: ``.venv/bin/python benchmarks/realism_scores.py [--size 128] [--crops 1]``; about 2-3 minutes on two cores.
Each setting renders as many images as there are real crops; every image is scored twice, grey (luma, what an
``in_chans: 1`` segmenter sees) and colour. Held-out balanced accuracy of a synthetic-vs-real classifier under
group 5-fold over the TBM specimens: 0.5 = indistinguishable, 1.0 = told apart every time.
Writes ``benchmarks/runs/realism/scores.json`` and prints a table.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from skimage.transform import rescale

from smalldata_pl.evaluation.realism import real_crops, real_images, realism_score, stack_features, synthetic_images
from smalldata_pl.generators.renderers import GrainBoundaryRenderer
from smalldata_pl.generators.styles import resolve_style
from smalldata_pl.transforms.pipeline import LUMA

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "grain_boundaries_tbm"
# (style, imaging, zoom): zoom 2 renders at half the size and enlarges twice, so grains are twice as large (the
# TBM grains are larger than the built-in morphologies at the same pixel size: a crude stand-in for scale matching).
SETTINGS = [
    ("flat", "clean", 1),
    ("flat", "optical", 1),
    ("flat", "sem_se", 1),
    ("realistic", "clean", 1),
    ("realistic", "optical", 1),
    ("realistic", "sem_se", 1),
    ("tint_etched", "optical", 1),
    ("realistic", "optical", 2),
    ("tint_etched", "optical", 2),
]


def features(images: list[np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    """Texture features of colour images, grey (luma) and colour."""
    return {1: stack_features([i @ np.asarray(LUMA, np.float32) for i in images]), 3: stack_features(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--crops", type=int, default=1, help="random crops per real tile")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/realism"))
    args = parser.parse_args()
    start = time.perf_counter()
    crops, groups = real_crops(real_images(REAL), args.size, args.crops, channels=3, seed=0)
    real = features(crops)
    rows = []
    for style, imaging, zoom in SETTINGS:
        renderer = GrainBoundaryRenderer(args.size // zoom, imaging, 1, resolve_style(style))
        images = synthetic_images(renderer, len(crops), channels=3, seed=0)
        if zoom > 1:
            images = [np.clip(rescale(i, zoom, order=1, channel_axis=2), 0, 1).astype(np.float32) for i in images]
        synthetic = features(images)
        for channels in (1, 3):
            score = realism_score(real[channels], groups, synthetic[channels], folds=5, bootstrap=1000, seed=0)
            rows.append({"style": style, "imaging": imaging, "zoom": zoom, "channels": channels, **score})
            families = " ".join(f"{k} {v:.2f}" for k, v in score["families"].items())
            mode = "grey" if channels == 1 else "colour"
            print(f"{style:<12} {imaging:<8} x{zoom} {mode:<6} {score['accuracy']:.3f} {families}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "real": str(REAL),
        "size": args.size,
        "crops_per_image": args.crops,
        "real_crops": len(crops),
        "real_groups": len(set(groups)),
        "seconds": round(time.perf_counter() - start, 1),
        "scores": rows,
    }
    (args.out / "scores.json").write_text(json.dumps(report, indent=2))
    names = list(rows[0]["families"])
    print(f"\n| style | imaging | zoom | channels | all [95 % CI] | {' | '.join(names)} |")
    print("|---" * (5 + len(names)) + "|")
    for r in rows:
        cells = " | ".join(f"{r['families'][n]:.2f}" for n in names)
        interval = f"{r['accuracy']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"
        print(f"| {r['style']} | {r['imaging']} | {r['zoom']} | {r['channels']} | {interval} | {cells} |")
    print(f"\n{len(crops)} real crops of {args.size} px in {len(set(groups))} groups; {report['seconds']} s")


if __name__ == "__main__":
    main()
