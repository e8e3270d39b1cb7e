"""Quantitative metallography: known geometries, the issue-15 boundary score and `smalldata measure` end to end."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.draw import disk

from smalldata_pl.cli import main
from smalldata_pl.inference.metallography import (
    astm_grain_size_number,
    drop_boundary_fragments,
    measure_grains,
    measure_phases,
    score_boundaries,
)
from smalldata_pl.io.images import class_palette, write_label_image
from smalldata_pl.models.metrics import BoundaryF1


def square_grid(side: int, size: int = 128, width: int = 1, offset: int = 3) -> np.ndarray:
    """Boundaries of squares of ``side`` px, ``width`` px wide; the offset keeps them off the test lines."""
    mask = np.zeros((size, size), dtype=bool)
    for start in range(offset, size, side):
        mask[start : start + width] = True
        mask[:, start : start + width] = True
    return mask


@pytest.mark.parametrize("width", [1, 4])
def test_square_grid_gives_its_side_as_intercept_and_area(width):
    side, size = 16, 128
    m = measure_grains(square_grid(side, size, width))
    # Thinning shortens a wide boundary where it leaves the image, so the test line on column 0 misses it.
    assert m.intercepts.mean == pytest.approx(side, rel=0.01 if width == 1 else 0.04)
    # 9 x 9 regions (strips at the edges included); the 7 x 7 whole squares carry the area statistics.
    assert (m.grains, m.border_grains) == (81, 32)
    assert m.areas.size == 49 and m.mean_area == pytest.approx(side**2, rel=0.02)
    chords = m.intercepts.chords
    assert chords.size and np.allclose(chords, side)


def test_astm_grain_size_number_follows_the_e112_intercept_formula():
    pixel_um, side = 2.0, 16
    intercept_mm = measure_grains(square_grid(side)).intercepts.mean * pixel_um / 1000
    assert astm_grain_size_number(intercept_mm) == pytest.approx(-6.643856 * math.log10(0.032) - 3.288)
    assert astm_grain_size_number(0.320) == pytest.approx(0.0, abs=0.01)  # E112: G 0 at l = 0.320 mm
    assert astm_grain_size_number(0.320 / math.sqrt(2)) == pytest.approx(1.0, abs=0.01)  # one step per sqrt(2)
    assert math.isnan(astm_grain_size_number(math.nan))


def test_min_grain_area_merges_holes_in_a_wide_boundary():
    mask = square_grid(16, 64, width=4)
    mask[36, 20] = False  # a one-pixel hole inside a boundary band
    assert measure_grains(mask).grains == measure_grains(mask, min_grain_area=4).grains + 1
    assert measure_grains(mask, min_grain_area=4).mean_area == pytest.approx(256, rel=0.02)


def test_isolated_short_fragments_are_dropped_but_the_network_and_long_pieces_stay(tmp_path):
    grid = square_grid(16, 64)
    pit, scratch, spur = (np.zeros_like(grid) for _ in range(3))
    pit[10:12, 10:12] = True  # an etch pit inside a grain: 2 x 2 px
    scratch[40, 23:29] = True  # a 6 px scratch segment inside a grain, crossed by the test line of column 24
    spur[52:55, 52] = True  # a 3 px spur attached to the network is part of it
    specks = grid | pit | scratch | spur
    assert np.array_equal(drop_boundary_fragments(specks, 8), grid | spur)
    assert np.array_equal(drop_boundary_fragments(specks, 6), grid | spur | scratch)
    assert np.array_equal(drop_boundary_fragments(specks, 0), specks)  # 0 keeps every piece
    # the scratch adds a false Heyn crossing; dropping it gives the grid's own intercept back
    assert measure_grains(specks).intercepts.mean < measure_grains(grid).intercepts.mean
    assert measure_grains(specks, min_fragment=8).intercepts.mean == measure_grains(grid).intercepts.mean
    write_label_image(tmp_path / "specks.png", specks.astype(np.uint8))
    for kept, (option, intercept) in enumerate(
        ((["--min-fragment", "8"], 16.0), ([], measure_grains(specks).intercepts.mean))
    ):
        main(["measure", str(tmp_path / "specks.png"), "--out", str(tmp_path / f"out{kept}"), *option])
        (row,) = _rows(tmp_path / f"out{kept}" / "measurements.csv")
        assert float(row["mean_intercept_px"]) == pytest.approx(intercept)


def test_no_boundary_is_one_edge_grain_without_intercept():
    m = measure_grains(np.zeros((32, 32), dtype=bool))
    assert (m.grains, m.border_grains, m.areas.size) == (1, 1, 0)
    assert math.isnan(m.mean_area) and math.isnan(m.intercepts.mean)


def discs() -> tuple[np.ndarray, dict[int, list[int]]]:
    """Class 1: discs of radius 6 and 10; class 2: radius 4 and one cut by the top edge."""
    mask = np.zeros((96, 96), dtype=np.int64)
    radii = {1: [6, 10], 2: [4]}
    for (row, col), radius, kind in [((20, 20), 6, 1), ((60, 60), 10, 1), ((25, 70), 4, 2), ((0, 45), 5, 2)]:
        mask[disk((row, col), radius, shape=mask.shape)] = kind
    return mask, radii


def test_phase_fractions_and_particle_diameters_of_known_discs():
    mask, radii = discs()
    m = measure_phases(mask, num_classes=3)
    assert m.fractions == pytest.approx(np.bincount(mask.ravel(), minlength=3) / mask.size)
    for kind, expected in radii.items():
        whole = sorted(p["equivalent_diameter"] for p in m.particles if p["class"] == kind and not p["border"])
        assert whole == pytest.approx([2 * r for r in expected], abs=1.0)
    assert [p["border"] for p in m.particles if p["class"] == 2].count(True) == 1
    with pytest.raises(ValueError, match="outside the 2 classes"):
        measure_phases(mask, num_classes=2)


def test_score_boundaries_perfect_shifted_and_empty():
    truths = [square_grid(16, 64, width=4), square_grid(32, 64, width=3)]  # periodic: np.roll only shifts them
    perfect = score_boundaries(truths, truths)
    assert (perfect.precision, perfect.recall, perfect.f1) == (1.0, 1.0, 1.0)
    assert perfect.median_intercept_error == 0.0
    shifted = score_boundaries([np.roll(t, (2, 2), axis=(0, 1)) for t in truths], truths, tolerance=3)
    assert shifted.f1 == 1.0  # 2 px off is within 3 px
    far = score_boundaries([np.roll(t, (6, 6), axis=(0, 1)) for t in truths], truths)
    assert far.f1 < 0.5  # only the pieces near the crossings of shifted and true lines still match
    assert far.median_intercept_error == 0.0  # the same grains, only moved
    empty = score_boundaries([np.zeros_like(t) for t in truths], truths)
    assert (empty.precision, empty.recall, empty.f1) == (0.0, 0.0, 0.0)
    assert np.isinf(empty.intercept_errors).all() and empty.as_dict()["median_intercept_error"] is None
    with pytest.raises(ValueError, match="differ in shape"):
        score_boundaries([truths[0][:10]], [truths[0]])


def test_score_boundaries_sums_counts_and_agrees_with_the_logged_metric():
    rng = np.random.default_rng(0)
    truths = [square_grid(int(s), 48, width=2) for s in (8, 12, 16)]
    predictions = [t ^ (rng.random(t.shape) < 0.05) for t in truths]  # flipped pixels: spurs and gaps
    score = score_boundaries(predictions, truths)
    metric = BoundaryF1(boundary_class=1, tolerance=3)
    metric.update(torch.from_numpy(np.stack(predictions)).long(), torch.from_numpy(np.stack(truths)).long())
    assert 0.3 < score.f1 < 1.0
    assert float(metric.compute()) == pytest.approx(score.f1, abs=1e-6)
    # One relative grain-size error per image, the median of them reported.
    assert score.intercept_errors.shape == (3,)
    assert score.median_intercept_error == pytest.approx(float(np.median(score.intercept_errors)))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_measure_command_boundaries_reports_and_skips_bad_masks(tmp_path, capsys):
    masks = tmp_path / "masks"
    palette = class_palette(2)
    write_label_image(masks / "a" / "grid16.png", square_grid(16, 96, width=3).astype(np.uint8), palette)
    write_label_image(masks / "b" / "grid24.png", square_grid(24, 96, width=2).astype(np.uint8))
    (masks / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_label_image(masks / "b" / "binary.png", square_grid(16, 32).astype(np.uint8) * 255)  # 0/255, not indices
    unsure = square_grid(16, 32).astype(np.uint8)
    unsure[:4] = 255  # pseudo-labels of apply --unsure_below: unlabelled pixels no statistic may count as grain
    write_label_image(masks / "b" / "unsure.png", unsure)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(masks / "b" / "colour.png")
    main(["measure", str(masks), "--out", str(tmp_path / "out"), "--pixel-size", "0.5"])
    out = tmp_path / "out"
    rows = {row["name"]: row for row in _rows(out / "measurements.csv")}
    assert sorted(rows) == ["a/grid16.png", "b/grid24.png"]
    assert float(rows["a/grid16.png"]["mean_intercept_px"]) == pytest.approx(16, rel=0.05)
    assert float(rows["b/grid24.png"]["mean_intercept_um"]) == pytest.approx(12, rel=0.05)
    g = astm_grain_size_number(float(rows["a/grid16.png"]["mean_intercept_um"]) / 1000)
    assert float(rows["a/grid16.png"]["astm_g"]) == pytest.approx(g, abs=1e-3)
    assert (out / "grain_areas.png").is_file() and (out / "intercepts.png").is_file()
    printed = capsys.readouterr().out
    skipped = (out / "skipped.csv").read_text()
    for bad in ("broken.png", "binary.png", "colour.png", "unsure.png"):
        assert bad in skipped and bad in printed
    assert "--boundary_class 255" in skipped and "ASTM E112" in printed
    assert "without --unsure_below" in skipped


def test_measure_command_phases_writes_particles_and_fractions(tmp_path):
    mask, radii = discs()
    write_label_image(tmp_path / "phase.png", mask.astype(np.uint8), class_palette(3))
    out = tmp_path / "out"
    main(["measure", str(tmp_path / "phase.png"), "--out", str(out), "--kind", "phases"])
    main(["measure", str(tmp_path / "phase.png"), "--out", str(out), "--kind=phases", "--overwrite"])
    [row] = _rows(out / "measurements.csv")
    assert float(row["fraction_class1"]) == pytest.approx((mask == 1).mean(), abs=1e-6)
    assert float(row["mean_diameter_class1_px"]) == pytest.approx(np.mean([2 * r for r in radii[1]]), abs=1.0)
    particles = _rows(out / "particles.csv")
    assert len(particles) == 4 and sum(p["border"] == "1" for p in particles) == 1
    assert (out / "particle_diameters.png").is_file()
    named = tmp_path / "named"
    main(["measure", str(tmp_path / "phase.png"), "--out", str(named), "--kind", "phases", "--class_names", "[a,b]"])
    assert "outside the classes" in (named / "skipped.csv").read_text()
    binary = tmp_path / "binary"
    write_label_image(tmp_path / "binary.png", (mask > 0).astype(np.uint8) * 255)
    main(["measure", str(tmp_path / "binary.png"), "--out", str(binary), "--kind", "phases"])
    [row] = _rows(binary / "measurements.csv")
    assert [c for c in row if c.startswith("fraction_")] == ["fraction_class0", "fraction_class255"]
