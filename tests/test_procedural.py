import csv

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from smalldata_pl.cli import main
from smalldata_pl.datamodules import MicrographFolder, SegmentationFolder, SyntheticPrecipitates, SyntheticSpectra
from smalldata_pl.generators import IMAGING_PRESETS, GrainMorphology, render_grain_micrograph, tessellate
from smalldata_pl.generators.imaging import ImagingModel
from smalldata_pl.generators.precipitates import PrecipitateParams, render_precipitates
from smalldata_pl.generators.seeds import place_seeds
from smalldata_pl.generators.spectra import SpectrumParams, load_phase_library, render_spectrum, two_theta_axis


def test_instance_count_equals_seed_count_in_the_open_domain():
    rng = np.random.default_rng(0)
    seeds = place_seeds(rng, 40, (128, 128), "hardcore")
    assert len(np.unique(tessellate(seeds, (128, 128)))) == 40


def test_hardcore_seeds_keep_their_distance_and_clustered_ones_cluster():
    rng = np.random.default_rng(1)
    hard = place_seeds(rng, 50, (200, 200), "hardcore", hardcore_fraction=0.7)
    distances = np.linalg.norm(hard[:, None] - hard[None], axis=2) + np.eye(50) * 1e9
    assert distances.min() >= 0.7 * np.sqrt(200 * 200 / 50) - 1e-9
    clustered = place_seeds(rng, 50, (200, 200), "clustered", cluster_count=2, cluster_spread=0.05)
    poisson = place_seeds(rng, 50, (200, 200), "poisson")

    def nearest(points):
        d = np.linalg.norm(points[:, None] - points[None], axis=2) + np.eye(len(points)) * 1e9
        return d.min(axis=1).mean()

    assert nearest(clustered) < 0.7 * nearest(poisson)


def test_grain_size_statistics_follow_the_requested_size():
    rng = np.random.default_rng(2)
    sizes = []
    for target in (0.08, 0.16):
        morphology = GrainMorphology("x", grain_size=target, size_jitter=0.0)
        intercept = np.mean(
            [
                render_grain_micrograph(rng, (192, 192), morphology, IMAGING_PRESETS["clean"]).mean_intercept
                for _ in range(3)
            ]
        )
        sizes.append(intercept / (target * 192))
    # The mean intercept is a fixed fraction of the seed spacing for hard-core Voronoi (about 0.7-0.9).
    assert sizes[0] == pytest.approx(sizes[1], rel=0.15)
    assert 0.5 < sizes[0] < 1.1


def test_precipitate_fractions_are_near_their_targets():
    params = PrecipitateParams(secondary_fraction=0.4, tertiary_fraction=0.03, size_jitter=0.0)
    fractions = np.mean(
        [
            render_precipitates(np.random.default_rng(i), (256, 256), params, IMAGING_PRESETS["clean"]).fractions
            for i in range(4)
        ],
        axis=0,
    )
    assert fractions[1] == pytest.approx(0.4, abs=0.02)
    assert fractions[2] == pytest.approx(0.03, abs=0.012)


def test_precipitate_image_matches_its_mask():
    micrograph = render_precipitates(
        np.random.default_rng(0), (128, 128), PrecipitateParams(), IMAGING_PRESETS["clean"]
    )
    means = [micrograph.image[micrograph.mask == k].mean() for k in range(3)]
    assert means[0] > means[1] > means[2]  # bright matrix, darker secondary, darkest tertiary
    assert len(micrograph.secondary_diameters) > 0


@pytest.mark.parametrize(
    ("field", "low", "high", "measure"),
    [
        ("dose", 1000.0, 10.0, "noise"),
        ("read_noise", 0.0, 0.1, "noise"),
        ("blur_sigma", 0.0, 2.0, "sharpness"),
        ("gradient", 0.0, 0.5, "ramp"),
    ],
)
def test_each_imaging_effect_moves_the_image_the_expected_way(field, low, high, measure):
    rng = np.random.default_rng
    checker = np.kron((np.indices((8, 8)).sum(0) % 2).astype(float), np.ones((8, 8))) * 0.5 + 0.25

    def score(value):
        image = ImagingModel(bit_depth=0, **{field: value}).apply(checker, rng(0))
        if measure == "noise":
            return np.std(image - ImagingModel(bit_depth=0).apply(checker, rng(0)))
        if measure == "sharpness":
            return -np.abs(np.diff(image, axis=1)).max()
        return abs(image[:, :8].mean() - image[:, -8:].mean()) + abs(image[:8].mean() - image[-8:].mean())

    assert score(high) > score(low)


def test_spectra_peaks_sit_at_the_library_positions():
    library = load_phase_library()
    params = SpectrumParams(strain=0.0, texture=0.0, counts=1e6, background=0.0, read_noise=0.0)
    fractions = np.array([1.0, 0.0, 0.0])
    spectrum = render_spectrum(np.random.default_rng(0), library, fractions, params)
    axis = two_theta_axis(params)
    strongest = axis[np.argmax(spectrum)]
    assert strongest == pytest.approx(44.67, abs=0.1)  # ferrite (110)


def test_user_phase_library_from_csv(tmp_path):
    path = tmp_path / "phases.csv"
    path.write_text("phase,two_theta,intensity\nquartz,26.64,100\nquartz,20.86,22\n")
    (quartz,) = load_phase_library(path)
    assert quartz.name == "quartz" and quartz.intensities.max() == 1.0
    with pytest.raises(ValueError, match="lacks column"):
        (tmp_path / "bad.csv").write_text("name,pos\n")
        load_phase_library(tmp_path / "bad.csv")


def test_spectra_datamodule_is_deterministic_and_multilabel():
    dm = SyntheticSpectra(points=512, train_size=8, val_size=4, test_size=4, max_phases=2)
    dm.setup("fit")
    a, b = dm.train_dataset[3], dm.train_dataset[3]
    assert torch.equal(a["spectrum"], b["spectrum"]) and a["spectrum"].shape == (1, 512)
    assert a["labels"].sum() >= 1 and a["fractions"].sum() == pytest.approx(1.0)


def test_precipitate_datamodule_samples_are_pure_functions_of_seed_and_index():
    dm = SyntheticPrecipitates(train_size=4, val_size=2, image_size=64, fresh_each_epoch=True)
    dm.setup("fit")
    first, again = dm.train_dataset[(0, 1)], dm.train_dataset[(0, 1)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    assert not torch.equal(first["mask"], dm.train_dataset[(1, 1)]["mask"])  # a fresh sample next epoch
    assert first["group"] != dm.val_dataset[1]["group"]


@pytest.mark.parametrize("kind", ["grains", "precipitates"])
def test_synth_output_loads_back_through_the_real_data_modules(tmp_path, kind):
    main(
        [
            "synth",
            "--kind",
            kind,
            "--count",
            "8",
            "--out",
            str(tmp_path / kind),
            "--size",
            "64",
            "--bits",
            "16" if kind == "grains" else "8",
        ]
    )
    manifest = tmp_path / kind / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 8
    if kind == "grains":
        dm = MicrographFolder(
            root=tmp_path / kind, manifest=manifest, num_folds=2, split="group", image_size=64, leakage_check="off"
        )
        dm.setup("fit")
        assert dm.train_dataset[0]["image"].shape == (1, 64, 64)
    else:
        dm = SegmentationFolder(
            root=tmp_path / kind, class_names=["matrix", "secondary", "tertiary"], num_folds=2, crop_size=32
        )
        dm.setup("fit")
        assert dm.train_dataset[0]["mask"].shape == (32, 32)
        assert dm.val_dataset[0]["mask"].shape == (64, 64)


def test_twins_and_boundary_particles_are_drawn_and_labelled():
    morphology = GrainMorphology("x", grain_size=0.25, size_jitter=0.0)
    plain = render_grain_micrograph(np.random.default_rng(0), (128, 128), morphology, IMAGING_PRESETS["clean"])
    decorated = render_grain_micrograph(
        np.random.default_rng(0),
        (128, 128),
        morphology,
        IMAGING_PRESETS["clean"],
        twin_probability=1.0,
        boundary_particles=20.0,
    )
    assert not plain.twins.any() and not plain.particles.any()
    assert decorated.twins.any()
    assert decorated.particles.any()
    near_boundary = binary_dilation(decorated.boundaries, iterations=6)
    assert near_boundary[decorated.particles].all()  # particles sit on the boundaries
    assert decorated.image[decorated.particles].mean() < decorated.image[~decorated.particles].mean()
