"""Test-time augmentation: a model's probabilities averaged over the D4 views its labels are invariant to."""

import logging
from collections.abc import Callable, Mapping, Sequence

import torch

from smalldata_pl.transforms.views import IDENTITY, View, allowed_views

log = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], torch.Tensor]


def views_from_invariances(invariances: Mapping[str, bool] | None) -> list[View]:
    """The TTA views a checkpoint's declared invariances allow, with a log line saying which and why.

    Args:
        invariances: The ``invariances`` of a checkpoint's preprocessing record (``rotation``, ``mirror`` …);
            ``None`` for a checkpoint that declares none, which gets the identity view only.
    """
    if invariances is None:
        log.warning(
            "test-time augmentation: the checkpoint declares no invariances, so only the identity view is used; "
            "retrain with a DataModule that sets `invariances` to allow rotated or mirrored views"
        )
        return [IDENTITY]
    rotation, mirror = bool(invariances.get("rotation", False)), bool(invariances.get("mirror", False))
    views = allowed_views(rotation, mirror)
    forbidden = [name for name, allowed in (("rotation", rotation), ("mirror", mirror)) if not allowed]
    if forbidden:
        log.warning(
            "test-time augmentation: the labels are declared not invariant to %s (invariances.%s=false), so %s",
            " and ".join(forbidden),
            "/".join(forbidden),
            "only the identity view is used" if len(views) == 1 else f"only {[v.name for v in views]} are used",
        )
    else:
        log.info("test-time augmentation over %d views: %s", len(views), [v.name for v in views])
    return views


def view_logits(model: Model, images: torch.Tensor, views: Sequence[View]) -> torch.Tensor:
    """Classification logits of every view of ``images`` (``[N, C, H, W]``), stacked to ``[V, N, K]``."""
    return torch.stack([model(view.forward(images)) for view in views])


def classify(model: Model, images: torch.Tensor, views: Sequence[View], temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities ``[N, K]``: the softmax of ``logits / temperature`` averaged over the views."""
    return (view_logits(model, images, views) / temperature).softmax(dim=-1).mean(dim=0)


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
    if not views:
        raise ValueError("segment needs at least one view; pass [IDENTITY] for none")
    total: torch.Tensor | None = None
    for view in views:
        probabilities = (view.inverse(predict(view.forward(images))) / temperature).softmax(dim=1)
        total = probabilities if total is None else total + probabilities
    assert total is not None
    return total / len(views)
