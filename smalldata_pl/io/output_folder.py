"""Output folders and the names of what runs write into them: never clobbered, cleared only when asked."""

import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

# A run's comparable settings, written next to its TensorBoard events (callbacks.hparams); `cv` reads fold 0's to
# label its summary with the same settings.
SETTINGS_FILE = "settings.json"


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


def mask_file_name(stem: str, source: str, taken: Callable[[str], bool], always_digest: bool = False) -> str:
    """``<stem>.png``, or ``<stem>-<digest>.png`` when ``taken`` says another image already has that name.

    The digest is the first 8 hex digits of the SHA-1 of ``source`` (the image path): a pure function of the
    path, so the same image gets the same name in every run, whatever else is predicted with it. Should that
    be taken too (the same path written twice into one folder), a counter follows.

    Args:
        stem: The image's file stem.
        source: What identifies the image (its path).
        taken: Whether a mask file name is already used by another image.
        always_digest: Add the digest even when ``<stem>.png`` is free (for writers that cannot see every name).
    """
    stem = stem or "mask"
    name = f"{stem}.png"
    if not always_digest and not taken(name):
        return name
    # surrogateescape: paths that are not valid UTF-8 still hash, to the bytes the file system holds
    digest = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    name, n = f"{stem}-{digest}.png", 1
    while taken(name):
        name, n = f"{stem}-{digest}-{n}.png", n + 1
    return name
