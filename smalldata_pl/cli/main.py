"""The ``smalldata`` entry point: Lightning's subcommands plus the framework's own commands."""

import signal
import sys
from collections.abc import Callable, Sequence

from lightning.pytorch.utilities.exceptions import SIGTERMException

from smalldata_pl.cli.apply import apply_command
from smalldata_pl.cli.audit import audit_command
from smalldata_pl.cli.augment import augment_command
from smalldata_pl.cli.average_weights import average_weights_command
from smalldata_pl.cli.calibrate import calibrate_command
from smalldata_pl.cli.cv import cv_command
from smalldata_pl.cli.cv_report import cv_report_command
from smalldata_pl.cli.export import export_command
from smalldata_pl.cli.export_encoder import export_encoder_command
from smalldata_pl.cli.lightning_cli import SmallDataCLI
from smalldata_pl.cli.lr_find import lr_find_command
from smalldata_pl.cli.measure import measure_command
from smalldata_pl.cli.nested_cv import nested_cv_command
from smalldata_pl.cli.realism import realism_command
from smalldata_pl.cli.study import study_command
from smalldata_pl.cli.synth import synth_command

COMMANDS: dict[str, Callable[[Sequence[str]], object]] = {
    "apply": apply_command,
    "calibrate": calibrate_command,
    "export": export_command,
    "cv": cv_command,
    "cv-report": cv_report_command,
    "nested-cv": nested_cv_command,
    "audit": audit_command,
    "augment": augment_command,
    "synth": synth_command,
    "export-encoder": export_encoder_command,
    "average-weights": average_weights_command,
    "lr-find": lr_find_command,
    "study": study_command,
    "realism": realism_command,
    "measure": measure_command,
}


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``smalldata`` and ``python -m smalldata_pl``; ``args`` defaults to ``sys.argv[1:]``."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in COMMANDS:
            COMMANDS[argv[0]](argv[1:])
            return
        # From the console LightningCLI reads sys.argv itself (passing it again triggers a warning).
        SmallDataCLI(args=None if args is None else argv)
    except SIGTERMException as stop:
        # Lightning's SIGTERMException is a SystemExit with status 0; a run stopped by the scheduler's time limit
        # must not look finished to `afterok` jobs and `&&` chains. last.ckpt was written on the way out.
        print("stopped by SIGTERM; resume with --ckpt_path <run>/checkpoints/last.ckpt", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from stop
