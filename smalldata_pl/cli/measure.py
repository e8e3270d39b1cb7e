"""``smalldata measure``: grain statistics of boundary masks, area fractions and particles of phase masks."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from smalldata_pl.cli.apply import expand_inputs
from smalldata_pl.cli.options import command_parser, parse_options
from smalldata_pl.inference.measurements import measure_masks
from smalldata_pl.inference.metallography import LINE_SPACING


@dataclass
class MeasureOptions:
    """Options of ``smalldata measure``.

    Args:
        masks: Label masks (single-channel or palette PNG/TIFF of class indices, as ``smalldata apply`` writes
            them): files, folders (searched recursively) or glob patterns.
        out: Output folder; must be empty or new unless ``overwrite``.
        pixel_size: Micrometres per pixel; adds sizes in µm and the ASTM E112 grain-size number G.
        kind: ``boundaries``: grain count, mean grain area and Heyn mean linear intercept of the boundary
            pixels; ``phases``: area fraction of every class and the particles of every class but 0 (the matrix).
        boundary_class: Class index of the boundary pixels (``kind=boundaries``); 255 for 0/255 binary masks.
        class_names: Names of the class indices in order; masks holding other values are skipped.
        line_spacing: Heyn test lines on every this-many-th row and column of the boundary skeleton.
        min_grain_area: Grain interiors of fewer pixels are taken for holes in a wide boundary (annotation or
            prediction noise) and merged into the grains around them; 0 keeps every one.
        min_fragment: Isolated boundary pieces whose skeleton is shorter than this many pixels (etch pits,
            scratch segments, noise in a predicted mask) close no grain and are dropped before measuring; 0
            keeps every piece.
        overwrite: Clear a non-empty output folder first.
    """

    masks: list[str]
    out: str = "measurements"
    pixel_size: float | None = None
    kind: Literal["boundaries", "phases"] = "boundaries"
    boundary_class: int = 1
    class_names: list[str] | None = None
    line_spacing: int = LINE_SPACING
    min_grain_area: int = 0
    min_fragment: int = 0
    overwrite: bool = False


def measure_command(argv: Sequence[str]) -> Path:
    """``smalldata measure MASKS... --out DIR [--pixel_size UM] [--kind boundaries|phases]``."""
    parser = command_parser(
        "smalldata measure",
        "Quantitative metallography of label masks (predicted or true): per mask grain count, mean grain area, "
        "mean linear intercept and ASTM E112 G (boundaries), or area fractions and particle sizes (phases); "
        "measurements.csv, particles.csv and histograms. Unreadable or non-label masks are reported and skipped.",
        MeasureOptions,
        ["masks"],
    )
    o = parse_options(parser, MeasureOptions, argv)
    out = Path(o.out)
    summary = measure_masks(
        expand_inputs(o.masks),
        out,
        o.kind,
        o.pixel_size,
        o.boundary_class,
        o.class_names,
        o.line_spacing,
        o.min_grain_area,
        o.min_fragment,
        overwrite=o.overwrite,
    )
    print(summary)
    return out
