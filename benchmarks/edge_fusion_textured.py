"""Does mixing in the image's own edges survive a specimen whose edges mislead? Synthetic grains with known truth.

    python benchmarks/edge_fusion_textured.py CHECKPOINT [--images 24] [--size 256] [--weight 0.75] [--tta]
        [--native] [--ensemble CHECKPOINT ...] [--scales 0.75 1.0]

A fixed edge share is chosen where the image's strongest edges are grain boundaries (the colour-etched TBM tiles).
On another specimen they may be scratches, etch pits or an uneven etch. Real micrographs of such specimens with
labelled boundaries are not in the repository, so this benchmark renders them: colour-etched grains as the
``tint_etched`` preset draws them, the same with ten times the scratches and etch pits, and the same with strong
mottle, relief and shading. Each tile's boundary probability comes from the checkpoint (at the benchmark's model
scale of 128 px, as in ``tbm_sim_to_real.py``, or with ``--native`` at the tiles' own 256 px, as ``smalldata apply``
sees them; ``--ensemble`` averages the checkpoint with more, as ``apply --ensemble`` does; ``--scales`` averages the
maps of the tiles zoomed by each factor first, as ``apply --scales`` does), and four maps are cut at 0.5 with
nothing tuned (a user applying a model to a new material has no labels): the network alone, the edges alone, the
fixed share (``fuse_edges(p, image, WEIGHT)``) and the calibrated fusion (``fuse_edges(p, image, "auto")``). Scores
come from :func:`score_boundaries` (skeletons, 3 px, Heyn intercepts). The checkpoint was trained on ``tint_etched``
samples, so its own view of these tiles is better than of real ones: the table measures what the edges add or cost,
not sim-to-real. Writes ``edge_fusion_textured.json`` beside the checkpoint and prints a table.
"""

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tbm_sim_to_real import Tile, probabilities

from smalldata_pl.generators.renderers import GrainBoundaryRenderer
from smalldata_pl.generators.styles import resolve_style
from smalldata_pl.inference.boundary_maps import edge_strength, fuse_edges
from smalldata_pl.inference.ensemble import ensemble
from smalldata_pl.inference.metallography import score_boundaries
from smalldata_pl.models.checkpoint_files import paths_allowed
from smalldata_pl.tasks import MicrographSegmenter

SPECIMENS: dict[str, dict[str, Any]] = {
    "tint_etched": {"preset": "tint_etched"},
    "scratched": {"preset": "tint_etched", "scratches": 40.0, "etch_pits": 400.0, "randomize": 0.2},
    "mottled": {"preset": "tint_etched", "mottle": 0.25, "relief": 0.3, "shading": 0.2, "randomize": 0.2},
}


def specimen_tiles(name: str, count: int, size: int, seed: int, specimens: dict[str, Any] = SPECIMENS) -> list[Tile]:
    """``count`` rendered tiles of the specimen ``name`` of ``specimens``, tile ``i`` from the seed ``seed + i``."""
    renderer = GrainBoundaryRenderer(size=size, style=resolve_style(specimens[name]))
    tiles = []
    for index in range(count):
        image, mask = renderer(np.random.default_rng(seed + index), index)
        tiles.append(Tile("synthetic", Path(f"{name}/{index}"), image.astype(np.float32), mask.astype(bool)))
    return tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a colour boundary segmenter (boundary_class 1)")
    parser.add_argument("--images", type=int, default=24, help="tiles per specimen")
    parser.add_argument("--size", type=int, default=256, help="tile side in px (the TBM tiles' size)")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first tile")
    parser.add_argument("--weight", type=float, default=0.75, help="the fixed edge share (TBM's choice)")
    parser.add_argument("--tta", action="store_true", help="average the boundary probability over the D4 views")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--native", action="store_true", help="the network sees the tiles at their own size")
    parser.add_argument("--ensemble", type=Path, nargs="+", default=[], help="more checkpoints averaged with it")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0], help="zoom factors whose maps are averaged")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with paths_allowed():  # the benchmark's own checkpoints, whose callback state holds a Path
        members = [
            MicrographSegmenter.load_from_checkpoint(path, map_location="cpu").eval()
            for path in [args.checkpoint, *args.ensemble]
        ]
    model: Any = ensemble(members) if args.ensemble else members[0]
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "specimens": {}}
    print(f"{'specimen':12s} {'map':14s} {'F1':>6s} {'P':>6s} {'R':>6s} {'err':>7s}")
    for name, style in SPECIMENS.items():
        tiles = specimen_tiles(name, args.images, args.size, args.seed)
        side = args.size if args.native else 128
        sizes = [None if args.native and scale == 1 else round(side * scale) for scale in args.scales]
        scaled = [probabilities(model, tiles, size, args.tta) for size in sizes]
        maps = [np.mean(per_tile, axis=0) for per_tile in zip(*scaled, strict=True)]
        truths = [t.mask for t in tiles]
        candidates = {
            "network": maps,
            "edges": [edge_strength(t.image) for t in tiles],
            f"share {args.weight:g}": [fuse_edges(p, t.image, args.weight) for p, t in zip(maps, tiles, strict=True)],
            "auto": [fuse_edges(p, t.image, "auto") for p, t in zip(maps, tiles, strict=True)],
        }
        results["specimens"][name] = {"style": style, "maps": {}}
        for label, candidate in candidates.items():
            score = score_boundaries([m >= 0.5 for m in candidate], truths).as_dict()
            results["specimens"][name]["maps"][label] = score
            print(
                f"{name:12s} {label:14s} {score['f1']:6.3f} {score['precision']:6.3f} {score['recall']:6.3f} "
                f"{score['median_intercept_error']:7.1%}",
                flush=True,
            )
    name = "edge_fusion_textured" + "_native" * args.native + "_ensemble" * bool(args.ensemble)
    name += "_scales" + "_".join(map(str, args.scales)) if args.scales != [1.0] else ""
    out = args.checkpoint.parent / f"{name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
