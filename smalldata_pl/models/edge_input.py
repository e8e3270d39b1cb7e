"""The image's own edge map as an extra network input: computed in the graph, fed to a widened stem.

A boundary network trained on synthetic grains learns what a boundary looks like in *synthetic* images, and on a
real specimen it draws the textures it never saw. The image's colour gradient, scaled by its own Otsu threshold,
looks alike in every domain: 0.5 means "edge" whatever the contrast. Given to the network as one more channel, the
network can learn on synthetic labels when to trust that edge and when the context says it is texture, instead of
a fixed rule mixing the two afterwards.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

EDGE_SIGMA = 1.5  # px of Gaussian smoothing before the gradient: the best grey Sobel/Otsu baseline on real tiles
OTSU_BINS = 256  # histogram bins of the Otsu threshold, as scikit-image's threshold_otsu
GAUSSIAN_TRUNCATE = 4.0  # kernel radius in sigmas, as scikit-image's gaussian


class EdgeStrength(nn.Module):
    """Gradient magnitude of ``[B, C, H, W]`` images, scaled per image so that its Otsu threshold lands on 0.5.

    Each channel is smoothed by a Gaussian of ``sigma`` and Sobel-filtered, and the magnitudes are added in
    quadrature, so a step between two grains of equal brightness but different etch colour counts as an edge.
    Borders repeat the edge pixel. This is scikit-image's ``sobel(gaussian(channel, sigma))`` summed over channels
    and thresholded by ``threshold_otsu``, computed in the graph (so it runs on the GPU, under test-time
    augmentation and inside an exported model); images without any gradient give zeros.

    Example:
        >>> image = torch.zeros(1, 3, 32, 32)
        >>> image[..., 16:] = 1.0
        >>> strength = EdgeStrength()(image)
        >>> bool(strength[0, 0, :, 15:17].min() > 0.5), bool(strength[0, 0, :, :8].max() < 0.5)
        (True, True)

    Args:
        sigma: Gaussian smoothing in pixels before the gradient (noise and etch pits are smaller).
    """

    def __init__(self, sigma: float = EDGE_SIGMA) -> None:
        super().__init__()
        radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
        gaussian = torch.exp(-0.5 * (offsets / sigma) ** 2)
        self.radius = radius
        # Both kernels follow from sigma alone: buffers (they move with the model) that checkpoints do not store.
        self.gaussian: torch.Tensor
        self.register_buffer("gaussian", (gaussian / gaussian.sum()).float(), persistent=False)
        smooth, derivative = torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 0.0, -1.0])
        self.sobel: torch.Tensor
        # Row 0 differentiates along the height, row 1 along the width; the scale cancels in the Otsu scaling.
        sobel = torch.stack([torch.outer(derivative, smooth), torch.outer(smooth, derivative)])
        self.register_buffer("sobel", sobel, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` edge strength in [0, 1] of ``[B, C, H, W]`` images."""
        count, channels, height, width = images.shape
        x = images.reshape(count * channels, 1, height, width).float()
        x = F.pad(x, (self.radius, self.radius, 0, 0), mode="replicate")
        x = F.conv2d(x, self.gaussian.view(1, 1, 1, -1))
        x = F.pad(x, (0, 0, self.radius, self.radius), mode="replicate")
        x = F.conv2d(x, self.gaussian.view(1, 1, -1, 1))
        gradients = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.sobel[:, None])
        magnitude = gradients.square().sum(1).view(count, channels, height, width).sum(1).sqrt()
        cut = otsu_threshold(magnitude.flatten(1))
        # A flat image has no edges: its threshold is 0 and every pixel stays 0.
        scaled = magnitude / (2 * cut.clamp_min(torch.finfo(magnitude.dtype).tiny)).view(count, 1, 1)
        return scaled.clamp(0.0, 1.0).where(cut.view(count, 1, 1) > 0, 0.0)[:, None]


class EdgeStack(nn.Module):
    """Edge maps of ``[B, C, H, W]`` images at several smoothing scales, one channel each (:class:`EdgeStrength`).

    A boundary is an edge at every scale; fine texture (striations, etch pits, noise) is strong at a small sigma
    and fades at a large one. Several maps let a network tell the two apart by how an edge changes with scale.

    Args:
        sigmas: Gaussian smoothing of each map in pixels; one sigma gives :class:`EdgeStrength`'s single map.

    Raises:
        ValueError: Without any sigma, or with one that is not positive.
    """

    def __init__(self, sigmas: Sequence[float] = (EDGE_SIGMA,)) -> None:
        super().__init__()
        if not sigmas or not all(sigma > 0 for sigma in sigmas):
            raise ValueError(f"edge sigmas must be one or more positive widths in pixels, got {list(sigmas)}")
        self.maps = nn.ModuleList([EdgeStrength(float(sigma)) for sigma in sigmas])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, S, H, W]``: one edge map in [0, 1] per sigma."""
        return torch.cat([edge_map(images) for edge_map in self.maps], dim=1)


def otsu_threshold(values: torch.Tensor, bins: int = OTSU_BINS) -> torch.Tensor:
    """Otsu's threshold of each row of ``values`` ``[B, N]``: the bin centre that best splits its histogram.

    The histogram spans each row's own range, as scikit-image's ``threshold_otsu``; a constant row gives 0.
    """
    low, high = values.min(1, keepdim=True).values, values.max(1, keepdim=True).values
    span = high - low
    width = torch.where(span > 0, span / bins, torch.ones_like(span))
    index = ((values - low) / width).floor().clamp(0, bins - 1).long()
    counts = torch.zeros(values.shape[0], bins, dtype=values.dtype, device=values.device)
    counts = counts.scatter_add(1, index, torch.ones_like(values))
    centres = low + width * (torch.arange(bins, device=values.device, dtype=values.dtype) + 0.5)
    below = counts.cumsum(1)
    above = counts.flip(1).cumsum(1).flip(1)
    weighted = counts * centres
    mean_below = weighted.cumsum(1) / below.clamp_min(1)
    mean_above = weighted.flip(1).cumsum(1).flip(1) / above.clamp_min(1)
    between = below[:, :-1] * above[:, 1:] * (mean_below[:, :-1] - mean_above[:, 1:]) ** 2
    best = between.argmax(1, keepdim=True)
    return torch.where(span[:, 0] > 0, centres.gather(1, best)[:, 0], torch.zeros_like(span[:, 0]))


def replace_input_conv(model: nn.Module, edge_channels: int, keep_image: bool = True) -> None:
    """Give ``model``'s first convolution (timm's ``first_conv``) ``edge_channels`` inputs for edge maps, in place.

    With ``keep_image`` the edge channels follow the image's; without it they replace them. The edge channels'
    kernels start at zero and learn from the first step on: with the image kept the model computes exactly what it
    computed before (its pretrained features survive); without it every layer after the stem keeps its weights
    while the stem learns how to read the edge map.

    Raises:
        ValueError: If the model does not name a single convolutional first layer.
    """
    name = getattr(model, "pretrained_cfg", {}).get("first_conv")
    conv = model.get_submodule(name) if isinstance(name, str) else None
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ValueError(f"{type(model).__name__} names no plain first convolution to replace (first_conv={name!r})")
    assert isinstance(name, str)
    kept = conv.in_channels if keep_image else 0
    wider = nn.Conv2d(
        kept + edge_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, :kept] = conv.weight[:, :kept]
        if conv.bias is not None and wider.bias is not None:
            wider.bias.copy_(conv.bias)
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, wider)
