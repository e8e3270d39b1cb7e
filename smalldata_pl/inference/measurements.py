"""What ``measure`` writes: measurements.csv per mask, particles.csv, histograms and a printed summary."""

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from smalldata_pl.datasets.segmentation import UNLABELLED
from smalldata_pl.inference.metallography import (
    LINE_SPACING,
    GrainMeasurement,
    PhaseMeasurement,
    astm_grain_size_number,
    measure_grains,
    measure_phases,
)
from smalldata_pl.io.images import ImageReadError
from smalldata_pl.io.output_folder import prepare_output
from smalldata_pl.io.tables import write_csv

log = logging.getLogger(__name__)


class NotALabelMask(ValueError):
    """A readable image that does not hold class indices (colour, float, or values outside the classes)."""


def read_label_mask(path: Path) -> np.ndarray:
    """Class indices of a single-channel label PNG/TIFF (greyscale or palette, 8 or 16 bit) as ``int64``.

    Raises:
        ImageReadError: If the file is missing, truncated or not an image.
        NotALabelMask: If it has colour channels or non-integer values.
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode, mask = image.mode, np.asarray(image)
    except (OSError, ValueError, UnidentifiedImageError) as error:
        raise ImageReadError(f"cannot read mask {path}: {error}; re-export it as a single-channel PNG") from error
    if mask.ndim != 2 or not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise NotALabelMask(
            f"{path} is a {mode} image, not a label mask; store class indices as a single-channel (greyscale or "
            "palette) PNG, as `smalldata apply` writes them"
        )
    return mask.astype(np.int64)


def measure_masks(
    masks: Sequence[tuple[Path, str]],
    out: Path,
    kind: Literal["boundaries", "phases"] = "boundaries",
    pixel_size: float | None = None,
    boundary_class: int = 1,
    class_names: Sequence[str] | None = None,
    line_spacing: int = LINE_SPACING,
    min_grain_area: int = 0,
    min_fragment: int = 0,
    overwrite: bool = False,
) -> str:
    """Measure every mask and write the tables and histograms into ``out``; returns a short summary.

    Args:
        masks: ``(path, name)`` pairs of label masks.
        out: Output folder (empty or new unless ``overwrite``).
        kind: ``boundaries`` (grain statistics of the ``boundary_class`` pixels) or ``phases`` (area fractions
            and particles of every class but class 0, the matrix).
        pixel_size: Micrometres per pixel; adds physical sizes and the ASTM E112 grain-size number.
        boundary_class: Class index of the boundary pixels (``kind="boundaries"``).
        class_names: Names of the class indices; masks holding other values are skipped.
        line_spacing: Heyn test lines on every this-many-th row and column.
        min_grain_area: Grain interiors of fewer pixels are holes in a wide boundary, merged into their neighbours.
        min_fragment: Isolated boundary pieces with fewer skeleton pixels (etch pits, noise) are dropped.
        overwrite: Clear a non-empty ``out`` first.

    Raises:
        ValueError: If ``pixel_size`` is not positive or ``boundary_class`` is not one of ``class_names``.
    """
    if pixel_size is not None and not pixel_size > 0:
        raise ValueError(f"--pixel_size must be positive micrometres per pixel, got {pixel_size}")
    names = list(class_names or [])
    if kind == "boundaries" and names and not 0 <= boundary_class < len(names):
        raise ValueError(f"--boundary_class {boundary_class} is not an index of --class_names {names}")
    prepare_output(out, overwrite, [path for path, _ in masks])
    grains: list[tuple[Path, str, GrainMeasurement]] = []
    phases: list[tuple[Path, str, PhaseMeasurement]] = []
    skipped = []
    for path, name in tqdm(masks, desc="measure", unit="mask"):
        try:
            mask = read_label_mask(path)
            _check_values(mask, path, kind, boundary_class, names)
        except (ImageReadError, NotALabelMask) as error:
            log.warning("skipping %s", error)
            skipped.append({"file": str(path), "reason": str(error)})
            continue
        if kind == "boundaries":
            measurement = measure_grains(mask == boundary_class, line_spacing, min_grain_area, min_fragment)
            grains.append((path, name, measurement))
        else:
            phases.append((path, name, measure_phases(mask, max(int(mask.max()) + 1, len(names), 2))))
    if skipped:
        write_csv(out / "skipped.csv", skipped, ["file", "reason"])
    if kind == "boundaries":
        lines = _write_grains(grains, out, pixel_size, line_spacing)
    else:
        lines = _write_phases(phases, out, pixel_size, names)
    lines.insert(0, f"{len(grains) + len(phases)} mask(s) measured into {out}")
    if skipped:
        lines.append(f"{len(skipped)} unreadable or not label masks, skipped (listed in {out / 'skipped.csv'}):")
        lines += [f"  {row['file']}: {row['reason']}" for row in skipped]
    return "\n".join(lines)


def _check_values(mask: np.ndarray, path: Path, kind: str, boundary_class: int, names: list[str]) -> None:
    values = np.unique(mask)
    if UNLABELLED in values and boundary_class != UNLABELLED and set(values.tolist()) - {0, UNLABELLED}:
        # Not a 0/255 binary mask: classes with unlabelled pixels, which no measurement may count as a class.
        raise NotALabelMask(
            f"{path} holds unlabelled pixels ({UNLABELLED}, as `smalldata apply --unsure_below` writes them for "
            "training) beside the classes; measure the masks of an apply run without --unsure_below"
        )
    if names and values.max() >= len(names):
        outside = values[values >= len(names)].tolist()
        raise NotALabelMask(f"{path} holds value(s) {outside[:5]} outside the classes 0..{len(names) - 1} {names}")
    if kind == "boundaries" and boundary_class not in values and (values > 0).any():
        raise NotALabelMask(
            f"{path} holds values {values[:5].tolist()} but no pixel of boundary class {boundary_class}; for a "
            f"0/255 binary mask pass --boundary_class {int(values.max())}"
        )


def _physical(pixels: float, pixel_size: float, power: int = 1) -> float | str:
    # Blank rather than NaN in the CSV when there is nothing to measure.
    return round(pixels * pixel_size**power, 6) if math.isfinite(pixels) else ""


def _write_grains(
    results: list[tuple[Path, str, GrainMeasurement]], out: Path, pixel_size: float | None, line_spacing: int
) -> list[str]:
    if not results:
        return ["no mask measured"]
    rows = []
    for path, name, m in results:
        intercept = m.intercepts.mean
        row: dict[str, object] = {
            "file": str(path),
            "name": name,
            "grains": m.grains,
            "border_grains": m.border_grains,
            "mean_grain_area_px": _physical(m.mean_area, 1.0),
            "crossings": m.intercepts.crossings,
            "test_line_px": m.intercepts.line_length,
            "mean_intercept_px": _physical(intercept, 1.0),
        }
        if pixel_size is not None:
            row["mean_grain_area_um2"] = _physical(m.mean_area, pixel_size, 2)
            row["mean_intercept_um"] = _physical(intercept, pixel_size)
            row["astm_g"] = _physical(astm_grain_size_number(intercept * pixel_size / 1000), 1.0)
        rows.append(row)
    write_csv(out / "measurements.csv", rows)
    unit, scale = ("µm", pixel_size) if pixel_size is not None else ("px", 1.0)
    areas = np.concatenate([m.areas for _, _, m in results]) * scale**2
    chords = np.concatenate([m.intercepts.chords for _, _, m in results]) * scale
    _histogram(out / "grain_areas.png", {"grains": areas}, f"grain area ({unit}²), edge grains left out")
    _histogram(out / "intercepts.png", {"intercepts": chords}, f"linear intercept ({unit}) between crossings")
    # Pooled like one long test line over all masks: line length over crossings.
    crossings = sum(m.intercepts.crossings for _, _, m in results)
    length = sum(m.intercepts.line_length for _, _, m in results)
    pooled = length / crossings * scale if crossings else math.nan
    border = sum(m.border_grains for _, _, m in results)
    total = sum(m.grains for _, _, m in results)
    lines = [
        f"grains: {total} ({total / len(results):.1f} per mask); {border} touch the image edge and are left out of "
        "the area statistics",
        f"mean grain area {areas.mean() if areas.size else math.nan:.4g} {unit}² over {areas.size} whole grains",
        f"mean linear intercept {pooled:.4g} {unit} ({crossings} crossings of test lines on every "
        f"{line_spacing}th row and column)",
    ]
    if pixel_size is not None:
        lines.append(f"ASTM E112 grain-size number G = {astm_grain_size_number(pooled / 1000):.2f} (pooled intercept)")
    return lines


def _write_phases(
    results: list[tuple[Path, str, PhaseMeasurement]], out: Path, pixel_size: float | None, names: list[str]
) -> list[str]:
    if not results:
        return ["no mask measured"]
    # Columns for the named classes and any other value present (a 0/255 mask gets class0 and class255, not 256).
    count = max([len(names), *(m.fractions.size for _, _, m in results)])
    fractions = np.stack([np.pad(m.fractions, (0, count - m.fractions.size)) for _, _, m in results])
    classes = [i for i in range(count) if i < len(names) or i == 0 or fractions[:, i].any()]
    column = {i: names[i] if i < len(names) else f"class{i}" for i in classes}
    rows, particles = [], []
    for (path, name, m), image_fractions in zip(results, fractions, strict=True):
        row: dict[str, object] = {"file": str(path), "name": name}
        row.update({f"fraction_{column[i]}": round(float(image_fractions[i]), 6) for i in classes})
        for index in classes[1:]:
            whole = _diameters([m], index)
            mean = float(whole.mean()) if whole.size else math.nan
            row[f"particles_{column[index]}"] = sum(p["class"] == index for p in m.particles)
            row[f"mean_diameter_{column[index]}_px"] = _physical(mean, 1.0)
            if pixel_size is not None:
                row[f"mean_diameter_{column[index]}_um"] = _physical(mean, pixel_size)
        rows.append(row)
        for p in m.particles:
            particle: dict[str, object] = {
                "file": str(path),
                "name": name,
                "class": column[int(p["class"])],
                "area_px": p["area"],
                "equivalent_diameter_px": round(float(p["equivalent_diameter"]), 3),
                "border": int(p["border"]),
            }
            if pixel_size is not None:
                particle["area_um2"] = _physical(float(p["area"]), pixel_size, 2)
                particle["equivalent_diameter_um"] = _physical(float(p["equivalent_diameter"]), pixel_size)
            particles.append(particle)
    write_csv(out / "measurements.csv", rows)
    columns = ["file", "name", "class", "area_px", "equivalent_diameter_px", "border"]
    physical = ["area_um2", "equivalent_diameter_um"] if pixel_size is not None else []
    write_csv(out / "particles.csv", particles, columns + physical)
    unit, scale = ("µm", pixel_size) if pixel_size is not None else ("px", 1.0)
    measured = [m for _, _, m in results]
    diameters = {column[i]: _diameters(measured, i) * scale for i in classes[1:]}
    _histogram(out / "particle_diameters.png", diameters, f"equivalent diameter ({unit}), edge particles left out")
    lines = []
    for index in classes:
        line = f"{column[index]}: area fraction {fractions[:, index].mean():.3f} (mean over masks)"
        if index > 0:
            d = diameters[column[index]]
            line += f", {d.size} whole particles, mean diameter {d.mean() if d.size else math.nan:.4g} {unit}"
        lines.append(line)
    return lines


def _diameters(measured: Sequence[PhaseMeasurement], index: int) -> np.ndarray:
    """Equivalent diameters (px) of the class-``index`` particles that do not touch the image edge."""
    return np.array(
        [p["equivalent_diameter"] for m in measured for p in m.particles if p["class"] == index and not p["border"]],
        dtype=np.float64,
    )


def _histogram(path: Path, samples: dict[str, np.ndarray], xlabel: str) -> None:
    """One histogram per entry of ``samples`` on shared axes; no file when every sample is empty."""
    present = {k: v for k, v in samples.items() if v.size}
    if not present:
        return
    figure = Figure(figsize=(5, 3.5))  # no pyplot: no global figure state, no GUI backend
    axes = figure.subplots()
    for name, values in present.items():
        bins = min(40, max(5, int(np.sqrt(values.size))))  # square-root rule, bounded for tiny and huge samples
        axes.hist(values, bins=bins, alpha=0.6, label=f"{name} (n={values.size})")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")
    axes.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")
