"""``smalldata nested-cv``: choose between candidate configs by inner CV, report the outer score of the choice."""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from smalldata_pl.cli.options import training_command
from smalldata_pl.evaluation.nested_cv import candidates_from_files, format_report, run_nested_cv


@dataclass
class NestedCrossValidationOptions:
    """Options of ``smalldata nested-cv``; every other option is a ``smalldata fit`` option (the base config).

    Args:
        candidates: YAML files of overrides of the base config, one per candidate (strategy, LR, image size...);
            ``--candidates a.yaml b.yaml`` or a list in a ``-c`` file.
        inner_folds: K of the inner split of each outer training fold.
        metric: The ``val/*`` metric the choice is made by; default the checkpoint's ``monitor``.
        mode: ``min`` or ``max``; default the checkpoint's mode for its monitor, else ``min`` for losses.
        reference: Also train the candidates not chosen on every outer fold for their plain outer CV (a
            reference only; ``false`` saves one run per candidate and outer fold).
        cv_dir: Folder of the runs and the report; default ``lightning_logs/nested_cv/<time>``. Rerunning with
            the same folder skips the runs already finished.
    """

    candidates: list[str] = field(default_factory=list)
    inner_folds: int = 3
    metric: str | None = None
    mode: Literal["min", "max"] | None = None
    reference: bool = True
    cv_dir: str | None = None


def nested_cv_command(argv: Sequence[str]) -> dict:
    """``smalldata nested-cv -c base.yaml --candidates a.yaml b.yaml [--inner_folds 3] [--cv_dir DIR]``."""
    cli, new_run = training_command(argv, NestedCrossValidationOptions)
    o: NestedCrossValidationOptions = cli.options
    cv_dir = Path(o.cv_dir or f"lightning_logs/nested_cv/{time.strftime('%Y%m%d-%H%M%S')}")
    candidates = candidates_from_files(o.candidates)
    report = run_nested_cv(new_run, candidates, cv_dir, o.inner_folds, o.metric, o.mode, o.reference, base=cli)
    print(format_report(report))
    print(f"report: {cv_dir / 'nested_cv.json'}, nested_cv.csv, nested_cv_summary.csv")
    return report
