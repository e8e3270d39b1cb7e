"""Score a grain-boundary checkpoint the way a user runs it: ``smalldata apply`` on the real TBM tiles, as is.

    python benchmarks/tbm_apply.py CHECKPOINT [CHECKPOINT ...] [--root ../shared/data/grain_boundaries_tbm] [--tta]
        [--edge-weight 0.5|auto] [--close-boundaries] [--ensemble CHECKPOINT ...] [--scales 0.75 1.0]

Each checkpoint segments every tile through the command line (its own preprocessing, whole tiles at their own pixel
size, argmax; no threshold or scale is tuned; ``--edge-weight`` and ``--close-boundaries`` pass apply's options of
those names; ``--ensemble`` averages each checkpoint with the ones given there; ``--scales`` passes apply's
multi-scale option), and the masks are scored against the tiles' true boundaries with :func:`score_boundaries`
(skeletons, 3 px, Heyn intercepts), pooled over all tiles. Prints one line per checkpoint and writes
``tbm_apply.json`` beside it.
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tbm_sim_to_real import edge_weight

from smalldata_pl.inference.measurements import read_label_mask
from smalldata_pl.inference.metallography import score_boundaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--root", type=Path, default=Path("../shared/data/grain_boundaries_tbm"))
    parser.add_argument("--tta", action="store_true", help="apply with the 8-view test-time augmentation")
    parser.add_argument(
        "--edge-weight", type=edge_weight, default=0.0, help="apply --edge_weight (a share, or auto): the tiles' edges"
    )
    parser.add_argument("--close-boundaries", action="store_true", help="apply --close_boundaries: closed grains")
    parser.add_argument("--ensemble", type=Path, nargs="+", default=[], help="apply --ensemble: averaged with each")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0], help="apply --scales: zoom factors averaged")
    args = parser.parse_args()
    with (args.root / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    truth = [read_label_mask(args.root / row["mask"]) > 0 for row in rows]
    for checkpoint in args.checkpoints:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "smalldata_pl", "apply", str(checkpoint), str(args.root / "images"), "--out", out,
                 "--tta", str(args.tta).lower(), "--edge_weight", str(args.edge_weight),
                 "--close_boundaries", str(args.close_boundaries).lower(),
                 *(["--ensemble", *map(str, args.ensemble)] if args.ensemble else []),
                 *(["--scales", str(args.scales)] if args.scales != [1.0] else [])],
                check=True, capture_output=True,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            predicted = [read_label_mask(Path(out) / "masks" / f"{Path(row['image']).stem}.png") == 1 for row in rows]
        score = score_boundaries(predicted, truth)
        result = {
            "tiles": len(rows),
            "tta": args.tta,
            "edge_weight": args.edge_weight,
            "close_boundaries": args.close_boundaries,
            "ensemble": [str(c) for c in args.ensemble],
            "scales": args.scales,
            "f1": score.f1,
            "precision": score.precision,
            "recall": score.recall,
            "median_intercept_error": score.median_intercept_error,
            "apply_seconds": round(seconds, 1),
        }
        name = "tbm_apply" + "_tta" * args.tta + f"_edges{args.edge_weight}" * (args.edge_weight != 0)
        name += "_closed" * args.close_boundaries + f"_ensemble{len(args.ensemble) + 1}" * bool(args.ensemble)
        name += "_scales" + "_".join(map(str, args.scales)) if args.scales != [1.0] else ""
        name += ".json"
        (checkpoint.parent / name).write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"{checkpoint}: F1 {score.f1:.3f} (P {score.precision:.3f}, R {score.recall:.3f}), "
            f"median grain-size error {score.median_intercept_error:.0%}, {len(rows)} tiles, {seconds:.0f} s"
        )


if __name__ == "__main__":
    main()
