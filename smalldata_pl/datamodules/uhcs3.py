"""UHCS-3: 478 SEM micrographs of ultrahigh-carbon steel in three classes, the framework's low-data set."""

from pathlib import Path
from typing import Any

from smalldata_pl.datamodules.folder import MicrographFolder
from smalldata_pl.datasets.uhcs3 import UHCS3_CLASSES, download_uhcs3
from smalldata_pl.transforms.invariances import LabelInvariances


class UHCS3(MicrographFolder):
    """Ultrahigh-carbon steel SEM micrographs: carbide network, pearlite, spheroidite (478 images, 645x475).

    Images: CC BY-SA 3.0 US (Hecht et al., UHCS, https://hdl.handle.net/11256/940); cite them. The ``group``
    column joins overlapping fields of view, so the default ``stratified_group`` split does not leak.

    Labels are morphologies of an isotropic steel, so rotations, flips, modest zoom and exposure changes are
    valid augmentations; the SEM images are greyscale, so colour changes are not.

    Args:
        root: Folder holding ``images/`` and ``labels.csv`` (the layout ``download`` creates).
        download: Fetch missing files from the public source, verifying checksums.
        augmentation: Training augmentation (preset, Albumentations dict or list).
        **kwargs: Split, tiling, loader, size and normalisation options of :class:`MicrographFolder`.
    """

    invariances = LabelInvariances(rotation=True, mirror=True, scale=True, intensity=True, colour=False)

    def __init__(
        self,
        root: str | Path = "data/uhcs3",
        download: bool = False,
        augmentation: str | dict | list | None = "micrograph",
        **kwargs: Any,
    ) -> None:
        labels = Path(root).expanduser() / "labels.csv"
        if download:
            labels = download_uhcs3(root)
        elif not labels.is_file():
            raise FileNotFoundError(f"{labels} not found: pass data.download=true to fetch UHCS-3, or fix data.root")
        super().__init__(root, manifest=labels, class_names=UHCS3_CLASSES, augmentation=augmentation, **kwargs)
