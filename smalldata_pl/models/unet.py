"""A light U-Net decoder over a timm ``features_only`` encoder, and sliding-window inference."""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip connection, two 3x3 conv-BN-ReLU layers."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else tuple(2 * s for s in x.shape[-2:])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """Decodes encoder features (shallow to deep) back to the shallowest feature resolution.

    Args:
        encoder_channels: Channels of each encoder feature map, shallow to deep.
        decoder_channels: Channels of each decoder block, deep to shallow (one per skip connection).
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]
        widths = list(decoder_channels or [max(16, c // 2) for c in skips])
        if len(widths) != len(skips):
            raise ValueError(f"need {len(skips)} decoder widths for {len(encoder_channels)} encoder features")
        ins = [encoder_channels[-1], *widths[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, widths, strict=True))
        self.out_channels = widths[-1]

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, list(features[:-1])[::-1], strict=True):
            x = block(x, skip)
        return x


def _blend_window(size: int, overlap: int, device: torch.device) -> torch.Tensor:
    """Weights rising linearly over the overlap at each edge, so overlapping tiles fade into each other."""
    ramp = torch.ones(size, device=device)
    if overlap > 0:
        edge = torch.linspace(1.0 / (overlap + 1), 1.0, overlap, device=device)
        ramp[:overlap] = edge
        ramp[-overlap:] = edge.flip(0)
    return ramp[:, None] * ramp[None, :]


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start of every sliding window along one axis; the last window ends at the edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def blend_overlap(tile: int, overlap: int) -> int:
    """The overlap the windows really use: at most half a tile."""
    # An overlap of (nearly) the whole tile would move the windows a pixel at a time: hundreds of passes for the
    # same blend. Half a tile already gives every pixel a window in which it is far from the edge.
    return min(overlap, tile // 2)


def window_origins(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every sliding window over a ``height`` x ``width`` image."""
    stride = tile - blend_overlap(tile, overlap)
    return [(top, left) for top in window_starts(height, tile, stride) for left in window_starts(width, tile, stride)]


def sliding_window(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int,
    overlap: int,
    batch_size: int = 1,
) -> torch.Tensor:
    """Run ``predict`` on overlapping tiles of ``image`` (``[B, C, H, W]``) and blend the logits.

    Args:
        predict: Maps a ``[N, C, t, t]`` stack of tiles to ``[N, K, t, t]`` logits.
        image: The whole image batch.
        tile: Tile side in pixels (the training crop size).
        overlap: Pixels shared by neighbouring tiles; blended with linear ramps.
        batch_size: Windows per call of ``predict`` (times ``B``); the result does not depend on it.

    Returns:
        ``[B, K, H, W]`` blended logits. When the image fits in one tile this is exactly ``predict(image)``.
    """
    count, _, height, width = image.shape
    if height <= tile and width <= tile:
        return predict(image)
    overlap = blend_overlap(tile, overlap)
    origins = window_origins(height, width, tile, overlap)
    output: torch.Tensor | None = None
    weight = torch.zeros(1, 1, height, width, device=image.device)
    window = _blend_window(tile, overlap, image.device)
    for start in range(0, len(origins), max(1, batch_size)):
        chunk = origins[start : start + max(1, batch_size)]
        # Every window has the same shape (an axis shorter than the tile is one window of its full length).
        logits = predict(torch.cat([image[:, :, top : top + tile, left : left + tile] for top, left in chunk]))
        if output is None:
            output = torch.zeros(count, logits.shape[1], height, width, device=image.device)
        for i, (top, left) in enumerate(chunk):
            h, w = logits.shape[-2:]
            output[:, :, top : top + h, left : left + w] += logits[i * count : (i + 1) * count] * window[:h, :w]
            weight[:, :, top : top + h, left : left + w] += window[:h, :w]
    assert output is not None
    return output / weight
