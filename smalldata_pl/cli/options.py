"""Shared parsing for the framework's own commands: config files, ``--print_config`` and run factories."""

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from smalldata_pl.cli.lightning_cli import SmallDataCLI
from smalldata_pl.evaluation.runs import RunFactory


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


def parse_options(parser: ArgumentParser, options: type, argv: Sequence[str]) -> Any:
    """Parse ``argv`` into an instance of the ``options`` dataclass."""
    config = parser.parse_args(bare_switches(underscored_names(argv, options), options))
    return options(**{k: v for k, v in vars(config).items() if k != "config"})


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


BOOLEAN_WORDS = {"true", "false", "yes", "no", "1", "0"}


def bare_switches(argv: Sequence[str], options: type) -> list[str]:
    """``--overwrite`` given bare becomes ``--overwrite true`` for the boolean options of ``options``.

    jsonargparse wants a value after every boolean flag; people type switches.
    """
    switches = {f"--{f.name}" for f in dataclasses.fields(options) if f.type in (bool, "bool")}
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
    base = bare_switches(argv, options)

    def new_run(overrides: Sequence[str]) -> SmallDataCLI:
        return SmallDataCLI(args=[*base, *overrides], run=False, options=options)

    return new_run([]), new_run
