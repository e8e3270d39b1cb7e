"""Grey grain-boundary segmenters on rendered grey specimens of two etches, against the classical thresholds.

    python benchmarks/grey_specimens.py CHECKPOINT [CHECKPOINT ...] [--images 24] [--size 256] [--tta]
        [--scales 0.75 1.0] [--out benchmarks/runs/grey_specimens.json]

The real grain-boundary tiles in the repository are colour-etched; many metallographers work from grey
micrographs instead, of two kinds: an orientation (grain-contrast) etch, where grains differ in grey and the
boundary is a step, and a boundary etch (nital on ferrite, oxalic on austenite, the look of the ASTM E112 charts),
where grains are nearly one grey and the boundary is a dark groove that a plain Otsu threshold already finds.
No labelled real micrographs of either are in the repository, so this benchmark renders them with known
boundaries: the ``realistic`` preset (grain contrast), ``boundary_etched`` (grooves), the same with ten times
the scratches and etch pits and five times the pores (the preparation flaws a boundary-etched steel shows), and
with faint, shallow grooves (a light etch). Every checkpoint segments every tile as ``smalldata apply`` does
(``load_predictor``: the checkpoint's own preprocessing, whole tiles at their own size, argmax, nothing tuned),
beside two thresholds with no learning: grey below its Otsu threshold (``otsu``: dark grooves) and the Sobel
magnitude above its own Otsu threshold (``sobel``), both after a Gaussian blur of 1.5 px. Scores come from
:func:`score_boundaries` (skeletons, 3 px, Heyn intercepts, pooled over the tiles). A network trained on a style
sees its own renders better than any real specimen: the table says which looks a network has learnt at all, not
how well it transfers to real micrographs.
"""

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_fusion_textured import specimen_tiles
from skimage.filters import gaussian, sobel, threshold_otsu

from smalldata_pl.inference.metallography import score_boundaries
from smalldata_pl.inference.predictor import load_predictor

SPECIMENS: dict[str, dict[str, Any]] = {
    "realistic": {"preset": "realistic"},
    "boundary_etched": {"preset": "boundary_etched"},
    "boundary_etched_flawed": {"preset": "boundary_etched", "scratches": 40.0, "etch_pits": 400.0, "pores": 15.0},
    "boundary_etched_light": {"preset": "boundary_etched", "groove_width": [0.6, 1.5], "groove_depth": [0.05, 0.3]},
}

# tbm_baselines' thresholds take RGB; through rgb2gray a grey tile rounds differently (1 of 192 masks changes).
BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "otsu": lambda grey: (blurred := gaussian(grey, 1.5)) < threshold_otsu(blurred),
    "sobel": lambda grey: (edges := sobel(gaussian(grey, 1.5))) > threshold_otsu(edges),
}


def scored(predicted: list[np.ndarray], truth: list[np.ndarray], seconds: float) -> dict[str, Any]:
    return {**score_boundaries(predicted, truth).as_dict(), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="grey boundary segmenters (boundary_class 1)")
    parser.add_argument("--images", type=int, default=24, help="tiles per specimen")
    parser.add_argument("--size", type=int, default=256, help="tile side in px (the TBM tiles' size)")
    parser.add_argument("--seed", type=int, default=2000, help="seed of the first tile")
    parser.add_argument("--tta", action="store_true", help="apply's 8-view test-time augmentation")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0], help="apply --scales: zooms averaged")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/grey_specimens.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictors = {str(path): load_predictor(path, tta=args.tta, scales=args.scales) for path in args.checkpoints}
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "specimens": {}}
    print(f"{'specimen':24s} {'method':40s} {'F1':>6s} {'P':>6s} {'R':>6s} {'err':>7s}")
    for name in SPECIMENS:
        tiles = specimen_tiles(name, args.images, args.size, args.seed, SPECIMENS)
        truth = [tile.mask for tile in tiles]
        rows: dict[str, dict[str, Any]] = {}
        for method, threshold in BASELINES.items():
            start = time.perf_counter()
            rows[method] = scored([threshold(tile.image) for tile in tiles], truth, time.perf_counter() - start)
        for path, predictor in predictors.items():
            start = time.perf_counter()
            masks = [predictor.predict(tile.image).mask == 1 for tile in tiles]
            rows[path] = scored(masks, truth, time.perf_counter() - start)
        results["specimens"][name] = {"style": SPECIMENS[name], "methods": rows}
        for method, row in rows.items():
            print(
                f"{name:24s} {method[-40:]:40s} {row['f1']:6.3f} {row['precision']:6.3f} {row['recall']:6.3f} "
                f"{row['median_intercept_error']:7.1%}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
