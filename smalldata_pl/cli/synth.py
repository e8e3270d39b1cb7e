"""``smalldata synth``: write procedural samples to disk in the real-data layout, ready to mix with real data."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from smalldata_pl.cli.options import command_parser, parse_options
from smalldata_pl.datasets.disk_copies import write_synthetic


@dataclass
class SynthOptions:
    """Options of ``smalldata synth``.

    Args:
        kind: ``grains`` (class folders), ``boundaries`` or ``precipitates`` (images, masks, manifest).
        count: Samples to write.
        out: Target folder; it must be empty unless ``overwrite``.
        size: Image side in pixels.
        imaging: Imaging preset (``clean``, ``optical``, ``sem_se``, ``sem_bse``); default per kind.
        seed: Generator seed.
        bits: 8 (PNG) or 16 (TIFF) bits per pixel.
        overwrite: Delete what ``out`` holds before writing (``--overwrite true``); otherwise a non-empty
            ``out`` is refused.
    """

    kind: Literal["grains", "boundaries", "precipitates"] = "grains"
    count: int = 100
    out: str = "synthetic"
    size: int = 256
    imaging: str | None = None
    seed: int = 0
    bits: Literal[8, 16] = 8
    overwrite: bool = False


def synth_command(argv: Sequence[str]) -> Path:
    """``smalldata synth --kind precipitates --count 100 --out synthetic/``."""
    parser = command_parser(
        "smalldata synth",
        "Write procedural micrographs with labels (PNG or 16-bit TIFF plus manifest.csv) in the layout the "
        "real-data DataModules read.",
        SynthOptions,
    )
    o = parse_options(parser, SynthOptions, argv)
    manifest = write_synthetic(o.kind, o.count, Path(o.out), o.size, o.imaging, o.seed, o.bits, o.overwrite)
    print(f"wrote {o.count} {o.kind} samples and {manifest}")
    return manifest
