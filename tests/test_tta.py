"""Test-time augmentation: D4 views and their inverses, the views invariances allow, TTA in the Predictor."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from smalldata_pl.inference import Predictor
from smalldata_pl.inference.tta import segment
from smalldata_pl.transforms.views import allowed_views

ALL_NAMES = ["identity", "rot90", "rot180", "rot270", "transpose", "vflip", "anti_transpose", "hflip"]


def _preprocessing(rotation: bool | None, mirror: bool | None, **extra: object) -> dict:
    record: dict = {"task": "toy", "class_names": ["a", "b"], "in_chans": 1, "mean": [0.5], "std": [0.25], **extra}
    if rotation is not None and mirror is not None:
        record["invariances"] = {"rotation": rotation, "mirror": mirror, "scale": True, "intensity": True}
    return record


class PooledClassifier(nn.Module):
    """Logits from the mean and mean square of the image: exactly invariant to every D4 view."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.stack([images.mean((1, 2, 3)), (images**2).mean((1, 2, 3))], dim=1))


class PixelClassifier(nn.Module):
    """Logits from a fixed weighting of every pixel: changes under every view."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(size * size, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))


class ThresholdSegmenter(nn.Module):
    """Class 1 where the normalised pixel is above 0 (the raw image above 0.5): a per-pixel function."""

    tile_size = None
    tile_overlap = 0

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([-images, images], dim=1) * self.scale

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self(images)


def test_views_are_exact_inverses_and_the_eight_d4_elements():
    x = torch.randn(2, 3, 5, 7)  # non-square: quarter turns and transposes swap height and width
    views = allowed_views(rotation=True, mirror=True)
    assert [v.name for v in views] == ALL_NAMES
    for view in views:
        assert torch.equal(view.inverse(view.forward(x)), x)
        assert torch.equal(view.forward(view.inverse(x)), x)
    by_name = {v.name: v.forward(x) for v in views}
    assert torch.equal(by_name["hflip"], x.flip(-1))
    assert torch.equal(by_name["vflip"], x.flip(-2))
    assert torch.equal(by_name["rot180"], x.flip(-1).flip(-2))
    assert torch.equal(by_name["transpose"], x.transpose(-2, -1))
    assert torch.equal(by_name["rot90"], torch.rot90(x, 1, dims=(-2, -1)))
    square = torch.randn(1, 1, 6, 6)
    outputs = [v.forward(square) for v in views]
    assert all(not torch.equal(a, b) for i, a in enumerate(outputs) for b in outputs[i + 1 :])


@pytest.mark.parametrize(
    ("rotation", "mirror", "expected"),
    [
        (True, True, ALL_NAMES),
        (True, False, ["identity", "rot90", "rot180", "rot270"]),
        (False, True, ["identity", "transpose", "vflip", "anti_transpose", "hflip"]),
        (False, False, ["identity"]),
    ],
)
def test_allowed_views_per_invariance_combination(rotation, mirror, expected):
    views = allowed_views(rotation, mirror)
    assert [v.name for v in views] == expected
    assert all(v.rotates <= rotation and v.mirrors <= mirror for v in views)


def test_tta_of_a_d4_invariant_classifier_equals_no_tta():
    torch.manual_seed(0)
    model = PooledClassifier()
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    plain = Predictor(model, _preprocessing(True, True, image_size=16)).predict(image)
    augmented = Predictor(model, _preprocessing(True, True, image_size=16), tta=True).predict(image)
    assert (plain.views, augmented.views) == (1, 8)
    assert plain.probabilities is not None and augmented.probabilities is not None
    np.testing.assert_allclose(augmented.probabilities, plain.probabilities, atol=1e-6)
    # The same views do change a classifier that is not invariant, so the equality above is not vacuous.
    pixel = PixelClassifier(16)
    varied = Predictor(pixel, _preprocessing(True, True, image_size=16), tta=True).predict(image).probabilities
    assert varied is not None
    assert (
        np.abs(varied - Predictor(pixel, _preprocessing(True, True, image_size=16)).predict(image).probabilities).max()
        > 1e-3
    )
    np.testing.assert_allclose(augmented.logits, plain.logits, atol=1e-6)  # logits are the identity view's


def test_segmentation_tta_maps_every_view_back_onto_the_image():
    image = np.random.default_rng(1).uniform(0.02, 0.98, (20, 28)).astype(np.float32)  # non-square, no symmetry
    image[np.abs(image - 0.5) < 0.01] = 0.3  # no pixel sits on the threshold
    truth = (image > 0.5).astype(np.int64)
    model = ThresholdSegmenter()
    plain = Predictor(model, _preprocessing(True, True)).predict(image)
    augmented = Predictor(model, _preprocessing(True, True), tta=True).predict(image)
    assert augmented.views == 8
    np.testing.assert_array_equal(plain.mask, truth)
    np.testing.assert_array_equal(augmented.mask, truth)
    # Averaging views without mapping them back would blur the mask: the inverse is what keeps it aligned.
    square = torch.from_numpy(image[:20, :20] - 0.5)[None, None]  # centred like the normalised input
    views = allowed_views(True, True)
    unaligned = sum(model(v.forward(square)).softmax(dim=1) for v in views) / len(views)
    aligned = segment(model, square, views)
    assert (unaligned.argmax(dim=1) != torch.from_numpy(truth[:20, :20])).float().mean() > 0.2
    assert torch.equal(aligned.argmax(dim=1)[0], torch.from_numpy(truth[:20, :20]))


@pytest.mark.parametrize(
    ("rotation", "mirror", "names", "logged"),
    [
        (False, True, ["identity", "transpose", "vflip", "anti_transpose", "hflip"], "not invariant to rotation"),
        (True, False, ["identity", "rot90", "rot180", "rot270"], "not invariant to mirror"),
        (False, False, ["identity"], "only the identity view is used"),
        (None, None, ["identity"], "declares no invariances"),
    ],
)
def test_tta_uses_only_the_views_the_invariances_allow_and_says_so(rotation, mirror, names, logged, caplog):
    with caplog.at_level(logging.INFO, logger="smalldata_pl.inference.tta"):
        predictor = Predictor(PooledClassifier(), _preprocessing(rotation, mirror, image_size=8), tta=True)
    assert [v.name for v in predictor.views] == names
    assert logged in caplog.text
    assert predictor.predict(np.zeros((8, 8), np.float32)).views == len(names)
    assert [v.name for v in Predictor(PooledClassifier(), _preprocessing(True, True)).views] == ["identity"]
