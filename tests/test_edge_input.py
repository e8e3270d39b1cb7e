"""The edge map as a network input: the map itself, the widened stem, and a segmenter that sees it end to end."""

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import timm
import torch
from conftest import write_segmenter_config
from skimage.filters import gaussian, sobel, threshold_otsu
from torch import nn

from smalldata_pl.cli import main
from smalldata_pl.inference import load_predictor
from smalldata_pl.inference.export import export_model
from smalldata_pl.models.edge_input import EdgeStack, EdgeStrength, otsu_threshold, replace_input_conv
from smalldata_pl.tasks import MicrographSegmenter


def _reference_strength(image: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """scikit-image's colour Sobel of the blurred channels, scaled so that its Otsu threshold is 0.5."""
    magnitude = np.sqrt(sum(sobel(gaussian(image[..., c], sigma)) ** 2 for c in range(image.shape[-1])))
    return np.clip(magnitude / (2 * threshold_otsu(magnitude)), 0.0, 1.0)


def test_edge_strength_in_the_graph_is_scikit_images_map():
    rng = np.random.default_rng(0)
    grains = np.kron(rng.random((6, 7, 3)), np.ones((9, 8, 1)))  # blocks of one colour each, off a square
    image = np.clip(grains + 0.05 * rng.standard_normal(grains.shape), 0, 1)
    for channels in (image, image[..., :1]):
        tensor = torch.from_numpy(channels.transpose(2, 0, 1)).float()[None]
        strength = EdgeStrength()(torch.cat([tensor, 0.3 * tensor]))  # a batch: each image scaled by its own
        assert strength.shape == (2, 1, 54, 56)
        np.testing.assert_allclose(strength[0, 0].numpy(), _reference_strength(channels), atol=1e-5)
        np.testing.assert_allclose(strength[1, 0].numpy(), strength[0, 0].numpy(), atol=1e-5)


def test_otsu_threshold_matches_scikit_image_and_a_flat_image_has_no_edges():
    rows = torch.from_numpy(np.random.default_rng(1).gamma(2.0, size=(3, 500)))
    expected = [threshold_otsu(row.numpy()) for row in rows]
    np.testing.assert_allclose(otsu_threshold(rows).numpy(), expected, rtol=1e-6)
    assert not EdgeStrength()(torch.full((1, 3, 16, 16), 0.4)).any()


def test_an_edge_stack_has_one_map_per_width_and_fine_texture_fades_at_a_wide_one():
    image = torch.zeros(1, 1, 64, 64)
    image[..., 32:] = 1.0  # a boundary: a step at column 32
    image[..., 4:24, :] += 0.3 * (torch.arange(64) % 4 < 2).float()  # striations: 2 px lines, 4 px apart
    stack = EdgeStack([1.0, 2.0, 4.0])(image)
    assert stack.shape == (1, 3, 64, 64)
    for channel, sigma in enumerate([1.0, 2.0, 4.0]):
        torch.testing.assert_close(stack[:, channel : channel + 1], EdgeStrength(sigma)(image))
    texture, step = stack[0, :, 8:20, 8:24].mean(dim=(1, 2)), stack[0, :, 40:56, 31:33].mean(dim=(1, 2))
    assert (step > 0.5).all()  # the boundary is an edge at every width ...
    assert texture[0] > 0.1 and texture[1:].max() < 0.5 * texture[0]  # ... the striations fade at wider ones
    with pytest.raises(ValueError, match="positive widths"):
        EdgeStack([1.0, 0.0])
    with pytest.raises(ValueError, match="set edge_input"):
        MicrographSegmenter("test_resnet", edge_sigmas=[1.0, 2.0])
    model = MicrographSegmenter("test_resnet", in_chans=3, edge_input="only", edge_sigmas=[1.0, 2.0, 4.0])
    assert model.encoder_input(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert model(torch.rand(2, 3, 37, 45)).shape == (2, 2, 37, 45)


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_a_widened_stem_computes_what_it_did_until_it_learns(name):
    model = timm.create_model(name, features_only=True).eval()
    image = torch.randn(2, 3, 32, 32)
    before = model(image)
    replace_input_conv(model, 1)
    after = model(torch.cat([image, torch.rand(2, 1, 32, 32)], dim=1))
    for old, new in zip(before, after, strict=True):
        torch.testing.assert_close(new, old)
    with pytest.raises(ValueError, match="first convolution"):
        replace_input_conv(nn.Sequential(nn.Linear(3, 3)), 1)


def test_a_stem_with_a_bias_keeps_it():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
    model.pretrained_cfg = {"first_conv": "0"}
    image = torch.randn(1, 1, 8, 8)
    before = model(image)
    replace_input_conv(model, 2)
    assert model[0].in_channels == 3 and model[0].bias is not None
    torch.testing.assert_close(model(torch.cat([image, torch.randn(1, 2, 8, 8)], dim=1)), before)


def test_the_segmenter_learns_from_its_edge_channel():
    model = MicrographSegmenter("test_resnet", in_chans=3, boundary_class=1, edge_input="channel")
    stem = model.encoder.get_submodule("conv1.0")
    assert stem.in_channels == 4 and not stem.weight[:, 3].any()
    image = torch.rand(2, 3, 37, 45)  # off the stride: the edge map is taken of the padded image
    logits = model(image)
    assert logits.shape == (2, 2, 37, 45)
    logits[:, 1].mean().backward()
    assert stem.weight.grad[:, 3].abs().sum() > 0
    assert "encoder.conv1.0.weight" in model.param_groups["stem"]


def test_a_segmenter_that_sees_only_edges_ignores_colour_and_contrast():
    model = MicrographSegmenter("test_resnet", in_chans=3, boundary_class=1, edge_input="only").eval()
    stem = model.encoder.get_submodule("conv1.0")
    assert stem.in_channels == 1 and not stem.weight.any()
    torch.nn.init.normal_(stem.weight)  # as if trained
    image = torch.rand(1, 3, 40, 40)
    recoloured = 0.5 * image[:, [2, 0, 1]] + 0.2  # other colours, half the contrast: the same edges
    torch.testing.assert_close(model(recoloured), model(image), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="'channel' or 'only'"):
        MicrographSegmenter("test_resnet", edge_input="both")


@pytest.mark.slow
def test_an_edge_input_segmenter_fits_predicts_and_exports_through_the_cli(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    main(["fit", "-c", str(write_segmenter_config(tmp_path / "seg.yaml", edge_input="channel"))])
    checkpoint = next((tmp_path / "lightning_logs").rglob("last.ckpt"))
    model = load_predictor(checkpoint).model
    assert model.edges is not None and model.encoder.get_submodule("conv1.0").in_channels == 2
    image = torch.rand(1, 1, 40, 52)
    with torch.inference_mode():
        expected = model(image).numpy()
    session = onnxruntime.InferenceSession(
        export_model(checkpoint, tmp_path / "seg.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(session.run(["logits"], {"image": image.numpy()})[0], expected, rtol=0, atol=1e-4)
