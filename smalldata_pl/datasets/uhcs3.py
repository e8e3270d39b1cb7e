"""UHCS-3 on disk: the checksum-verified download of the 478 ultrahigh-carbon steel SEM micrographs."""

import csv
import hashlib
import logging
import shutil
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

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
    for row in tqdm(rows, desc="UHCS-3", unit="image"):
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
