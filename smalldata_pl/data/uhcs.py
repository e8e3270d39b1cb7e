"""UHCS-3: 478 SEM micrographs of ultrahigh-carbon steel in three classes, the framework's low-data set."""

import csv
import hashlib
import logging
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from smalldata_pl.data.folder import MicrographFolder
from smalldata_pl.data.leakage import LeakageMode
from smalldata_pl.data.physics import LabelInvariances
from smalldata_pl.data.splits import SplitKind
from smalldata_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

UHCS3_CLASSES = ("carbide_network", "pearlite", "spheroidite")
# White et al., "Digital Fingerprinting of Microstructures": the 3-class form of the CMU/NIST UHCS set.
UHCS3_URL = (
    "https://raw.githubusercontent.com/mikedwhite/microstructural-fingerprinting-tools/"
    "969ac9d0/examples/data/dataset2/micrographs"
)
UHCS3_MANIFEST = Path(__file__).with_name("uhcs3_manifest.csv")


def download_uhcs3(root: str | Path, base_url: str = UHCS3_URL, manifest: Path = UHCS3_MANIFEST) -> Path:
    """Fetch the UHCS-3 images into ``root/images`` and verify each file's SHA-256.

    Files already present with the right checksum are kept, so an interrupted download resumes.

    Args:
        root: Target folder; receives ``images/`` and ``labels.csv``.
        base_url: Where the files live (``file://`` URLs work for local mirrors).
        manifest: CSV ``file,label,group,sha256`` listing the files to fetch.

    Returns:
        The path of the written ``labels.csv``.

    Raises:
        OSError: If a file cannot be fetched or its checksum does not match.
    """
    root = Path(root).expanduser()
    (root / "images").mkdir(parents=True, exist_ok=True)
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        target = root / row["file"]
        if target.is_file() and _sha256(target) == row["sha256"]:
            continue
        url = f"{base_url.rstrip('/')}/{Path(row['file']).name}"
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as partial:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    shutil.copyfileobj(response, partial)
            except OSError as error:
                Path(partial.name).unlink(missing_ok=True)
                raise OSError(f"cannot download {url}: {error}; check the connection or pass a local root") from error
        digest = _sha256(Path(partial.name))
        if digest != row["sha256"]:
            Path(partial.name).unlink()
            raise OSError(f"checksum mismatch for {url}: got {digest[:12]}…, expected {row['sha256'][:12]}…")
        Path(partial.name).replace(target)
    labels = root / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "group"])
        writer.writerows([r["file"], r["label"], r["group"]] for r in rows)
    log.info("UHCS-3 ready in %s (%d images)", root, len(rows))
    return labels


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        num_folds: K of the K-fold split.
        fold: Validation fold.
        split: ``stratified``, ``group`` or ``stratified_group``; never split these images at random.
        leakage_check: Look for transformed copies across the split at setup: ``error``, ``warn`` or ``off``.
        train_per_class: Keep only this many training images per class (learning curves).
        subsample_seed: Which random subsample.
        epoch_samples: Least number of training samples per epoch (small subsets are drawn in several passes).
        batch_size: Samples per batch.
        num_workers: Loader workers.
        in_chans: Channels delivered to the model.
        image_size: Side of the delivered images.
        seed: Split, shuffle and augmentation seed.
        mean: RGB normalisation mean of the backbone.
        std: RGB normalisation std of the backbone.
    """

    invariances = LabelInvariances(rotation=True, mirror=True, scale=True, intensity=True, colour=False)

    def __init__(
        self,
        root: str | Path = "data/uhcs3",
        download: bool = False,
        augmentation: str | dict | list | None = "micrograph",
        num_folds: int = 5,
        fold: int = 0,
        split: SplitKind = "stratified_group",
        leakage_check: LeakageMode = "error",
        train_per_class: int | None = None,
        subsample_seed: int = 0,
        epoch_samples: int | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        in_chans: int = 1,
        image_size: int | None = 224,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        labels = Path(root).expanduser() / "labels.csv"
        if download:
            labels = download_uhcs3(root)
        elif not labels.is_file():
            raise FileNotFoundError(f"{labels} not found: pass data.download=true to fetch UHCS-3, or fix data.root")
        super().__init__(
            root,
            manifest=labels,
            class_names=UHCS3_CLASSES,
            augmentation=augmentation,
            num_folds=num_folds,
            fold=fold,
            split=split,
            leakage_check=leakage_check,
            train_per_class=train_per_class,
            subsample_seed=subsample_seed,
            epoch_samples=epoch_samples,
            batch_size=batch_size,
            num_workers=num_workers,
            in_chans=in_chans,
            image_size=image_size,
            seed=seed,
            mean=mean,
            std=std,
        )
