"""Every DataModule shows all of its parents' options: forwarded by keyword, resolved by jsonargparse."""

import inspect

import pytest
from jsonargparse import ArgumentParser

from smalldata_pl.datamodules import (
    UHCS3,
    MicrographDataModule,
    MicrographFolder,
    ProceduralDataModule,
    SegmentationFolder,
    Superalloy,
    SyntheticGrainBoundaries,
    SyntheticGrains,
    SyntheticPrecipitates,
)

# What each subclass fixes itself instead of exposing.
FIXED = {
    UHCS3: {"manifest", "class_names"},
    Superalloy: {"class_names"},
    SegmentationFolder: {"image_size"},
    SyntheticGrains: {"class_names"},
    SyntheticGrainBoundaries: {"class_names"},
    SyntheticPrecipitates: {"class_names"},
}


def _own_parameters(cls: type) -> set[str]:
    return {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


@pytest.mark.parametrize("cls", [*FIXED, MicrographFolder, ProceduralDataModule], ids=lambda c: c.__name__)
def test_every_parent_option_shows_in_the_parser(cls: type):
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    keys = parser.get_defaults().keys()  # flattened dotted keys of jsonargparse's Namespace
    shown = {key.removeprefix("data.") for key in keys if key.startswith("data.")}
    shown = {key.split(".")[0] for key in shown}
    expected = set().union(*(_own_parameters(c) for c in cls.__mro__ if issubclass(c, MicrographDataModule)))
    fixed = set().union(*(FIXED.get(c, set()) for c in cls.__mro__))
    assert shown == expected - (fixed - _own_parameters(cls))
