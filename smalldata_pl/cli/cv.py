"""``smalldata cv``: every fold of a config with a fresh model, then the summary."""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smalldata_pl.cli.options import training_command
from smalldata_pl.evaluation.cross_validation import run_cross_validation
from smalldata_pl.evaluation.summary import format_summary


@dataclass
class CrossValidationOptions:
    """Options of ``smalldata cv``; every other option is a ``smalldata fit`` option.

    Args:
        cv_dir: Parent folder of the fold runs; default ``lightning_logs/cv/<time>``.
    """

    cv_dir: str | None = None


def cv_command(argv: Sequence[str]) -> dict:
    """``smalldata cv -c config.yaml [--cv_dir DIR] [fit options]``: fit every fold (data.num_folds), summarise."""
    cli, new_run = training_command(argv, CrossValidationOptions)
    cv_dir = Path(cli.options.cv_dir or f"lightning_logs/cv/{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_cross_validation(new_run, cv_dir)
    print(format_summary(summary))
    return summary
