"""What a dataset's labels are invariant to, and which augmentations would break that."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import albumentations as A


@dataclass(frozen=True)
class LabelInvariances:
    """Declares which changes leave a sample's label true.

    Args:
        rotation: Free and 90° rotations (isotropic microstructure). False for rolled, directional material.
        mirror: Flips and transposes (no handedness in the label).
        scale: Zoom, rescaling crops and resizes. False when the label depends on grain or particle size.
        intensity: Brightness, contrast, gamma, histogram changes. False when grey levels are quantitative
            (e.g. BSE contrast by atomic number, calibrated EBSD or EDS maps).
        colour: Hue, saturation and channel changes. False for greyscale SEM, which has no colour.
    """

    rotation: bool = True
    mirror: bool = True
    scale: bool = True
    intensity: bool = True
    colour: bool = False


class PhysicsViolationError(ValueError):
    """An augmentation changes something the dataset's labels depend on."""


def _nonzero_range(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, dict):
        return any(_nonzero_range(v) for v in value.values())
    return any(v != 0 for v in value)


def _scale_range_not_one(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, dict):
        return any(_scale_range_not_one(v) for v in value.values())
    if isinstance(value, int | float):
        return value != 1
    return any(v != 1 for v in value)


Rule = tuple[str, str, Callable[[A.BasicTransform], bool]]
_ALWAYS: Callable[[A.BasicTransform], bool] = lambda _: True  # noqa: E731

# (transform class name, invariance it needs, whether this configuration actually uses it)
RULES: tuple[Rule, ...] = (
    ("Rotate", "rotation", lambda t: _nonzero_range(getattr(t, "limit", 1))),
    ("SafeRotate", "rotation", lambda t: _nonzero_range(getattr(t, "limit", 1))),
    ("RandomRotate90", "rotation", _ALWAYS),
    ("D4", "rotation", _ALWAYS),
    ("D4", "mirror", _ALWAYS),
    ("Transpose", "mirror", _ALWAYS),
    ("HorizontalFlip", "mirror", _ALWAYS),
    ("VerticalFlip", "mirror", _ALWAYS),
    ("SquareSymmetry", "rotation", _ALWAYS),
    ("Affine", "rotation", lambda t: _nonzero_range(getattr(t, "rotate", 0))),
    ("Affine", "scale", lambda t: _scale_range_not_one(getattr(t, "scale", 1))),
    ("ShiftScaleRotate", "rotation", lambda t: _nonzero_range(getattr(t, "rotate_limit", 0))),
    ("ShiftScaleRotate", "scale", lambda t: _nonzero_range(getattr(t, "scale_limit", 0))),
    ("RandomResizedCrop", "scale", lambda t: _scale_range_not_one(getattr(t, "scale", 1))),
    ("RandomSizedCrop", "scale", _ALWAYS),
    ("RandomScale", "scale", lambda t: _nonzero_range(getattr(t, "scale_limit", 0))),
    ("Downscale", "scale", _ALWAYS),
    ("RandomBrightnessContrast", "intensity", _ALWAYS),
    ("RandomGamma", "intensity", _ALWAYS),
    ("CLAHE", "intensity", _ALWAYS),
    ("Equalize", "intensity", _ALWAYS),
    ("RandomToneCurve", "intensity", _ALWAYS),
    ("Posterize", "intensity", _ALWAYS),
    (
        "ColorJitter",
        "intensity",
        lambda t: _nonzero_range(getattr(t, "brightness", 0)) or _nonzero_range(getattr(t, "contrast", 0)),
    ),
    (
        "ColorJitter",
        "colour",
        lambda t: _nonzero_range(getattr(t, "hue", 0)) or _nonzero_range(getattr(t, "saturation", 0)),
    ),
    ("HueSaturationValue", "colour", _ALWAYS),
    ("RGBShift", "colour", _ALWAYS),
    ("ChannelShuffle", "colour", _ALWAYS),
    ("ChannelDropout", "colour", _ALWAYS),
    ("FancyPCA", "colour", _ALWAYS),
    ("ToSepia", "colour", _ALWAYS),
    ("PlanckianJitter", "colour", _ALWAYS),
)

WHY = {
    "rotation": "rotates the image",
    "mirror": "mirrors the image",
    "scale": "changes the apparent magnification",
    "intensity": "changes grey levels",
    "colour": "changes colours",
}


def leaves(transform: A.BasicTransform) -> Iterator[A.BasicTransform]:
    """Every transform inside (nested) Compose, OneOf, SomeOf … blocks, or the transform itself."""
    children = getattr(transform, "transforms", None)
    if children is None:
        yield transform
        return
    for child in children:
        yield from leaves(child)


def check_augmentation(transform: A.BasicTransform | None, invariances: LabelInvariances, dataset: str) -> None:
    """Raise if any transform in the pipeline needs an invariance the dataset's labels lack.

    Raises:
        PhysicsViolationError: Naming the transform, what it does and the invariance it breaks.
    """
    if transform is None:
        return
    for leaf in leaves(transform):
        name = type(leaf).__name__
        for rule_name, invariance, applies in RULES:
            if name == rule_name and not getattr(invariances, invariance) and applies(leaf):
                raise PhysicsViolationError(
                    f"augmentation {name} {WHY[invariance]}, but {dataset} declares its labels are not invariant "
                    f"to {invariance} (invariances.{invariance}=false). Remove {name} from the pipeline, or "
                    f"set invariances.{invariance}=true if the labels really do not depend on it."
                )
