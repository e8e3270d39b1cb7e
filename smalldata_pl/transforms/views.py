"""The eight D4 views of an image (quarter turns and mirrors), their inverses, and probabilities averaged over them.

This is the core of test-time augmentation shared by the tasks (validation, test and predict steps with
``tta: true``) and by :mod:`smalldata_pl.inference.tta` (``smalldata apply --tta``).
"""

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from smalldata_pl.transforms.invariances import LabelInvariances

log = logging.getLogger(__name__)

# Images ``[N, C, H, W]`` to logits: ``[N, K]`` for classification, ``[N, K, H, W]`` for segmentation.
Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class View:
    """One element of the dihedral group D4 acting on the last two axes of a tensor.

    The view transposes first (if ``transpose``), then turns by ``quarter_turns`` x 90° counter-clockwise.
    :meth:`inverse` undoes :meth:`forward` exactly, also for non-square images (whose height and width swap
    under quarter turns and transposes), so per-pixel outputs of a viewed image map back onto the original.

    Example:
        >>> view = View("rot90", quarter_turns=1, transpose=False)
        >>> x = torch.arange(6.0).reshape(1, 1, 2, 3)
        >>> torch.equal(view.inverse(view.forward(x)), x)
        True

    Args:
        name: ``identity``, ``rot90``, ``rot180``, ``rot270``, ``transpose``, ``vflip``, ``anti_transpose``
            or ``hflip``.
        quarter_turns: Counter-clockwise quarter turns after the optional transpose (0 to 3).
        transpose: Swap rows and columns first (a mirror about the main diagonal).
    """

    name: str
    quarter_turns: int
    transpose: bool

    @property
    def mirrors(self) -> bool:
        """Whether the view reverses handedness (every view with a transpose is a mirror)."""
        return self.transpose

    @property
    def rotates(self) -> bool:
        """Whether the view is a proper rotation by 90°, 180° or 270°."""
        return not self.transpose and self.quarter_turns % 4 != 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the view to ``[..., H, W]`` (e.g. ``[N, C, H, W]`` images)."""
        out = images.transpose(-2, -1) if self.transpose else images
        return torch.rot90(out, self.quarter_turns, dims=(-2, -1))

    def inverse(self, outputs: torch.Tensor) -> torch.Tensor:
        """Map ``[..., H', W']`` outputs of a viewed image (e.g. segmentation logits) back to the original frame."""
        out = torch.rot90(outputs, -self.quarter_turns, dims=(-2, -1))
        return out.transpose(-2, -1) if self.transpose else out


IDENTITY = View("identity", 0, False)
ROTATIONS = (View("rot90", 1, False), View("rot180", 2, False), View("rot270", 3, False))
# A transpose followed by quarter turns gives the four mirrors: about the diagonal, the horizontal axis (rows
# reversed), the anti-diagonal and the vertical axis (columns reversed).
MIRRORS = (
    View("transpose", 0, True),
    View("vflip", 1, True),
    View("anti_transpose", 2, True),
    View("hflip", 3, True),
)


def allowed_views(rotation: bool, mirror: bool) -> list[View]:
    """The views a model's labels are declared invariant to, identity first.

    Quarter turns need ``rotation``; flips and transposes need ``mirror``; all eight D4 views need both. With
    ``mirror`` alone the four single mirrors are used, not their pairwise compositions (which are rotations).

    Args:
        rotation: The labels do not change under rotation (``LabelInvariances.rotation``).
        mirror: The labels do not change under flips and transposes (``LabelInvariances.mirror``).
    """
    views = [IDENTITY]
    if rotation:
        views += ROTATIONS
    if mirror:
        views += MIRRORS
    return views


def views_from_invariances(invariances: LabelInvariances | Mapping[str, bool] | None) -> list[View]:
    """The TTA views that declared invariances allow, with a log line saying which and why.

    Args:
        invariances: A DataModule's :class:`LabelInvariances`, or the ``invariances`` mapping of a checkpoint's
            preprocessing record (``rotation``, ``mirror`` …); ``None`` when nothing is declared, which gets the
            identity view only.
    """
    if invariances is None:
        log.warning(
            "test-time augmentation: no invariances are declared (checkpoint or DataModule), so only the identity "
            "view is used; use a DataModule that sets `invariances` to allow rotated or mirrored views"
        )
        return [IDENTITY]
    if isinstance(invariances, LabelInvariances):
        invariances = dataclasses.asdict(invariances)
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


def mean_probabilities(
    model: Model, images: torch.Tensor, views: Sequence[View], temperature: float = 1.0, per_pixel: bool = False
) -> torch.Tensor:
    """Softmax probabilities of ``images`` averaged over ``views``.

    Classification logits ``[N, K]`` do not depend on the view's frame (global pooling takes the swapped height
    and width of a quarter turn). Per-pixel logits ``[N, K, h, w]`` are mapped back to the original frame with
    the view's inverse before the softmax, so every pixel's probabilities come from that same pixel in every view.

    Args:
        model: Maps ``[N, C, h, w]`` images to logits (for segmentation: whole image or sliding window).
        images: ``[N, C, H, W]`` normalised images.
        views: The views to average over (at least one).
        temperature: Logits are divided by it before the softmax.
        per_pixel: The logits are per pixel (segmentation).

    Returns:
        ``[N, K]`` or ``[N, K, H, W]`` probabilities.

    Raises:
        ValueError: If ``views`` is empty.
    """
    if not views:
        raise ValueError("test-time augmentation needs at least one view; pass [IDENTITY] for none")
    total: torch.Tensor | None = None
    for view in views:
        logits = model(view.forward(images))
        probabilities = ((view.inverse(logits) if per_pixel else logits) / temperature).softmax(dim=1)
        total = probabilities if total is None else total + probabilities
    assert total is not None
    return total / len(views)


def log_mean_probabilities(model: Model, images: torch.Tensor, views: Sequence[View], per_pixel: bool) -> torch.Tensor:
    """Evaluation logits of a model under TTA: the log of :func:`mean_probabilities`; the model's own with one view.

    Their softmax is the averaged probabilities, so cross-entropy, Dice and every argmax metric score the TTA
    prediction unchanged. Probabilities are clamped to the smallest positive float first: an underflow to 0
    would make the loss infinite.
    """
    if list(views) == [IDENTITY]:
        return model(images)
    probabilities = mean_probabilities(model, images, views, per_pixel=per_pixel)
    return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()
