"""``smalldata calibrate``: fit a temperature on labelled images the model was not trained on."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smalldata_pl.cli.options import command_parser, parse_options
from smalldata_pl.inference.calibration import calibrate_from_labelled_images
from smalldata_pl.inference.predictor import load_predictor
from smalldata_pl.inference.reports import read_labels


@dataclass
class CalibrateOptions:
    """Options of ``smalldata calibrate``.

    Args:
        checkpoint: A classifier checkpoint of ``smalldata fit``.
        labels: CSV ``file,label`` of labelled images the model was not trained on (paths relative to the CSV),
            e.g. a validation fold or a held-out set; never the images whose predictions are then reported.
        out: Folder for ``calibration.json`` (temperature, ECE and NLL before/after) and ``reliability.png``.
        device: ``cpu`` or ``cuda``.
        tta: Calibrate the view-averaged probabilities; default: as the model was validated (its ``tta``
            setting), which is also what ``apply`` uses by default.
    """

    checkpoint: str
    labels: str
    out: str = "calibration"
    device: str = "cpu"
    tta: bool | None = None


def calibrate_command(argv: Sequence[str]) -> dict[str, Any]:
    """``smalldata calibrate CHECKPOINT --labels val.csv --out calibration/``; then ``apply --temperature T``."""
    parser = command_parser(
        "smalldata calibrate",
        "Temperature scaling: fit T on labelled images the model was not trained on, report the expected "
        "calibration error before and after with a reliability diagram; use T with `smalldata apply --temperature`.",
        CalibrateOptions,
        ["checkpoint"],
    )
    o = parse_options(parser, CalibrateOptions, argv)
    predictor = load_predictor(o.checkpoint, o.device, tta=o.tta)
    pairs = list(read_labels(Path(o.labels), predictor.class_names).items())
    report = calibrate_from_labelled_images(predictor, pairs, o.out)
    print(
        f"temperature {report['temperature']:.3f}: ECE {report['ece_before']:.4f} -> {report['ece_after']:.4f} "
        f"on {len(pairs)} images; written to {o.out}"
    )
    return report
