"""The eight D4 views of an image (quarter turns and mirrors) and their inverses, for test-time augmentation."""

from dataclasses import dataclass

import torch


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
