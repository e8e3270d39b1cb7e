"""Shared parsing for the framework's own commands: config files, ``--print_config`` and run factories."""

import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from typing import TypeVar

from jsonargparse import ActionConfigFile, ArgumentParser

from smalldata_pl.cli.lightning_cli import SmallDataCLI
from smalldata_pl.evaluation.runs import RunFactory

OptionsT = TypeVar("OptionsT")


def command_parser(prog: str, description: str, options: type, positional: Sequence[str] = ()) -> ArgumentParser:
    """A parser for a command that needs no training configuration: ``-c/--config`` YAML and ``--print_config``.

    Args:
        prog: The command as typed (``smalldata synth``).
        description: What the command does.
        options: Dataclass whose typed fields (documented in its docstring) are the command's options.
        positional: Fields given by position instead of ``--name``.
    """
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML file with the options below")
    fields = {f.name: f for f in dataclasses.fields(options)}
    for name in positional:
        kind = fields[name].type
        if typing.get_origin(kind) is list:  # a positional list takes one or more values
            parser.add_argument(name, type=typing.get_args(kind)[0], nargs="+")
        else:
            parser.add_argument(name, type=kind)
    parser.add_class_arguments(options, nested_key=None, as_group=False, skip=set(positional))
    return parser


def parse_options(parser: ArgumentParser, options: type[OptionsT], argv: Sequence[str]) -> OptionsT:
    """Parse ``argv`` into an instance of the ``options`` dataclass."""
    config = parser.parse_args(spelled_out(argv, options))
    return options(**{k: v for k, v in vars(config).items() if k != "config"})


def spelled_out(argv: Sequence[str], options: type) -> list[str]:
    """``argv`` as jsonargparse reads it: the ways people type the fields of ``options`` spelled out.

    Dashed names (:func:`underscored_names`), list items one by one (:func:`listed_values`) and bare switches
    (:func:`bare_switches`); every other argument is passed on unchanged.
    """
    return bare_switches(listed_values(underscored_names(argv, options), options), options)


def underscored_names(argv: Sequence[str], options: type) -> list[str]:
    """``--pixel-size`` (or ``--pixel-size=0.5``) becomes ``--pixel_size`` for the fields of ``options``.

    jsonargparse spells options as their field names; people also type them with dashes.
    """
    fields = {f.name for f in dataclasses.fields(options)}
    out: list[str] = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        underscored = name[2:].replace("-", "_")
        out.append(f"--{underscored}{sep}{value}" if name.startswith("--") and underscored in fields else arg)
    return out


# YAML's spellings of null: a list option that may be None is given one of these to unset it.
NULL_WORDS = {"null", "Null", "NULL", "~"}


def listed_values(argv: Sequence[str], options: type) -> list[str]:
    """``--names a b`` becomes ``--names=["a", "b"]`` for the list fields of ``options``.

    jsonargparse reads a list option as one YAML value (``--names [a,b]``); people type the items one by one,
    up to the next option. A single value that is already a list (``[a,b]``) or null is passed on as it is.
    """
    lists = {f"--{name}" for name, kind in typing.get_type_hints(options).items() if _is_list(kind)}
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg, i = argv[i], i + 1
        if arg not in lists:
            out.append(arg)
        elif i < len(argv) and (argv[i].lstrip().startswith("[") or argv[i] in NULL_WORDS):
            out.append(f"{arg}={argv[i]}")
            i += 1
        else:
            values = []
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            out.append(f"{arg}={json.dumps(values)}")
    return out


def _is_list(kind: object) -> bool:
    """Whether a field of type ``kind`` holds a list (``list[str]``, or ``list[str] | None``)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_is_list(member) for member in typing.get_args(kind))
    return typing.get_origin(kind) is list


BOOLEAN_WORDS = {"true", "false", "yes", "no", "1", "0"}


def _is_bool(kind: object) -> bool:
    """Whether a field of type ``kind`` is a switch: ``bool``, or ``bool | None``."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return set(typing.get_args(kind)) == {bool, type(None)}
    return kind is bool


def bare_switches(argv: Sequence[str], options: type) -> list[str]:
    """``--overwrite`` given bare becomes ``--overwrite true`` for the boolean options of ``options``.

    jsonargparse wants a value after every boolean flag; people type switches. Optional booleans (``bool | None``,
    where ``None`` means "as the model says") are switches too.
    """
    switches = {f"--{name}" for name, kind in typing.get_type_hints(options).items() if _is_bool(kind)}
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg in switches and (following is None or following.lower() not in BOOLEAN_WORDS):
            out.append("true")
    return out


def training_command(argv: Sequence[str], options: type) -> tuple[SmallDataCLI, RunFactory]:
    """Parse a command that wraps training: ``smalldata fit`` options plus the command's own ``options``.

    Returns:
        The CLI built from ``argv`` (its :attr:`~SmallDataCLI.options` hold the command's options) and a factory
        of fresh runs from the same arguments plus overrides.
    """
    base = spelled_out(argv, options)

    def new_run(overrides: Sequence[str]) -> SmallDataCLI:
        return SmallDataCLI(args=[*base, *overrides], run=False, options=options)

    return new_run([]), new_run
