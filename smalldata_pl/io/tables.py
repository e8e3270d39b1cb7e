"""CSV tables of samples, predictions and reports."""

import csv
from collections.abc import Sequence
from pathlib import Path


def write_csv(path: str | Path, rows: Sequence[dict], fieldnames: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (columns from ``fieldnames`` or the first row); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames or (rows[0] if rows else [])))
        writer.writeheader()
        writer.writerows(rows)
    return path
