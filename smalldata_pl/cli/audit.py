"""``smalldata audit``: look for the same micrograph on both sides of every cross-validation fold."""

from collections.abc import Sequence
from dataclasses import dataclass

from smalldata_pl.cli.options import training_command
from smalldata_pl.datasets.leakage import THRESHOLD
from smalldata_pl.evaluation.audit import AUDIT_FIELDS, audit_folds, audit_splits, tagged_splits
from smalldata_pl.io.tables import write_csv


@dataclass
class AuditOptions:
    """Options of ``smalldata audit``; the data comes from ``smalldata fit`` options (-c config.yaml …).

    Checks every fold of a folder DataModule (classification, or segmentation image/mask pairs) for group
    overlap and for transformed copies (flips, 90° rotations, small crops, resizes, intensity changes) across
    train and validation; a segmentation DataModule with an ``official_split`` is checked on that split.

    Args:
        candidates: Images template-matched per query.
        threshold: Correlation that counts as a copy.
        report: CSV of the pairs found.
    """

    candidates: int = 30
    threshold: float = THRESHOLD
    report: str = "leakage_report.csv"


def audit_command(argv: Sequence[str]) -> list[dict]:
    """``smalldata audit -c config.yaml [--candidates 30] [--report leaks.csv]``."""
    cli, _ = training_command(argv, AuditOptions)
    options, datamodule = cli.options, cli.datamodule
    records = getattr(datamodule, "records", None)
    if records is None:
        raise ValueError(f"{type(datamodule).__name__} has no image records to audit; use a folder DataModule")
    print(f"fingerprinting {len(records)} images …")
    scale = getattr(datamodule, "physical_scale", None)
    official = getattr(datamodule, "official_split", None)
    if official:
        splits = tagged_splits(records, official)
        rows = audit_splits(records, splits, options.candidates, options.threshold, scale)
        checked = f"the {official} split"
    else:
        num_folds = datamodule.num_folds  # type: ignore[attr-defined]
        split, seed = datamodule.split, datamodule.seed  # type: ignore[attr-defined]
        rows = audit_folds(records, num_folds, split, seed, options.candidates, options.threshold, scale)
        checked = f"{num_folds} folds"
    write_csv(options.report, rows, AUDIT_FIELDS)
    for row in rows:
        print(f"fold {row['fold']}: {row['kind']}: {row['train']} <-> {row['validation']} {row['correlation']}")
    print(f"{len(rows)} leak(s) in {checked}; report written to {options.report}")
    return rows
