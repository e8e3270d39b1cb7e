"""Encoder files: the backbone/encoder tensors of a trained checkpoint as a weights file for ``pretrained:``."""

from pathlib import Path

import torch

from smalldata_pl.models.checkpoint_files import read_checkpoint

ENCODER_PREFIXES = ("backbone.", "encoder.")


def export_encoder(checkpoint: Path, out: Path) -> int:
    """Save the backbone/encoder tensors of a Lightning checkpoint as a plain state dict; returns their count.

    Raises:
        ValueError: If the checkpoint holds no ``backbone.`` or ``encoder.`` tensors.
    """
    state = read_checkpoint(checkpoint)
    state = state.get("state_dict", state)
    for prefix in ENCODER_PREFIXES:
        tensors = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if tensors:
            out.parent.mkdir(parents=True, exist_ok=True)
            torch.save(tensors, out)
            return len(tensors)
    raise ValueError(f"{checkpoint} holds no backbone./encoder. tensors; is it a smalldata_pl checkpoint?")
