"""Checkpoint files read without running their pickled code, and hyperparameters that stay readable that way."""

import contextlib
import dataclasses
import pathlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

# A callback given a Path (e.g. ModelCheckpoint(dirpath=Path(...))) keeps it in its state; a path is plain data.
_PATH_TYPES: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
]


@contextlib.contextmanager
def paths_allowed() -> Iterator[None]:
    """Within it, ``weights_only`` loads (``torch.load`` and Lightning's ``load_from_checkpoint``) accept paths."""
    with torch.serialization.safe_globals(_PATH_TYPES):
        yield


def read_checkpoint(path: str | Path) -> Any:
    """A checkpoint or state-dict file loaded with ``weights_only=True``: tensors and plain data, no code."""
    with paths_allowed():
        return torch.load(path, map_location="cpu", weights_only=True)


def plain_hyperparameters(value: Any) -> Any:
    """``value`` with paths as strings and argument objects as the records LightningCLI would write.

    A dataclass becomes the mapping of its fields. Every object with ``hparams`` (a DataModule given as an argument,
    e.g. ``mix_in``) becomes its ``{"class_path", "init_args"}`` record. A checkpoint's hyperparameters are pickled;
    a pickled DataModule cannot be loaded with ``weights_only=True`` (what ``smalldata apply`` does) and a pickled
    ``PosixPath`` not at all on Windows.
    """
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # e.g. a GrainStyle: its fields
        return plain_hyperparameters(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {key: plain_hyperparameters(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_hyperparameters(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain_hyperparameters(item) for item in value)
    hparams = getattr(value, "hparams", None)
    if hparams is not None and not isinstance(value, type):
        kind = type(value)
        return {
            "class_path": f"{kind.__module__}.{kind.__qualname__}",
            "init_args": plain_hyperparameters(dict(hparams)),
        }
    return value
