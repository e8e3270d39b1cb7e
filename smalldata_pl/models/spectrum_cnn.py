"""SpectrumCNN: a small 1-D CNN encoder for diffraction or Raman patterns, with timm-like layer groups."""

import itertools
from collections.abc import Sequence

import torch
from torch import nn


def _block(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(out_channels),
        nn.GELU(),
        nn.Conv1d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm1d(out_channels),
        nn.GELU(),
    )


class SpectrumCNN(nn.Module):
    """Stem plus strided stages; ``forward`` returns pooled features of width ``num_features``.

    Args:
        in_chans: Input channels (1 for a single pattern).
        widths: Channels of the stem and of each stage.
    """

    def __init__(self, in_chans: int = 1, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.stem = _block(in_chans, widths[0], 15, 2)
        self.stages = nn.ModuleList(_block(a, b, 7, 2) for a, b in itertools.pairwise(widths))
        self.num_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=-1)

    def layer_groups(self) -> dict[str, list[str]]:
        """``stem``, ``stage1`` … in input-to-output order, like timm's coarse groups."""
        groups = {"stem": [f"stem.{n}" for n, _ in self.stem.named_parameters()]}
        for i, stage in enumerate(self.stages, start=1):
            groups[f"stage{i}"] = [f"stages.{i - 1}.{n}" for n, _ in stage.named_parameters()]
        return groups
