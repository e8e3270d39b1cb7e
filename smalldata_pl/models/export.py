"""``smalldata export-encoder``: turn a trained checkpoint into a backbone weights file for ``pretrained:``."""

import argparse
from pathlib import Path

import torch

ENCODER_PREFIXES = ("backbone.", "encoder.")


def export_encoder(checkpoint: Path, out: Path) -> int:
    """Save the backbone/encoder tensors of a Lightning checkpoint as a plain state dict; returns their count.

    Raises:
        ValueError: If the checkpoint holds no ``backbone.`` or ``encoder.`` tensors.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    for prefix in ENCODER_PREFIXES:
        tensors = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if tensors:
            out.parent.mkdir(parents=True, exist_ok=True)
            torch.save(tensors, out)
            return len(tensors)
    raise ValueError(f"{checkpoint} holds no backbone./encoder. tensors; is it a smalldata_pl checkpoint?")


def export_encoder_command(argv: list[str]) -> Path:
    """``smalldata export-encoder CHECKPOINT --out encoder.pth``."""
    parser = argparse.ArgumentParser(
        prog="smalldata export-encoder",
        description="Extract the pretrained part of a checkpoint (e.g. after synthetic pre-training) into a "
        "weights file; start a real fine-tune from it with --model.init_args.pretrained encoder.pth.",
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=Path("encoder.pth"))
    args = parser.parse_args(argv)
    count = export_encoder(args.checkpoint, args.out)
    print(f"wrote {count} encoder tensors to {args.out}")
    return args.out
