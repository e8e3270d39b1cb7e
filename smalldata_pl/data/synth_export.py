"""``smalldata synth``: write procedural samples to disk in the real-data layout, ready to mix with real data."""

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from smalldata_pl.data.export import save_unit_image
from smalldata_pl.data.io import write_csv
from smalldata_pl.data.procedural import GrainBoundaryRenderer, GrainClassRenderer, PrecipitateRenderer, Renderer
from smalldata_pl.data.synthetic import GRAIN_MORPHOLOGIES, IMAGING_PRESETS

KINDS = ("grains", "boundaries", "precipitates")


def write_synthetic(kind: str, count: int, out: Path, size: int, imaging: str | None, seed: int, bits: int) -> Path:
    """Write ``count`` samples; returns the manifest path.

    ``grains`` gives ``<class>/<name>.png`` with ``manifest.csv`` (file,label,group) for MicrographFolder;
    ``boundaries`` and ``precipitates`` give ``images/``, ``masks/`` and ``manifest.csv`` (image,mask,group)
    for SegmentationFolder.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    if imaging is not None and imaging not in IMAGING_PRESETS:
        raise ValueError(f"unknown imaging preset {imaging!r}; choose one of {sorted(IMAGING_PRESETS)}")
    factories: dict[str, Callable[[], Renderer]] = {
        "grains": lambda: GrainClassRenderer(size, imaging or "optical"),
        "boundaries": lambda: GrainBoundaryRenderer(size, imaging or "optical", 2),
        "precipitates": lambda: PrecipitateRenderer(size, imaging or "sem_se"),
    }
    renderer = factories[kind]()
    suffix = ".tif" if bits == 16 else ".png"
    rows = []
    for index in range(count):
        image, target = renderer(np.random.default_rng([seed, index]), index)
        group = f"synthetic-{kind}-{seed}-{index}"
        if kind == "grains":
            name = f"{GRAIN_MORPHOLOGIES[int(target)].name}/{kind}_{index:05d}{suffix}"
            _save(out / name, image, bits)
            rows.append({"file": name, "label": GRAIN_MORPHOLOGIES[int(target)].name, "group": group})
        else:
            image_name, mask_name = f"images/{kind}_{index:05d}{suffix}", f"masks/{kind}_{index:05d}.png"
            _save(out / image_name, image, bits)
            (out / mask_name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(target, dtype=np.uint8)).save(out / mask_name)
            rows.append({"image": image_name, "mask": mask_name, "group": group})
    return write_csv(out / "manifest.csv", rows)


def _save(path: Path, image: np.ndarray, bits: int) -> None:
    if bits == 16:
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, (np.clip(image, 0, 1) * 65535).round().astype(np.uint16))
    else:
        save_unit_image(path, image)


def synth_command(argv: list[str]) -> Path:
    """``smalldata synth --kind precipitates --count 100 --out synthetic/``."""
    parser = argparse.ArgumentParser(
        prog="smalldata synth",
        description="Write procedural micrographs with labels "
        "(PNG or 16-bit TIFF plus manifest.csv) in the layout the real-data DataModules read.",
    )
    parser.add_argument("--kind", choices=KINDS, default="grains")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("synthetic"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--imaging", default=None, help=f"imaging preset: {', '.join(sorted(IMAGING_PRESETS))}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, choices=(8, 16), default=8)
    args = parser.parse_args(argv)
    manifest = write_synthetic(args.kind, args.count, args.out, args.size, args.imaging, args.seed, args.bits)
    print(f"wrote {args.count} {args.kind} samples and {manifest}")
    return manifest
