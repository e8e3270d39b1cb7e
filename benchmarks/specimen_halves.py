"""Rendered specimens as two labelled halves on disk, laid out as ``tbm_sim_to_real.py`` lays out the TBM tiles.

    python benchmarks/specimen_halves.py mottled [--images 40] [--size 256] [--seed 2000]
        [--out benchmarks/runs/specimen_halves]

Writes ``images/``, ``masks/`` (0 grain, 1 boundary) and ``labels_A.csv`` / ``labels_B.csv`` (every other tile) under
``OUT/NAME``, so that ``tbm_distil.py --root OUT/NAME --halves OUT/NAME`` distils on a specimen with known truth
that the TBM decisions never saw: does the method help where the teacher's errors are systematic? The specimens
are those of ``edge_fusion_textured.py``; the seeds start past its tiles' (1000-1023), so no tile is shared.
"""

import argparse
from pathlib import Path

from edge_fusion_textured import SPECIMENS, specimen_tiles

from smalldata_pl.io.images import write_label_image, write_unit_image
from smalldata_pl.io.tables import write_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specimen", choices=sorted(SPECIMENS))
    parser.add_argument("--images", type=int, default=40, help="tiles in both halves together")
    parser.add_argument("--size", type=int, default=256, help="tile side in px (the TBM tiles' size)")
    parser.add_argument("--seed", type=int, default=2000, help="seed of the first tile")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/specimen_halves"))
    args = parser.parse_args()
    folder = args.out / args.specimen
    halves: dict[str, list[dict[str, str]]] = {"A": [], "B": []}
    for index, tile in enumerate(specimen_tiles(args.specimen, args.images, args.size, args.seed)):
        image, mask = f"images/{index:03d}.png", f"masks/{index:03d}.png"
        write_unit_image(folder / image, tile.image)
        write_label_image(folder / mask, tile.mask.astype("uint8"))
        halves["AB"[index % 2]].append({"image": image, "mask": mask, "group": f"{args.specimen}{index}"})
    for name, rows in halves.items():
        write_csv(folder / f"labels_{name}.csv", rows, ["image", "mask", "group"])
    print(f"{args.images} {args.specimen} tiles written to {folder}")


if __name__ == "__main__":
    main()
