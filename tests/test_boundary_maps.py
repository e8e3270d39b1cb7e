"""Boundary maps refined by the image's own edges and closed into grains, alone and through `smalldata apply`."""

from pathlib import Path

import numpy as np
import pytest
from conftest import write_image, write_segmenter_config
from PIL import Image
from skimage.color import rgb2gray
from skimage.filters import sobel

from smalldata_pl.cli import main
from smalldata_pl.inference import Predictor, load_predictor
from smalldata_pl.inference.boundary_maps import EPS, calibrated_edges, close_boundaries, edge_strength, fuse_edges
from smalldata_pl.inference.metallography import grain_labels, score_boundaries
from smalldata_pl.io.images import read_image
from smalldata_pl.tasks import MicrographSegmenter


def grains_of_equal_brightness() -> np.ndarray:
    """Left and right halves etched to different colours of the same grey value."""
    left = np.array([0.6, 0.3, 0.2])
    right = np.array([0.2, 0.3, 0.0])
    weights = np.array([0.2125, 0.7154, 0.0721])  # skimage's rgb2gray
    right[2] = (left @ weights - right[:2] @ weights[:2]) / weights[2]
    image = np.empty((40, 40, 3))
    image[:, :20], image[:, 20:] = left, right
    return image


def test_a_colour_boundary_invisible_in_grey_is_an_edge():
    image = grains_of_equal_brightness()
    assert sobel(rgb2gray(image)).max() < 1e-6  # no grey edge at all
    strength = edge_strength(image)
    assert strength[:, 19:21].min() > 0.5  # the colour step is an edge ...
    assert strength[:, :12].max() < 0.5 and strength[:, 28:].max() < 0.5  # ... the flat grains are not


def test_edge_strength_does_not_depend_on_contrast_and_is_zero_without_edges():
    rng = np.random.default_rng(0)
    image = np.clip(0.5 + 0.05 * rng.standard_normal((48, 48)), 0, 1)
    image[:, 24:] += 0.3
    np.testing.assert_allclose(edge_strength(0.2 * image), edge_strength(image), atol=1e-5)
    assert not edge_strength(np.full((16, 16), 0.4)).any()


def test_fuse_edges_weights_network_and_edges_and_refuses_bad_input():
    image = grains_of_equal_brightness()
    probability = np.full((40, 40), 0.2, dtype=np.float32)
    np.testing.assert_array_equal(fuse_edges(probability, image, 0.0), probability)
    np.testing.assert_allclose(fuse_edges(probability, image, 1.0), edge_strength(image))
    np.testing.assert_allclose(fuse_edges(probability, image, 0.5), 0.1 + 0.5 * edge_strength(image), rtol=1e-6)
    with pytest.raises(ValueError, match=r"in \[0, 1\].*'auto'"):
        fuse_edges(probability, image, 1.5)
    with pytest.raises(ValueError, match="'auto'"):
        fuse_edges(probability, image, "high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ in size"):
        fuse_edges(probability[:30], image, 0.5)


def test_auto_fusion_raises_a_faint_boundary_that_the_edges_back():
    image = grains_of_equal_brightness()
    probability = np.full((40, 40), 0.05)
    probability[:, 19:21] = 0.9
    probability[10:22, 19:21] = 0.35  # the network half sees this stretch of the colour boundary
    fused = fuse_edges(probability, image, "auto")
    assert fused[:, 19:21].min() > 0.5  # the whole boundary, the faint stretch included
    assert fused[:, :12].max() < 0.5 and fused[:, 28:].max() < 0.5
    assert (fuse_edges(probability, image, 0.0)[10:22, 19:21] < 0.5).all()  # the network alone misses it


def test_auto_fusion_gives_no_weight_to_edges_the_network_does_not_back():
    rng = np.random.default_rng(0)
    image = np.clip(0.6 + 0.02 * rng.standard_normal((64, 64)), 0, 1)
    image[8::12] = 0.2  # polishing scratches: the image's strongest edges, but no boundary
    probability = np.clip(0.05 + 0.02 * rng.standard_normal((64, 64)), 0, 1)
    probability[:, 30:33] = 0.8  # the boundary the network sees, with no contrast in the image
    edges = edge_strength(image) > 0.9
    assert edges[:, :20].sum(axis=0).min() >= 2 * len(range(8, 64, 12))  # both flanks of every scratch
    assert (fuse_edges(probability, image, 0.75)[edges] >= 0.5).all()  # a fixed share draws the scratches
    fused = fuse_edges(probability, image, "auto")
    np.testing.assert_array_equal(fused >= 0.5, probability >= 0.5)
    assert calibrated_edges(probability, image)[edges].max() < 0.2  # strong edges mean no boundary on this image
    flat = np.full((64, 64), 0.5)  # an image without edges leaves the map as it is
    np.testing.assert_allclose(fuse_edges(probability, flat, "auto"), np.clip(probability, EPS, 1 - EPS), atol=1e-6)


def grain_probability(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Brick-shaped grains meeting at triple junctions, as real grains do, and a noisy boundary probability of them
    with gaps in two boundaries and two spurs into grains."""
    truth = np.zeros((96, 96), dtype=bool)
    truth[12::24] = True
    for top in range(0, 96, 24):  # vertical boundaries offset by half a brick from one row of grains to the next
        truth[top + 13 : top + 36, (top // 2 + 6) % 24 :: 24] = True
    probability = np.clip(np.where(truth, 0.8, 0.05) + 0.05 * rng.standard_normal(truth.shape), 0, 1)
    probability[60, 44:50] = 0.3  # gaps: faint stretches of real boundaries
    probability[40:48, 42] = 0.3
    probability[70:76, 20:22] = 0.9  # spurs into grains, closing nothing
    probability[44:46, 4:10] = 0.9
    return probability, truth


def test_closing_fills_gaps_and_drops_spurs_so_every_grain_is_counted():
    probability, truth = grain_probability(np.random.default_rng(1))
    cut = probability >= 0.5
    closed = close_boundaries(probability)
    true_grains = int(grain_labels(truth).max())
    assert int(grain_labels(cut).max()) < true_grains  # each gap merges two grains
    assert int(grain_labels(closed).max()) == true_grains
    assert score_boundaries([closed], [truth]).precision > score_boundaries([cut], [truth]).precision
    assert score_boundaries([closed], [truth]).recall >= score_boundaries([cut], [truth]).recall


def test_closing_keeps_a_boundary_the_map_sees_only_in_part():
    probability = np.full((40, 40), 0.05)
    probability[:, 20] = 0.9
    probability[14:26, 20] = 0.05  # a stretch the map misses: the grain interiors join through it
    closed = close_boundaries(probability)
    assert int(grain_labels(closed).max()) == 2
    assert closed[:, 18:22].any(axis=1).all()  # the line runs on through the missed stretch


def test_closing_merges_grains_split_by_a_weak_line_and_keeps_a_map_without_grain():
    probability = np.full((40, 40), 0.02)
    probability[:, 20] = 0.6  # a faint line between two grains
    assert close_boundaries(probability, merge_threshold=0.4)[:, 19:21].any(axis=1).all()
    assert not close_boundaries(probability, merge_threshold=0.7).any()  # too faint at this bar: one grain
    sure = np.full((8, 8), 0.9)
    np.testing.assert_array_equal(close_boundaries(sure), sure >= 0.5)  # no grain interior: nothing to grow


def test_only_boundary_segmenters_take_the_boundary_options():
    model = MicrographSegmenter(backbone="test_resnet", num_classes=3, in_chans=1)
    with pytest.raises(ValueError, match="boundary_class"):
        Predictor(model, {"in_chans": 1}, edge_weight=0.5)
    with pytest.raises(ValueError, match="boundary_class"):
        Predictor(model, {"in_chans": 1}, close_boundaries=True)
    with pytest.raises(ValueError, match="boundary_class"):
        Predictor(model, {"in_chans": 1}, edge_weight="auto")


@pytest.mark.slow
def test_apply_fuses_the_image_edges_and_closes_the_grains(tmp_path):
    config = write_segmenter_config(tmp_path / "grains.yaml", boundary_class=1)
    main(["fit", "-c", str(config)])
    checkpoint = next(Path("lightning_logs").rglob("last.ckpt"))
    rng = np.random.default_rng(3)
    image = np.full((48, 40), 90, dtype=np.uint8)
    image[:, 20:], image[24:, :20] = 170, 40
    path = write_image(
        tmp_path / "new" / "grains.png", np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    )
    edges = edge_strength(read_image(path))

    plain = load_predictor(checkpoint).predict(path).mask
    fused = load_predictor(checkpoint, edge_weight=1.0).predict(path)
    only_edges = fused.mask
    assert plain is not None and only_edges is not None and fused.probabilities is not None
    # With all the weight on the image's edges the network no longer decides: boundary where the edges are.
    assert np.mean((only_edges == 1) == (edges > 0.5)) > 0.999
    # The probabilities a prediction carries are those its mask was cut from: the fused ones.
    np.testing.assert_allclose(fused.probabilities[1], np.clip(edges, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(fused.probabilities.argmax(axis=0), only_edges)
    assert not np.array_equal(plain, only_edges)

    # Calibrated fusion through the command line is the Python API's, image by image.
    main(["apply", str(checkpoint), str(path), "--out", "auto", "--edge_weight", "auto"])
    auto = load_predictor(checkpoint, edge_weight="auto").predict(path).mask
    np.testing.assert_array_equal(np.asarray(Image.open("auto/masks/grains.png")), auto)

    main(["apply", str(checkpoint), str(path), "--out", "out", "--edge_weight", "1", "--close_boundaries"])
    closed = np.asarray(Image.open("out/masks/grains.png"))
    np.testing.assert_array_equal(closed == 1, close_boundaries(edges))
    assert int(grain_labels(closed == 1).max()) == 3  # the three grains of the image, closed
