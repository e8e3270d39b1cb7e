"""The command layer: ``SmallDataCLI`` and one small module per command, parsing only."""

from smalldata_pl.cli.lightning_cli import SmallDataCLI
from smalldata_pl.cli.main import main

__all__ = ["SmallDataCLI", "main"]
