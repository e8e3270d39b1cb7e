"""``smalldata export-encoder``: turn a trained checkpoint into a backbone weights file for ``pretrained:``."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smalldata_pl.cli.options import command_parser, parse_options
from smalldata_pl.models.encoder_export import export_encoder


@dataclass
class ExportEncoderOptions:
    """Options of ``smalldata export-encoder``.

    Args:
        checkpoint: A smalldata_pl Lightning checkpoint.
        out: The weights file to write.
    """

    checkpoint: str
    out: str = "encoder.pth"


def export_encoder_command(argv: Sequence[str]) -> Path:
    """``smalldata export-encoder CHECKPOINT --out encoder.pth``."""
    parser = command_parser(
        "smalldata export-encoder",
        "Extract the pretrained part of a checkpoint (e.g. after synthetic pre-training) into a weights file; "
        "start a real fine-tune from it with --model.init_args.pretrained encoder.pth.",
        ExportEncoderOptions,
        ["checkpoint"],
    )
    options = parse_options(parser, ExportEncoderOptions, argv)
    out = Path(options.out)
    count = export_encoder(Path(options.checkpoint), out)
    print(f"wrote {count} encoder tensors to {out}")
    return out
