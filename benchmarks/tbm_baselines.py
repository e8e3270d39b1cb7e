"""Classical baselines on the real TBM grain-boundary tiles, scored like the segmenter's boundary F1 (skeletons, 3 px).

    python benchmarks/tbm_baselines.py [--root ../shared/data/grain_boundaries_tbm] [--sigma 1 1.5 2]

Three thresholds, no learning: ``otsu`` marks pixels darker than the Otsu threshold of the Gaussian-blurred grey
image as boundary (etched grooves are dark); ``sobel`` marks pixels whose Sobel gradient magnitude of the blurred
grey image exceeds its own Otsu threshold; ``colour_sobel`` does the same with the gradient magnitudes of the
three colour channels added in quadrature (``edge_strength`` >= 0.5, the map ``apply --edge_weight`` mixes in), so
neighbouring grains etched to one brightness but different colours are told apart. ``score_boundaries`` skeletonises both the
prediction and the hand annotation. Writes ``benchmarks/runs/tbm_baselines/results.json`` and prints a table,
pooled over all tiles and per micrograph (group).
"""

import argparse
import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import rgb2gray
from skimage.filters import gaussian, sobel, threshold_otsu

from smalldata_pl.inference.boundary_maps import edge_strength
from smalldata_pl.inference.metallography import score_boundaries

BASELINES: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "otsu": lambda rgb, sigma: (grey := gaussian(rgb2gray(rgb), sigma)) < threshold_otsu(grey),
    "sobel": lambda rgb, sigma: (edges := sobel(gaussian(rgb2gray(rgb), sigma))) > threshold_otsu(edges),
    "colour_sobel": lambda rgb, sigma: edge_strength(rgb, sigma) >= 0.5,
}


def read_tiles(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(group, RGB image, boundary mask)`` of every row of the manifest."""
    tiles = []
    with (root / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            rgb = np.asarray(Image.open(root / row["image"]).convert("RGB"), dtype=np.float64) / 255.0
            mask = np.asarray(Image.open(root / row["mask"])) == 1
            tiles.append((row["group"], rgb, mask))
    return tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/grain_boundaries_tbm"))
    parser.add_argument("--sigma", type=float, nargs="+", default=[1.0, 1.5, 2.0], help="Gaussian blur(s) in px")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/tbm_baselines"))
    args = parser.parse_args()
    tiles = read_tiles(args.root)
    truths = [mask for _, _, mask in tiles]
    groups = sorted({group for group, _, _ in tiles})
    results: dict[str, object] = {"tiles": len(tiles), "groups": len(groups), "tolerance_px": 3, "line_spacing": 8}
    print(f"{len(tiles)} tiles from {len(groups)} micrographs")
    print(
        f"{'baseline':20s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'median err':>10s}   per-group F1 (median, IQR)"
    )
    for sigma in args.sigma:
        for name, threshold in BASELINES.items():
            start = time.perf_counter()
            predictions = [threshold(rgb, sigma) for _, rgb, _ in tiles]
            pooled = score_boundaries(predictions, truths)
            per_group = {}
            for group in groups:
                index = [i for i, (g, _, _) in enumerate(tiles) if g == group]
                score = score_boundaries([predictions[i] for i in index], [truths[i] for i in index])
                per_group[group] = {"f1": score.f1, "median_intercept_error": score.median_intercept_error}
            f1s = np.array([g["f1"] for g in per_group.values()])
            q1, median, q3 = np.percentile(f1s, [25, 50, 75])
            key = f"{name}_sigma{sigma:g}"
            results[key] = {
                **pooled.as_dict(),
                "per_group": per_group,
                "per_group_f1_quartiles": [q1, median, q3],
                "seconds": time.perf_counter() - start,
            }
            print(
                f"{key:20s} {pooled.precision:9.3f} {pooled.recall:7.3f} {pooled.f1:6.3f} "
                f"{pooled.median_intercept_error:10.1%}   {median:.3f} ({q1:.3f}-{q3:.3f})"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
