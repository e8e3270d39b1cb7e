"""CSV tables and JSON reports of samples, predictions and runs, written atomically as valid UTF-8."""

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smalldata_pl.io.images import atomic_path


def write_csv(path: str | Path, rows: Sequence[dict], fieldnames: Sequence[str] | None = None) -> Path:
    r"""Write dict rows as CSV (columns from ``fieldnames`` or the first row); returns the path.

    The table goes to a temporary file that replaces ``path`` only when complete, so an error or a crash
    half-way leaves the previous file intact. File names that are not valid UTF-8 (``os.fsdecode`` turns their
    bytes into surrogates) are written as ``\xNN`` escapes, so the table itself is always valid UTF-8.
    """
    path = Path(path)
    columns = [printable(str(c)) for c in (fieldnames or (rows[0] if rows else []))]
    with atomic_path(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({printable(str(k)): printable(v) if isinstance(v, str) else v for k, v in row.items()})
        handle.flush()
        os.fsync(handle.fileno())  # on disk before the rename makes it visible
    return path


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, ending in a newline); returns the path.

    Like :func:`write_csv` the text goes to a temporary file that replaces ``path`` only when complete, so a run
    killed or failing half-way (an object that is not JSON-serialisable, a full disk) never leaves a truncated
    report, and a resumed run can trust any result file it finds.
    """
    path = Path(path)
    text = json.dumps(obj, indent=indent) + "\n"  # serialised first: a failure leaves nothing to clean up
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())  # on disk before the rename makes it visible
    return path


def printable(text: str) -> str:
    r"""``text`` as valid UTF-8: undecodable file-name bytes (surrogates from ``os.fsdecode``) become ``\xNN``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
