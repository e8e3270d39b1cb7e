"""``smalldata audit``: look for the same micrograph on both sides of every cross-validation fold."""

import argparse
from pathlib import Path

from smalldata_pl.data.io import read_image, write_csv
from smalldata_pl.data.leakage import THRESHOLD, find_duplicates, signature
from smalldata_pl.data.splits import GroupLeakError, check_no_group_leak, fold_indices


def audit_command(argv: list[str]) -> list[dict]:
    """``smalldata audit -c config.yaml [--candidates 30] [--report leaks.csv]``."""
    parser = argparse.ArgumentParser(
        prog="smalldata audit",
        description="Check every fold of a folder DataModule for group overlap and for transformed copies "
        "(flips, 90° rotations, small crops, resizes, intensity changes) across train and validation. "
        "Other options are `smalldata fit` options (-c config.yaml, --data.init_args.root ...).",
    )
    parser.add_argument("--candidates", type=int, default=30, help="images template-matched per query (default 30)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="correlation that counts as a copy")
    parser.add_argument("--report", type=Path, default=Path("leakage_report.csv"), help="CSV of the pairs found")
    known, fit_args = parser.parse_known_args(argv)

    from smalldata_pl.cli import SmallDataCLI

    datamodule = SmallDataCLI(args=fit_args, run=False).datamodule
    records = getattr(datamodule, "records", None)
    if records is None:
        raise ValueError(f"{type(datamodule).__name__} has no image records to audit; use a folder DataModule")
    print(f"fingerprinting {len(records)} images …")
    signatures = [signature(read_image(r.path)) for r in records]
    labels, groups = [r.label for r in records], [r.group for r in records]
    rows: list[dict] = []
    for fold in range(datamodule.num_folds):
        train, val = fold_indices(labels, groups, datamodule.num_folds, fold, datamodule.split, datamodule.seed)
        try:
            check_no_group_leak([groups[i] for i in train], [groups[i] for i in val])
        except GroupLeakError as error:
            rows.append({"fold": fold, "kind": "group", "train": str(error), "validation": "", "correlation": ""})
        pairs = find_duplicates(
            [signatures[i] for i in train], [signatures[i] for i in val], known.candidates, known.threshold
        )
        for i, j, score in pairs:
            rows.append(
                {
                    "fold": fold,
                    "kind": "copy",
                    "train": str(records[train[i]].path),
                    "validation": str(records[val[j]].path),
                    "correlation": f"{score:.3f}",
                }
            )
    write_csv(known.report, rows, ["fold", "kind", "train", "validation", "correlation"])
    for row in rows:
        print(f"fold {row['fold']}: {row['kind']}: {row['train']} <-> {row['validation']} {row['correlation']}")
    print(f"{len(rows)} leak(s) in {datamodule.num_folds} folds; report written to {known.report}")
    return rows
