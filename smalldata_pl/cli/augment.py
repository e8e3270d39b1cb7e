"""``smalldata augment``: write augmented copies to disk with a manifest that keeps every copy's group."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smalldata_pl.cli.options import training_command
from smalldata_pl.datasets.disk_copies import write_augmented


@dataclass
class AugmentOptions:
    """Options of ``smalldata augment``; the data and its augmentation come from ``smalldata fit`` options.

    Writes N augmented copies of every image of a folder DataModule (its training augmentation) plus
    manifest.csv (file,label,group,source); each copy keeps its source's group.

    Args:
        copies: Augmented copies per image.
        out: Target folder.
    """

    copies: int = 4
    out: str = "augmented"


def augment_command(argv: Sequence[str]) -> Path:
    """``smalldata augment -c config.yaml --copies 5 --out augmented/``."""
    cli, _ = training_command(argv, AugmentOptions)
    options, datamodule = cli.options, cli.datamodule
    records = getattr(datamodule, "records", None)
    if records is None:
        raise ValueError(f"{type(datamodule).__name__} has no image records to augment; use a folder DataModule")
    augment = datamodule.train_augmentation(getattr(datamodule, "augmentation", None))  # type: ignore[attr-defined]
    if augment is None:
        raise ValueError("the DataModule has no training augmentation; set data.init_args.augmentation")
    class_names = datamodule.class_names  # type: ignore[attr-defined]
    manifest = write_augmented(records, augment, class_names, options.copies, Path(options.out), datamodule.seed)  # type: ignore[attr-defined]
    print(f"wrote {options.copies * len(records)} augmented images and {manifest}")
    return manifest
