"""Several trained models as one: the mean of their class probabilities."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from smalldata_pl.tasks.base import TransferModule
from smalldata_pl.tasks.segmentation import MicrographSegmenter


class ModelEnsemble(nn.Module):
    """Models of one task and one set of classes whose softmax probabilities are averaged.

    The ensemble's logits are the log of the members' mean probability, so the softmax that the predictor, the
    test-time augmentation and the sliding windows take of them is exactly that mean. Members that err in different
    places (another seed, another ``edge_input``) cancel part of each other's errors.

    Args:
        members: The trained models, all classifiers or all segmenters, with the same class names.

    Raises:
        ValueError: If there are fewer than two members, or their class names differ.
    """

    def __init__(self, members: Sequence[TransferModule]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two models, got {len(members)}")
        names = [list(getattr(m, "class_names", []) or []) for m in members]
        if any(n != names[0] for n in names):
            raise ValueError(f"ensemble members must share their classes, got {names}")
        self.members = nn.ModuleList(members)
        self.class_names = names[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Log of the members' mean softmax over the class dimension (1)."""
        return self._mean(lambda member: member(images))

    def _mean(self, logits_of: Callable[[Any], torch.Tensor]) -> torch.Tensor:
        log_probabilities = torch.stack([logits_of(member).log_softmax(dim=1) for member in self.members])
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.members))


class SegmenterEnsemble(ModelEnsemble):
    """A :class:`ModelEnsemble` of segmenters: one sliding window and boundary class, each member's own padding.

    Raises:
        ValueError: If the members differ in boundary class or sliding-window setting.
    """

    def __init__(self, members: Sequence[MicrographSegmenter]) -> None:
        super().__init__(members)
        settings = {(m.boundary_class, m.tile_size, m.tile_overlap) for m in members}
        if len(settings) > 1:
            found = sorted(settings, key=str)
            raise ValueError(f"ensemble members must share boundary_class, tile_size and tile_overlap, got {found}")
        self.boundary_class, self.tile_size, self.tile_overlap = settings.pop()
        # Each member pads to its own encoder stride; an input off the largest is off every member's (export).
        self.stride = max(member.stride for member in members)

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Log of the members' mean probability, each member predicting whole images or windows as configured."""
        return self._mean(lambda member: member.predict_logits(images))


def ensemble(members: Sequence[TransferModule]) -> ModelEnsemble:
    """The ensemble for ``members``: a :class:`SegmenterEnsemble` of segmenters, else a :class:`ModelEnsemble`.

    Raises:
        ValueError: If segmenters and classifiers are mixed, or as the ensembles' constructors.
    """
    segmenters = [isinstance(m, MicrographSegmenter) for m in members]
    if all(segmenters):
        return SegmenterEnsemble(members)  # type: ignore[arg-type]
    if any(segmenters):
        raise ValueError("an ensemble takes segmenters or classifiers, not both")
    return ModelEnsemble(members)
