import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from smalldata_pl.datamodules import SyntheticGrains
from smalldata_pl.datasets.sampling import EpochSampler
from smalldata_pl.generators import (
    GRAIN_MORPHOLOGIES,
    IMAGING_PRESETS,
    GrainMorphology,
    ImagingModel,
    mean_intercept_length,
    render_grain_micrograph,
    tessellate,
)


def test_same_seed_and_index_give_identical_images():
    dm = SyntheticGrains(train_size=8, val_size=4, image_size=48)
    dm.setup("fit")
    a, b = dm.train_dataset[3], SyntheticGrains(train_size=8, val_size=4, image_size=48)
    b.setup("fit")
    assert torch.equal(a["image"], b.train_dataset[3]["image"])
    assert not torch.equal(a["image"], dm.train_dataset[4]["image"])
    assert {"image", "label", "group"} <= set(a)


def test_splits_draw_disjoint_samples_and_balanced_classes():
    dm = SyntheticGrains(train_size=8, val_size=8, image_size=32)
    dm.setup("fit")
    train_groups = {dm.train_dataset[i]["group"] for i in range(8)}
    val_groups = {dm.val_dataset[i]["group"] for i in range(8)}
    assert not train_groups & val_groups
    assert sorted(int(dm.train_dataset[i]["label"]) for i in range(8)) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_loader_batches_identical_for_0_and_2_workers():
    def batches(workers):
        dm = SyntheticGrains(train_size=12, val_size=4, image_size=32, batch_size=4, num_workers=workers)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        return [b["image"] for b in loader]

    for x, y in zip(batches(0), batches(2), strict=True):
        assert torch.equal(x, y)


def test_epoch_sampler_order_changes_with_epoch_but_repeats_with_seed():
    sampler = EpochSampler(10, shuffle=True, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for _, i in first] != [i for _, i in second]
    again = EpochSampler(10, shuffle=True, seed=3)
    again.set_epoch(1)
    assert list(again) == second


def test_epoch_samples_cycles_a_small_set_in_reshuffled_passes_with_distinct_rounds():
    sampler = EpochSampler(6, shuffle=True, seed=3, min_samples=16)
    sampler.set_epoch(2)
    draws = list(sampler)
    assert len(draws) == len(sampler) == 18  # whole passes: every image equally often
    passes = [draws[i : i + 6] for i in range(0, 18, 6)]
    assert all(sorted(i for _, i in p) == list(range(6)) for p in passes)
    assert [{r for r, _ in p} for p in passes] == [{6}, {7}, {8}]  # rounds epoch * passes + pass: new augmentations
    single = EpochSampler(6, shuffle=True, seed=3)
    single.set_epoch(2)
    assert [i for _, i in passes[0]] == [i for _, i in single]  # the first pass is the one-pass order


def test_morphologies_differ_in_grain_size_and_elongation():
    rng = np.random.default_rng
    fine, coarse, elongated, _ = (render_grain_micrograph(rng([0, 1]), (128, 128), m) for m in GRAIN_MORPHOLOGIES)
    assert fine.mean_intercept < coarse.mean_intercept
    rows = np.count_nonzero(np.diff(elongated.instances, axis=0))  # crossings walking down the columns
    cols = np.count_nonzero(np.diff(elongated.instances, axis=1))  # crossings walking along the rows
    assert rows > 1.5 * cols  # grains elongated horizontally are crossed more often going down


def test_tessellation_has_one_grain_per_seed_and_boundaries_on_edges():
    seeds = np.array([[10.0, 10.0], [10.0, 50.0], [50.0, 30.0]])
    instances = tessellate(seeds, (64, 64))
    assert set(np.unique(instances)) == {0, 1, 2}
    micrograph = render_grain_micrograph(
        np.random.default_rng(0), (64, 64), GrainMorphology("x", 0.3), IMAGING_PRESETS["clean"]
    )
    edges = np.zeros_like(micrograph.boundaries)
    edges[:, :-1] |= np.diff(micrograph.instances, axis=1) != 0
    edges[:-1, :] |= np.diff(micrograph.instances, axis=0) != 0
    edges[:, 1:] |= np.diff(micrograph.instances, axis=1) != 0
    edges[1:, :] |= np.diff(micrograph.instances, axis=0) != 0
    assert micrograph.boundaries.any()
    assert np.all(edges[micrograph.boundaries])
    assert micrograph.grain_areas.sum() == 64 * 64


def test_mean_intercept_of_stripes():
    stripes = np.repeat(np.arange(8), 8)[None, :].repeat(64, axis=0)  # vertical bands 8 px wide
    assert mean_intercept_length(stripes) == pytest.approx(64 * 63 * 2 / (7 * 64), rel=1e-6)


def test_lower_dose_gives_more_noise():
    flat = np.full((64, 64), 0.5)
    noisy = [ImagingModel(dose=d, bit_depth=0).apply(flat, np.random.default_rng(0)).std() for d in (10, 1000)]
    assert noisy[0] > 3 * noisy[1]


def test_unknown_imaging_preset_is_rejected():
    with pytest.raises(ValueError, match="unknown imaging preset"):
        SyntheticGrains(train_size=2, val_size=2, imaging="xray")


def test_dataloader_collates_dict_samples():
    dm = SyntheticGrains(train_size=4, val_size=4, image_size=32, batch_size=4)
    dm.setup("fit")
    batch = next(iter(DataLoader(dm.val_dataset, batch_size=4)))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["label"].dtype == torch.long
