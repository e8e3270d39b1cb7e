"""Figure for the TBM sim-to-real report: held-out real tiles, their truth, Sobel/Otsu and two trained U-Nets.

    python benchmarks/tbm_figure.py [--run benchmarks/runs/tbm_lite0_20]
        (after tbm_sim_to_real.py --backbone efficientnet_lite0 ... --configs tint_etched real_labels --out RUN)

The tiles are the first tile of the first three micrographs (sorted by group name) that the run's fold A scored:
picked by name, not by score. Each model predicts as it was scored, at the inference scale, threshold and
fragment removal that fold A chose on half A's labels (with test-time augmentation if the run used it):
``tint_etched`` (synthetic labels only) and ``real_labels`` (trained on half A's real masks). Every panel shows
the one-pixel skeleton that the boundary F1 scores.
"""

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
from skimage.morphology import skeletonize

matplotlib.use("agg")
import matplotlib.pyplot as plt
from tbm_baselines import BASELINES
from tbm_sim_to_real import Decision, Tile, masks, probabilities, read_tiles

from smalldata_pl.inference.metallography import score_boundaries
from smalldata_pl.models.checkpoint_files import paths_allowed
from smalldata_pl.tasks import MicrographSegmenter

MODELS = {"synthetic labels only": "tint_etched", "real labels (other half)": "real_labels"}


def predicted(run: Path, config: str, tiles: list[Tile], tta: bool) -> list[np.ndarray]:
    fold = json.loads((run / f"{config}.json").read_text())["folds"]["A"]
    checkpoint = next((run / "fits" / config / "A").glob("*.ckpt"))
    with paths_allowed():  # the benchmark's own files, whose callback state holds a Path
        model = MicrographSegmenter.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    size = None if fold["scale"] == "native" else 128  # the benchmark's synthetic image size, its "model" scale
    # Runs from before fragment removal, edge fusion or closure record none of them: they did without.
    decision = Decision(
        fold["threshold"] if fold["threshold"] is not None else 0.5,
        fold.get("min_fragment", 0),
        fold.get("edge_weight", 0.0),
        tuple(fold["closure"]) if fold.get("closure") else None,
    )
    return masks(probabilities(model, tiles, size, tta), tiles, decision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/grain_boundaries_tbm"))
    parser.add_argument("--run", type=Path, default=Path("benchmarks/runs/tbm_lite0_20"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/tbm_sim_to_real.png"))
    args = parser.parse_args()
    results = json.loads((args.run / "results.json").read_text())
    scored = results["scored_groups"]["A"]  # fold A tuned on half A
    tta = results["settings"].get("tta") == str(True)
    every = read_tiles(args.root.resolve())
    tiles = [next(t for t in every if t.group == g) for g in sorted(scored)[:3]]
    sobel_otsu = [BASELINES["sobel"](t.image, 1.5) for t in tiles]  # the grey baseline's best σ
    columns = {"truth": [t.mask for t in tiles], "Sobel > Otsu, σ 1.5": sobel_otsu}
    columns |= {name: predicted(args.run, config, tiles, tta) for name, config in MODELS.items()}
    figure, axes = plt.subplots(len(tiles), len(columns) + 1, figsize=(3 * (len(columns) + 1), 3 * len(tiles)))
    for row, tile in enumerate(tiles):
        axes[row, 0].imshow(tile.image)
        axes[row, 0].set_title(f"real tile ({tile.group})", fontsize=9)
        for column, (name, column_masks) in enumerate(columns.items(), start=1):
            axes[row, column].imshow(skeletonize(column_masks[row]), cmap="gray_r", interpolation="nearest")
            title = (
                name if name == "truth" else f"{name}\nF1 {score_boundaries([column_masks[row]], [tile.mask]).f1:.2f}"
            )
            axes[row, column].set_title(title, fontsize=9)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
