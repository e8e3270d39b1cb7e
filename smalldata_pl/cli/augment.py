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
    manifest.csv: ``file,label,group,source`` for classification, ``image,mask,group,source`` for segmentation
    (image and mask transformed together). Images are first cropped of their data bar and resampled to the
    DataModule's target pixel size, like training images. Each copy keeps its source's group and is named by its
    source's path relative to the data root. Mask pixels with no label, the sources' (``ignore_value``) and the
    borders a rotation or shift with constant borders invents, are written as the DataModule's ``ignore_value``,
    else as 255 with a warning to train on the copies with ``ignore_value: 255``.

    Args:
        copies: Augmented copies per image.
        out: Target folder; it must be empty unless ``overwrite``.
        overwrite: Delete what ``out`` holds before writing (``--overwrite true``); otherwise a non-empty
            ``out`` is refused.
    """

    copies: int = 4
    out: str = "augmented"
    overwrite: bool = False


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
    manifest = write_augmented(
        records,
        augment,
        datamodule.class_names,  # type: ignore[attr-defined]
        options.copies,
        Path(options.out),
        datamodule.seed,  # type: ignore[attr-defined]
        root=getattr(datamodule, "root", None),
        overwrite=options.overwrite,
        scale=getattr(datamodule, "physical_scale", None),
        ignore_value=getattr(datamodule, "ignore_value", None),
    )
    print(f"wrote {options.copies * len(records)} augmented images and {manifest}")
    return manifest
