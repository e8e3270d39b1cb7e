"""Tuning before training: the LR range test that keeps the discriminative ratios of an unfreezing plan."""

from smalldata_pl.tuning.lr_finder import LRFinderResult, find_lr

__all__ = ["LRFinderResult", "find_lr"]
