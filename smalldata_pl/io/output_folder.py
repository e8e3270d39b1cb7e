"""Output folders that never clobber: empty or new, cleared only when asked, never holding the inputs."""

import os
import shutil
from collections.abc import Sequence
from pathlib import Path


def prepare_output(out: Path, overwrite: bool = False, inputs: Sequence[Path] = ()) -> None:
    """Make ``out`` an empty, writable folder; a folder that holds files is only cleared with ``overwrite``.

    Args:
        out: The target folder.
        overwrite: Delete what ``out`` holds instead of refusing.
        inputs: Files the command reads; a folder holding any of them is never cleared.

    Raises:
        FileExistsError: If ``out`` holds files and ``overwrite`` is false.
        ValueError: If clearing ``out`` would delete the working directory or the inputs.
        OSError: If ``out`` cannot be created or written; the message names the folder.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        held = sorted(out.iterdir())
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(f"cannot write to output folder {out}: {reason}; choose a writable --out") from error
    if held and not overwrite:
        raise FileExistsError(
            f"output folder {out} is not empty ({len(held)} entries, e.g. {held[0].name}); choose an empty --out "
            "or pass --overwrite true to delete its contents first"
        )
    if held:
        resolved = out.resolve()
        if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
            raise ValueError(f"refusing to clear {out}: it holds the working directory; choose a dedicated --out")
        inside = [p for p in inputs if resolved in Path(p).resolve().parents]
        if inside:
            raise ValueError(f"refusing to clear {out}: it holds input file {inside[0]}; choose another --out")
        for entry in held:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    if not os.access(out, os.W_OK | os.X_OK):
        raise OSError(f"cannot write to output folder {out}: permission denied; choose a writable --out")
