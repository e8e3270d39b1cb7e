"""Realistic grain specimens (curved boundaries, log-normal sizes, artefacts outside the mask) and their realism score."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image
from scipy import ndimage

from smalldata_pl.cli import main
from smalldata_pl.datamodules import SyntheticGrainBoundaries
from smalldata_pl.evaluation.realism import real_images, realism_score
from smalldata_pl.generators import (
    GRAIN_MORPHOLOGIES,
    IMAGING_PRESETS,
    GrainMorphology,
    render_grain_micrograph,
    render_specimen,
    resolve_style,
)
from smalldata_pl.generators.renderers import GrainBoundaryRenderer

CLEAN = IMAGING_PRESETS["clean"]
MORPHOLOGY = GrainMorphology("x", grain_size=0.2, size_jitter=0.0)
# The realistic look without per-sample jitter or artefacts, so one effect at a time can be switched on.
QUIET = {"preset": "realistic", "randomize": 0.0, "scratches": 0, "etch_pits": 0, "pores": 0, "inclusions": 0}


@pytest.mark.parametrize("artefact", ["scratches", "etch_pits", "pores", "inclusions"])
def test_each_artefact_darkens_the_image_but_never_enters_the_mask(artefact: str):
    def render(count: float):
        style = resolve_style({**QUIET, artefact: count})
        return render_specimen(np.random.default_rng(4), (96, 96), MORPHOLOGY, style, CLEAN)

    plain, marked = render(0), render({"scratches": 6, "etch_pits": 300, "pores": 40, "inclusions": 60}[artefact])
    footprint = marked.artefacts[artefact]
    assert footprint.any() and not plain.artefacts[artefact].any()
    assert np.array_equal(plain.boundaries, marked.boundaries)  # the label is untouched
    assert np.array_equal(plain.instances, marked.instances)
    darker = plain.image[footprint] - marked.image[footprint]
    assert darker.mean() > 0.04 and (darker >= -1e-6).all()
    assert np.allclose(plain.image[~footprint], marked.image[~footprint], atol=0.03)  # nothing else changed
    if artefact == "scratches":  # long thin lines: a footprint much longer than wide
        assert footprint.sum() > 60 and footprint.mean() < 0.25


def _straightness_residual(instances: np.ndarray) -> float:
    """Median RMS distance of each grain pair's shared boundary pixels from their best-fitting straight line."""
    right = np.stack([instances[:, :-1].ravel(), instances[:, 1:].ravel()], 1)
    down = np.stack([instances[:-1, :].ravel(), instances[1:, :].ravel()], 1)
    rows, cols = np.mgrid[0 : instances.shape[0], 0 : instances.shape[1]]
    points = np.concatenate(
        [
            np.stack([rows[:, :-1].ravel(), cols[:, :-1].ravel() + 0.5], 1),
            np.stack([rows[:-1].ravel() + 0.5, cols[:-1].ravel()], 1),
        ]
    )
    pairs = np.sort(np.concatenate([right, down]), axis=1)
    differ = pairs[:, 0] != pairs[:, 1]
    pairs, points = pairs[differ], points[differ]
    residuals = []
    for pair in np.unique(pairs, axis=0):
        edge = points[(pairs == pair).all(axis=1)]
        if len(edge) >= 12:
            centred = edge - edge.mean(axis=0)
            residuals.append(np.sqrt(np.linalg.eigvalsh(centred.T @ centred / len(edge))[0]))
    return float(np.median(residuals))


def test_realistic_boundaries_are_curved_and_grain_sizes_spread_log_normally():
    shape, morphology = (160, 160), GrainMorphology("x", grain_size=0.12, size_jitter=0.0)
    flat = [render_grain_micrograph(np.random.default_rng(i), shape, morphology, CLEAN) for i in range(2)]
    real = [render_specimen(np.random.default_rng(i), shape, morphology, resolve_style(QUIET), CLEAN) for i in range(2)]
    flat_bend = np.mean([_straightness_residual(m.instances) for m in flat])
    real_bend = np.mean([_straightness_residual(m.instances) for m in real])
    assert flat_bend < 0.5 and real_bend > 2.5 * flat_bend  # Voronoi edges are straight to the pixel, these bend

    def log_area_spread(micrographs) -> float:
        return float(np.std(np.log(np.concatenate([m.grain_areas[m.grain_areas > 0] for m in micrographs]))))

    assert log_area_spread(real) > 1.3 * log_area_spread(flat)


def test_twins_are_drawn_inside_grains_and_are_not_boundary():
    style = resolve_style({**QUIET, "twin_probability": 1.0})
    micrograph = render_specimen(np.random.default_rng(1), (96, 96), MORPHOLOGY, style, CLEAN)
    assert micrograph.twins.any()
    untwinned = render_specimen(np.random.default_rng(1), (96, 96), MORPHOLOGY, resolve_style(QUIET), CLEAN)
    assert np.array_equal(micrograph.boundaries, untwinned.boundaries)


@pytest.mark.parametrize("colour", [True, False])
def test_etch_drift_changes_colour_gradually_inside_grains_and_leaves_labels_and_other_draws_alone(colour: bool):
    def render(drift: float):
        style = resolve_style({**QUIET, "colour": colour, "etch_drift": drift})
        return render_specimen(np.random.default_rng(2), (128, 128), MORPHOLOGY, style, CLEAN)

    plain, drifted = render(0.0), render(0.3)
    assert np.array_equal(plain.instances, drifted.instances) and np.array_equal(plain.boundaries, drifted.boundaries)
    change = (drifted.image - plain.image).reshape(128, 128, -1)
    interior = ndimage.binary_erosion(~plain.boundaries, iterations=3)
    assert change[interior].std() > 0.03  # the drift is visible ...
    # ... but gradual: neighbouring interior pixels change alike (a step would look like a boundary)
    step = np.abs(np.diff(change, axis=1))[interior[:, 1:] & interior[:, :-1]]
    assert step.mean() < 0.1 * change[interior].std()
    grain_spread = [
        drifted.image.reshape(128, 128, -1)[(drifted.instances == g) & interior].std(axis=0).mean()
        for g in np.unique(drifted.instances[interior])
    ]
    plain_spread = [
        plain.image.reshape(128, 128, -1)[(plain.instances == g) & interior].std(axis=0).mean()
        for g in np.unique(plain.instances[interior])
    ]
    assert np.median(grain_spread) > 1.5 * np.median(plain_spread)  # colour varies inside each grain


def test_preferred_orientation_makes_neighbouring_grains_etch_alike_and_leaves_labels_alone():
    def alike_neighbours(share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Whether each pair of touching grains has nearly one colour (summed RGB difference under 0.1)."""
        style = resolve_style({**QUIET, "colour": True, "preferred_orientation": share, "shading": 0, "relief": 0})
        micrograph = render_specimen(np.random.default_rng(seed), (128, 128), MORPHOLOGY, style, CLEAN)
        grains, image = micrograph.instances, micrograph.image.reshape(-1, 3)
        interior = ndimage.binary_erosion(~micrograph.boundaries, iterations=2).ravel()
        colours = np.stack(
            [image[interior & (grains.ravel() == g)].mean(axis=0) for g in np.unique(grains.ravel()[interior])]
        )
        ids = np.unique(grains.ravel()[interior])
        pairs = np.unique(np.sort(np.stack([grains[:, :-1].ravel(), grains[:, 1:].ravel()], 1), axis=1), axis=0)
        pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & np.isin(pairs, ids).all(axis=1)]
        first, second = np.searchsorted(ids, pairs[:, 0]), np.searchsorted(ids, pairs[:, 1])
        return np.abs(colours[first] - colours[second]).sum(axis=1) < 0.1, micrograph.boundaries

    random, textured = [], []
    for seed in range(3):
        (alike, boundaries), (textured_alike, textured_boundaries) = (alike_neighbours(s, seed) for s in (0.0, 1.0))
        assert np.array_equal(boundaries, textured_boundaries)  # the label is untouched
        random.append(alike)
        textured.append(textured_alike)
    # random orientations rarely give two touching grains one colour; a textured specimen often does
    assert np.concatenate(random).mean() < 0.05 and np.concatenate(textured).mean() > 0.15


def test_striations_are_parallel_lines_inside_a_share_of_grains_and_leave_labels_and_other_draws_alone():
    def render(share: float):
        style = resolve_style({**QUIET, "colour": True, "striations": share})
        return render_specimen(np.random.default_rng(5), (128, 128), MORPHOLOGY, style, CLEAN)

    plain, striated, half = render(0.0), render(1.0), render(0.5)
    assert np.array_equal(plain.instances, striated.instances) and np.array_equal(plain.boundaries, half.boundaries)
    darkening = 1.0 - striated.image.mean(axis=-1) / plain.image.mean(axis=-1)
    assert darkening.min() > -1e-6 and darkening.max() > 0.1  # lines only darken
    interior = ndimage.binary_erosion(~plain.boundaries, iterations=3)
    grains = [g for g in np.unique(plain.instances[interior]) if (interior & (plain.instances == g)).sum() > 150]
    rows, cols = np.gradient(ndimage.gaussian_filter(darkening, 0.7))
    coherence = []
    for grain in grains:  # structure tensor of the darkening: one dominant direction per grain
        inside = interior & (plain.instances == grain)
        tensor = np.array([[np.sum(rows[inside] ** 2), np.sum(rows[inside] * cols[inside])], [0.0, 0.0]])
        tensor[1] = [tensor[0, 1], np.sum(cols[inside] ** 2)]
        small, large = np.linalg.eigvalsh(tensor)
        coherence.append((large - small) / max(large + small, 1e-12))
    assert len(grains) >= 3 and np.median(coherence) > 0.6
    touched = [darkening[interior & (plain.instances == g)].max() > 0.05 for g in grains]
    half_touched = [
        (1.0 - half.image.mean(axis=-1) / plain.image.mean(axis=-1))[interior & (plain.instances == g)].max() > 0.05
        for g in grains
    ]
    # Nearly every grain at share 1 (the coverage field can leave a small one bare), some of them at share 0.5
    assert np.mean(touched) > 0.8 and 0 < sum(half_touched) < sum(touched)


def test_specimens_are_a_pure_function_of_the_seed_and_flat_is_todays_look():
    renderer = GrainBoundaryRenderer(64, "optical", 2, resolve_style("realistic"))
    first, again, other = (renderer(np.random.default_rng(s), 0) for s in ([0, 5], [0, 5], [0, 6]))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    flat_image, _ = GrainBoundaryRenderer(64, "optical", 1)(np.random.default_rng(3), 0)
    today = render_grain_micrograph(
        np.random.default_rng(3), (64, 64), GRAIN_MORPHOLOGIES[0], IMAGING_PRESETS["optical"]
    )
    assert np.array_equal(flat_image, today.image)


def test_datamodule_style_option_gives_colour_or_grey_and_rejects_unknown_styles():
    colour = SyntheticGrainBoundaries(train_size=2, val_size=2, image_size=32, style="tint_etched", in_chans=3)
    colour.setup("fit")
    sample = colour.train_dataset[0]
    assert sample["image"].shape == (3, 32, 32) and set(torch.unique(sample["mask"]).tolist()) <= {0, 1}
    assert not torch.allclose(sample["image"][0], sample["image"][2])  # tinted, not grey replicated
    grey = SyntheticGrainBoundaries(train_size=2, val_size=2, image_size=32, style={"preset": "tint_etched"})
    grey.setup("fit")
    assert grey.train_dataset[0]["image"].shape == (1, 32, 32)
    assert resolve_style({"preset": "realistic", "scratches": 0, "groove_width": [1, 3]}).groove_width == (1.0, 3.0)
    with pytest.raises(ValueError, match="unknown grain style 'shiny'"):
        SyntheticGrainBoundaries(style="shiny")
    with pytest.raises(ValueError, match="unknown grain style option"):
        resolve_style({"preset": "flat", "scratchez": 2})


def test_boundary_etched_grains_are_told_apart_by_dark_grooves_not_by_their_grey():
    def contrasts(preset: str) -> tuple[float, float]:
        """Spread of the grains' mean grey and the mean darkening of the boundary pixels against the grains."""
        style = resolve_style({**QUIET, "preset": preset, "shading": 0, "relief": 0, "mottle": 0})
        micrograph = render_specimen(np.random.default_rng(2), (128, 128), MORPHOLOGY, style, CLEAN)
        interior = ndimage.binary_erosion(~micrograph.boundaries, iterations=3)
        means = [
            micrograph.image[interior & (micrograph.instances == g)].mean()
            for g in np.unique(micrograph.instances[interior])
        ]
        return float(np.std(means)), float(
            micrograph.image[interior].mean() - micrograph.image[micrograph.boundaries].mean()
        )

    (realistic_spread, _), (etched_spread, etched_groove) = contrasts("realistic"), contrasts("boundary_etched")
    assert etched_spread < 0.4 * realistic_spread and etched_groove > 2 * etched_spread


def test_a_style_mixture_takes_turns_over_the_samples_with_every_morphology():
    mixture = SyntheticGrainBoundaries(train_size=16, val_size=2, image_size=32, style=["realistic", "tint_etched"])
    assert mixture.style == (resolve_style("realistic"), resolve_style("tint_etched"))
    renderer = mixture.renderer()
    for style, index in ((0, 0), (0, 3), (1, 4), (1, 7), (0, 8)):
        alone = GrainBoundaryRenderer(32, "optical", 2, mixture.style[style])
        mixed, single = renderer(np.random.default_rng(index), index), alone(np.random.default_rng(index), index)
        assert np.array_equal(mixed[0], single[0]) and np.array_equal(mixed[1], single[1])
    mixture.setup("fit")
    assert mixture.train_dataset[5]["image"].shape == (1, 32, 32)  # the colour style in grey, as in_chans says
    assert SyntheticGrainBoundaries(style=["realistic"]).style == resolve_style("realistic")  # one style is itself
    with pytest.raises(ValueError, match="at least one style"):
        SyntheticGrainBoundaries(style=[])
    with pytest.raises(ValueError, match="unknown grain style 'shiny'"):
        SyntheticGrainBoundaries(style=["realistic", "shiny"])


def _write_real(root: Path, groups: int = 3, per_group: int = 2) -> Path:
    """'Real' images: colour-etched specimens from a style the scored generator does not use."""
    renderer = GrainBoundaryRenderer(64, "optical", 1, resolve_style("tint_etched"))
    rows = []
    for index in range(groups * per_group):
        image, _ = renderer(np.random.default_rng([99, index]), index)
        name = f"images/{index}.png"
        write_image(root / name, (image * 255).astype(np.uint8))
        rows.append({"image": name, "group": f"specimen{index // per_group}"})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_realism_cli_tells_a_different_style_apart_and_keeps_groups_whole(tmp_path: Path):
    real = _write_real(tmp_path / "real")
    args = ["realism", "--real", str(real), "--size", "48", "--channels", "3", "--bootstrap", "50"]
    main([*args, "--style", "flat", "--imaging", "clean,optical", "--out", "scores.json"])
    written = json.loads(Path("scores.json").read_text())
    assert [s["setting"] for s in written["settings"]] == ["flat/clean", "flat/optical"]
    for score in written["settings"]:
        assert {"accuracy", "low", "high", "real_images", "real_groups", "synthetic_images", "folds"} <= set(score)
        assert score["accuracy"] >= 0.85  # grey flat grains against colour-etched ones: easy to tell apart
        assert set(score["families"]) == {"intensity", "edges", "glcm", "lbp", "spectrum"}
        assert score["low"] <= score["accuracy"] <= score["high"]
        assert (score["real_images"], score["real_groups"], score["synthetic_images"]) == (12, 3, 12)
        held_out = [g for fold in score["held_out_groups"] for g in fold]
        assert sorted(held_out) == ["specimen0", "specimen1", "specimen2"]  # each group in exactly one test fold
    config = tmp_path / "generator.yaml"
    config.write_text(
        "data:\n  class_path: smalldata_pl.datamodules.SyntheticGrainBoundaries\n"
        "  init_args: {style: tint_etched, imaging: clean}\n"
    )
    main([*args, "--generator_config", str(config), "--out", "config.json"])
    assert [s["setting"] for s in json.loads(Path("config.json").read_text())["settings"]] == ["generator"]


def test_group_split_never_puts_one_group_on_both_sides():
    rng = np.random.default_rng(0)
    groups = [f"g{i // 4}" for i in range(24)]  # 6 specimens, 4 crops each
    real, synthetic = {"a": rng.normal(size=(24, 5))}, {"a": rng.normal(size=(24, 5))}
    score = realism_score(real, groups, synthetic, folds=3, bootstrap=20)
    held_out = [set(fold) for fold in score["held_out_groups"]]
    assert all(not a & b for i, a in enumerate(held_out) for b in held_out[i + 1 :])
    assert set().union(*held_out) == set(groups)
    assert 0.0 <= score["accuracy"] <= 1.0 and not math.isnan(score["low"])


def test_real_images_of_a_plain_folder_are_one_group_per_file(tmp_path: Path):
    for name in ("a.png", "sub/b.png"):
        write_image(tmp_path / "plain" / name, np.zeros((8, 8), np.uint8))
    assert [group for _, group in real_images(tmp_path / "plain")] == ["a.png", "sub/b.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        real_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        real_images(tmp_path / "missing")


def test_real_images_of_a_manifest_keep_its_groups_like_every_manifest_of_the_framework(tmp_path: Path):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, np.zeros((8, 8), np.uint8))
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(b"\xef\xbb\xbfimage , group\na.png, s1\nb.png,\n")  # Excel's BOM, padded cells
    assert real_images(tmp_path) == [(tmp_path / "a.png", "s1"), (tmp_path / "b.png", "b.png")]
    manifest.write_text("path,group\na.png,s1\n")
    with pytest.raises(ValueError, match="needs an 'image' \\(or 'file'\\) column"):
        real_images(manifest)
    manifest.write_text("image,group\na.png,s1\nc.png,s2\n")
    with pytest.raises(FileNotFoundError, match=r"lists 1 missing image\(s\), e.g. .*c\.png"):
        real_images(manifest)
