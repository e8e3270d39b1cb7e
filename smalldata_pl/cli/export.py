"""``smalldata export``: a trained checkpoint as an ONNX or TorchScript file with its preprocessing inside."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smalldata_pl.cli.options import command_parser, parse_options
from smalldata_pl.inference.export import SUFFIXES, ExportFormat, export_model, read_metadata


@dataclass
class ExportOptions:
    """Options of ``smalldata export``.

    Args:
        checkpoint: A checkpoint of ``smalldata fit`` (classifier or segmenter).
        format: ``onnx`` (needs ``pip install 'smalldata_pl[export]'``) or ``torchscript`` (deprecated in PyTorch,
            kept for C++ and older deployments).
        out: The file to write; default ``model.onnx`` or ``model.pt`` in the current folder.
        ensemble: More checkpoints of the same task, classes and preprocessing, exported with the first as one
            model whose softmax is the mean of theirs (what ``smalldata apply --ensemble`` predicts).
    """

    checkpoint: str
    format: ExportFormat = "onnx"
    out: str | None = None
    ensemble: list[str] | None = None


def export_command(argv: Sequence[str]) -> Path:
    """``smalldata export CHECKPOINT --format onnx|torchscript --out FILE [--ensemble CHECKPOINT ...]``."""
    parser = command_parser(
        "smalldata export",
        "Export a trained classifier or segmenter for deployment without smalldata_pl: input `image`, the normalised "
        "tensor [N, C, H, W]; output `logits`, [N, K] or [N, K, H, W]. The checkpoint's preprocessing record (class "
        "names, in_chans, mean/std, image/crop/tile size, invariances) is embedded: ONNX metadata_props "
        "`preprocessing` and `export`, or the TorchScript extra files preprocessing.json and export.json. The file is "
        "checked against PyTorch on other batch and image sizes before it is written. With --ensemble the checkpoints "
        "become one model: its logits are the log of their mean probability.",
        ExportOptions,
        ["checkpoint"],
    )
    options = parse_options(parser, ExportOptions, argv)
    checkpoints = [options.checkpoint, *(options.ensemble or [])]
    out = export_model(checkpoints, options.out or f"model{SUFFIXES[options.format]}", options.format)
    export = read_metadata(out)["export"]
    check = export["check"]
    members = f", an ensemble of {len(checkpoints)} models" if len(checkpoints) > 1 else ""
    print(
        f"wrote {out} ({options.format}{members}): {export['input']['name']} {export['input']['shape']} -> "
        f"{export['output']['name']} {export['output']['shape']}; max |exported - PyTorch| "
        f"{check['max_abs_diff']:.2g} on inputs {check['input_shapes']}"
    )
    return out
