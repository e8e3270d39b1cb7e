"""Albumentations pipelines from YAML: named presets, Albumentations' own serialised form, or a transform list."""

from typing import Any

import albumentations as A


def micrograph_preset(image_size: int | None = None) -> A.Compose:
    """Flips and 90° rotations (D4), small free rotations, scale-bounded crops, photometric changes, noise, blur.

    Every transform keeps an isotropic micrograph a valid micrograph of the same class; datasets whose labels
    depend on scale, direction or absolute grey level must not use all of them.
    """
    crop = (
        [A.RandomResizedCrop((image_size, image_size), scale=(0.6, 1.0), ratio=(0.85, 1.18), p=1.0)]
        if image_size
        else []
    )
    return A.Compose(
        [
            A.D4(p=1.0),
            A.Rotate(limit=10, border_mode=4, p=0.3),  # 4 = cv2.BORDER_REFLECT_101
            *crop,
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.7),
            A.RandomGamma(gamma_limit=(85, 115), p=0.3),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
            A.ShotNoise(scale_range=(0.001, 0.01), p=0.2),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.2, 1.0), p=0.2),
        ]
    )


PRESETS = {"micrograph": micrograph_preset}


def build_augmentation(spec: str | dict | list | None, image_size: int | None = None) -> A.Compose | None:
    """Build the training augmentation from a config value.

    Args:
        spec: ``None`` or ``"none"``; a preset name (``micrograph``); a dict in Albumentations' serialised form
            (``A.to_dict`` output, with ``transform`` or ``__class_fullname__``); or a list of
            ``{"TransformName": {args}}`` entries applied in order.
        image_size: Output side for presets that crop and resize.

    Returns:
        An Albumentations ``Compose``, or ``None`` for no augmentation.

    Raises:
        ValueError: For an unknown preset or transform name.
    """
    if spec is None or spec == "none":
        return None
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown augmentation preset {spec!r}; choose one of {['none', *sorted(PRESETS)]}")
        return PRESETS[spec](image_size)
    if isinstance(spec, dict):
        transform = A.from_dict(spec if "transform" in spec else {"transform": spec})
        return transform if isinstance(transform, A.Compose) else A.Compose([transform])
    return A.Compose([_transform_from_entry(entry) for entry in spec])


def _transform_from_entry(entry: Any) -> A.BasicTransform:
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ValueError(f"each augmentation list entry must be {{TransformName: {{args}}}}, got {entry!r}")
    name, args = next(iter(entry.items()))
    cls = getattr(A, name, None)
    if cls is None:
        raise ValueError(f"unknown Albumentations transform {name!r}")
    return cls(**(args or {}))
