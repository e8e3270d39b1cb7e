"""``smalldata augment``: write augmented copies to disk with a manifest that keeps every copy's group."""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from smalldata_pl.data.io import read_image, write_csv
from smalldata_pl.data.transforms import sample_seed


def save_unit_image(path: Path, image: np.ndarray, bits: int = 8) -> None:
    """Write a float image in [0, 1] as an 8- or 16-bit PNG (grey or RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.clip(image, 0.0, 1.0)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if bits == 16 and image.ndim == 2:
        Image.fromarray((image * 65535).round().astype(np.uint16)).save(path)
    else:
        Image.fromarray((image * 255).round().astype(np.uint8)).save(path)


def augment_command(argv: list[str]) -> Path:
    """``smalldata augment -c config.yaml --copies 5 --out augmented/``."""
    parser = argparse.ArgumentParser(
        prog="smalldata augment",
        description="Write N augmented copies of every image of a folder DataModule (its training augmentation) "
        "plus manifest.csv (file,label,group,source); each copy keeps its source's group, so splits and the "
        "leakage guard still treat copies and source as one micrograph. Other options are `smalldata fit` options.",
    )
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("augmented"))
    known, fit_args = parser.parse_known_args(argv)

    from smalldata_pl.cli import SmallDataCLI

    datamodule = SmallDataCLI(args=fit_args, run=False).datamodule
    records = getattr(datamodule, "records", None)
    if records is None:
        raise ValueError(f"{type(datamodule).__name__} has no image records to augment; use a folder DataModule")
    augment = datamodule.train_augmentation(getattr(datamodule, "augmentation", None))
    if augment is None:
        raise ValueError("the DataModule has no training augmentation; set data.init_args.augmentation")
    rows = []
    for index, record in enumerate(records):
        image = read_image(record.path)
        image = image[:, :, :3] if image.ndim == 3 else image[:, :, None]
        for copy in range(known.copies):
            augment.set_random_seed(sample_seed(datamodule.seed, copy, index))
            out = augment(image=image.astype(np.float32))["image"]
            name = f"{datamodule.class_names[record.label]}/{record.path.stem}_aug{copy}.png"
            save_unit_image(known.out / name, out)
            rows.append(
                {
                    "file": name,
                    "label": datamodule.class_names[record.label],
                    "group": record.group,
                    "source": str(record.path),
                }
            )
    manifest = write_csv(known.out / "manifest.csv", rows, ["file", "label", "group", "source"])
    print(f"wrote {len(rows)} augmented images and {manifest}")
    return manifest
