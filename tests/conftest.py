"""Shared fixtures: every test runs in its own folder, offline, with tiny data written at test time."""

import csv
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

matplotlib.use("agg")
# The tests' models are tiny: one thread avoids thread start-up and oversubscription costing more than it saves.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in tmp_path so lightning_logs/ lands there; never reach the network for weights."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)
    return path


def pattern(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Class 0: horizontal stripes, class 1: vertical stripes, class 2: blobs; each image its own random structure."""
    from scipy.ndimage import gaussian_filter

    rows, cols = np.mgrid[0:size, 0:size]
    phase = rng.uniform(0, 2 * np.pi)
    base = [np.sin(rows / 2.0 + phase), np.sin(cols / 2.0 + phase), np.sin(rows / 5.0 + phase) * np.sin(cols / 5.0)]
    structure = gaussian_filter(rng.standard_normal((size, size)), 1.0)
    image = 0.5 + 0.2 * base[kind % 3] + 0.6 * structure + 0.03 * rng.standard_normal((size, size))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """root/<class>/<img>.png: 3 classes x 6 images, 40 px."""
    rng = np.random.default_rng(0)
    root = tmp_path / "micrographs"
    for kind, name in enumerate(["alpha", "beta", "gamma"]):
        for i in range(6):
            write_image(root / name / f"{name}_{i}.png", pattern(kind, 40, rng))
    return root


@pytest.fixture
def grouped_manifest(tmp_path: Path) -> Path:
    """manifest.csv with 2 classes x 5 groups x 2 images each (the two images of a group are near copies)."""
    rng = np.random.default_rng(1)
    root = tmp_path / "grouped"
    rows = []
    for kind, name in enumerate(["ferrite", "pearlite"]):
        for g in range(5):
            for i in range(2):
                rel = f"img/{name}_{g}_{i}.png"
                write_image(root / rel, pattern(kind, 32, rng))
                rows.append({"file": rel, "label": name, "group": f"{name}-{g}"})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def write_manifest_config(path: Path, manifest: Path, max_epochs: int, num_folds: int, **data: str) -> Path:
    """A seconds-long classification config (test_resnet, 32 px) over a manifest folder; ``data`` adds init_args."""
    extra = "".join(f"    {key}: {value}\n" for key, value in data.items())
    path.write_text(
        f"""
trainer:
  max_epochs: {max_epochs}
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
model:
  class_path: smalldata_pl.tasks.MicrographClassifier
  init_args:
    backbone: test_resnet
data:
  class_path: smalldata_pl.datamodules.MicrographFolder
  init_args:
    root: {manifest.parent}
    manifest: {manifest}
    num_folds: {num_folds}
    image_size: 32
    batch_size: 4
{extra}"""
    )
    return path


def write_segmenter_config(path: Path, **model: object) -> Path:
    """A seconds-long grain-boundary segmenter config (test_resnet, 32 px synthetic grains); ``model`` adds init_args."""
    extra = "".join(f", {key}: {value}" for key, value in model.items())
    path.write_text(
        f"""
trainer: {{max_epochs: 1, accelerator: cpu, enable_progress_bar: false, enable_model_summary: false}}
model:
  class_path: smalldata_pl.tasks.MicrographSegmenter
  init_args: {{backbone: test_resnet{extra}}}
data:
  class_path: smalldata_pl.datamodules.SyntheticGrainBoundaries
  init_args: {{train_size: 8, val_size: 4, test_size: 4, image_size: 32, batch_size: 4}}
"""
    )
    return path


def tensorboard_scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar series of a TensorBoard run folder (image tags as ``image:<tag>`` with no values)."""
    series: dict[str, list[float]] = {}
    for event_file in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
        series.update({f"image:{tag}": [] for tag in accumulator.Tags()["images"]})
    return series


def run_torchscript(path: Path, image: np.ndarray) -> np.ndarray:
    """The output of an exported TorchScript file on ``image``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in PyTorch
        model = torch.jit.load(path)
    with torch.inference_mode():
        return model(torch.from_numpy(image)).numpy()
