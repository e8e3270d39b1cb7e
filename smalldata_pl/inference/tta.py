"""Test-time augmentation for ``smalldata apply``: probabilities averaged over the D4 views the labels allow.

The view arithmetic lives in :mod:`smalldata_pl.transforms.views`, shared with the tasks' ``tta`` option.
"""

from collections.abc import Sequence

import torch

from smalldata_pl.transforms.views import Model, View, mean_probabilities, views_from_invariances

__all__ = ["Model", "classify", "segment", "view_logits", "views_from_invariances"]


def view_logits(model: Model, images: torch.Tensor, views: Sequence[View]) -> torch.Tensor:
    """Classification logits of every view of ``images`` (``[N, C, H, W]``), stacked to ``[V, N, K]``."""
    return torch.stack([model(view.forward(images)) for view in views])


def classify(model: Model, images: torch.Tensor, views: Sequence[View], temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities ``[N, K]``: the softmax of ``logits / temperature`` averaged over the views."""
    return mean_probabilities(model, images, views, temperature)


def segment(predict: Model, images: torch.Tensor, views: Sequence[View], temperature: float = 1.0) -> torch.Tensor:
    """Per-pixel class probabilities ``[N, K, H, W]`` averaged over the views.

    Each view's logits are mapped back to the original frame with the view's inverse before the softmax, so
    every pixel's probabilities come from that same pixel in every view.

    Args:
        predict: Maps ``[N, C, h, w]`` images to ``[N, K, h, w]`` logits (whole image or sliding window).
        images: ``[N, C, H, W]`` normalised images.
        views: The views to average over (at least one).
        temperature: Logits are divided by it before the softmax.
    """
    return mean_probabilities(predict, images, views, temperature, per_pixel=True)
