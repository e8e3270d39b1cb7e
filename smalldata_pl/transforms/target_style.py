"""Target-style augmentation: synthetic training images given the look of unlabelled real target images."""

from collections.abc import Sequence
from typing import Any, Literal, get_args

import albumentations as A
import numpy as np

from smalldata_pl.transforms.pipeline import to_channels

# How synthetic images take the target's style: histogram matching (grey levels and colour per channel), Fourier
# domain adaptation (the low-frequency amplitude spectrum: illumination, shading, colour cast), or not at all.
TargetStyle = Literal["none", "histogram", "fda"]
TARGET_STYLES: tuple[str, ...] = get_args(TargetStyle)


def check_target_style(style: str) -> None:
    """Raise ``ValueError`` naming the choices if ``style`` is not a target style."""
    if style not in TARGET_STYLES:
        raise ValueError(f"unknown target_style {style!r}; choose one of {list(TARGET_STYLES)}")


class _PreloadedReferences:
    """Gives albumentations' domain-adaptation transforms their references at construction.

    Their 2.0 API wants the reference images with every call under ``metadata_key``; a training pipeline calls
    its transforms with ``image`` and ``mask`` only, so the references are added to the call's data here. The
    reference is still drawn by the transform's own seeded ``py_random``, so a sample's style is a pure function of
    its seed.
    """

    references: list[np.ndarray]
    metadata_key: str

    def __init__(self, references: Sequence[np.ndarray], **kwargs: Any) -> None:
        super().__init__(metadata_key="target_references", **kwargs)  # type: ignore[call-arg]
        self.references = list(references)

    @property
    def targets_as_params(self) -> list[str]:
        return []  # the references are not a call argument

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return super().get_params_dependent_on_data(params, {**data, self.metadata_key: self.references})  # type: ignore[misc]


class TargetHistogramMatching(_PreloadedReferences, A.HistogramMatching):
    """``A.HistogramMatching`` to a randomly drawn target image, each channel separately.

    Args:
        references: Target images, float32 ``(H, W, C)`` in [0, 1] with the channels of the training images.
        blend_ratio: Range of the blend between the original (0) and the fully matched image (1).
        p: Probability of applying it to a sample.
    """

    def __init__(
        self, references: Sequence[np.ndarray], blend_ratio: tuple[float, float] = (0.5, 1.0), p: float = 0.5
    ) -> None:
        super().__init__(references, blend_ratio=blend_ratio, p=p)


class TargetFDA(_PreloadedReferences, A.FDA):
    """``A.FDA`` (Fourier domain adaptation) to a randomly drawn target image.

    Args:
        references: Target images, float32 ``(H, W, C)`` in [0, 1] with the channels of the training images.
        beta_limit: Range of the swapped low-frequency window, as a fraction of the spectrum (at most 0.5).
        p: Probability of applying it to a sample.
    """

    def __init__(
        self, references: Sequence[np.ndarray], beta_limit: tuple[float, float] = (0.01, 0.1), p: float = 0.5
    ) -> None:
        super().__init__(references, beta_limit=beta_limit, p=p)


def target_style_transform(
    style: str, references: Sequence[np.ndarray], in_chans: int, p: float = 0.5
) -> A.BasicTransform | None:
    """The transform that styles synthetic training images like ``references``; ``None`` for ``style="none"``.

    References are converted to ``in_chans`` channels the way training images are: with ``in_chans=3`` a grey
    synthetic image is replicated to RGB and then matched to a colour target channel by channel, so it takes the
    target's colours; with ``in_chans=1`` a colour target is compared by its luma.

    Args:
        style: ``histogram``, ``fda`` or ``none``.
        references: Target images, float in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        in_chans: Channels of the training images.
        p: Probability of styling a sample.

    Raises:
        ValueError: If ``style`` is unknown or there are no references.
    """
    check_target_style(style)
    if style == "none":
        return None
    if not references:
        raise ValueError(f"target_style={style!r} needs target images; set data.target_root to a folder of them")
    converted = [np.ascontiguousarray(to_channels(np.asarray(r, dtype=np.float32), in_chans)) for r in references]
    if style == "histogram":
        return TargetHistogramMatching(converted, p=p)
    return TargetFDA(converted, p=p)
