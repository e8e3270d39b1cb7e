"""Realism score of a generator: how well a small classifier tells its images from real ones (0.5 = not at all).

Each image becomes a vector of hand-crafted texture statistics (intensity and colour quantiles, gradient and
Laplacian-of-Gaussian energies, grey-level co-occurrence, local binary patterns, radial power spectrum) and a
standardised logistic regression separates synthetic from real under group K-fold. Hand-crafted statistics
rather than a CNN: they need no weights or GPU, take milliseconds per image, cannot overfit 100 images the way
a network would, and each names what differs (brightness, noise, edge sharpness, texture scale).
"""

import importlib
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import ndimage
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from smalldata_pl.datamodules.procedural import ProceduralDataModule
from smalldata_pl.datasets.folder import read_manifest
from smalldata_pl.generators.renderers import Renderer
from smalldata_pl.io.images import IMAGE_SUFFIXES, read_image
from smalldata_pl.transforms.pipeline import LUMA, to_channels

# (image path, group id) of a real image.
RealImage = tuple[Path, str]
GLCM_DISTANCES = (1, 2, 4, 8)
GLCM_PROPERTIES = ("contrast", "homogeneity", "energy", "correlation")


def texture_features(image: np.ndarray) -> dict[str, np.ndarray]:
    """Texture statistics of one ``(H, W)`` or ``(H, W, C)`` float image in [0, 1], by family.

    Families: ``intensity`` (per-channel quantiles and spread, chroma for colour), ``edges`` (gradient quantiles
    and Laplacian-of-Gaussian energy at four scales), ``glcm`` (co-occurrence contrast, homogeneity, energy and
    correlation at four distances), ``lbp`` (uniform local binary patterns at radii 1 and 3) and ``spectrum``
    (power in log-spaced frequency bands).
    """
    grey = image @ np.asarray(LUMA) if image.ndim == 3 else image
    channels = [image[..., c] for c in range(image.shape[2])] if image.ndim == 3 else [image]
    intensity = [np.quantile(c, (0.05, 0.25, 0.5, 0.75, 0.95)) for c in channels] + [[c.std() for c in channels]]
    if image.ndim == 3:  # colour: spread of each channel's departure from grey (chroma)
        intensity.append([np.std(c - grey) for c in channels])
    gradient = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    edges = [np.quantile(gradient, (0.5, 0.9, 0.99))]
    edges.append([np.abs(ndimage.gaussian_laplace(grey, s)).mean() * s**2 for s in (1, 2, 4, 8)])
    levels = np.clip(grey * 32, 0, 31).astype(np.uint8)
    glcm = graycomatrix(levels, GLCM_DISTANCES, np.deg2rad([0, 45, 90, 135]), levels=32, symmetric=True, normed=True)
    patterns = []
    for radius in (1, 3):
        codes = local_binary_pattern((grey * 255).astype(np.uint8), 8, radius, method="uniform")
        patterns.append(np.bincount(codes.astype(int).ravel(), minlength=10)[:10] / codes.size)
    families = {
        "intensity": intensity,
        "edges": edges,
        "glcm": [graycoprops(glcm, p).mean(axis=1) for p in GLCM_PROPERTIES],
        "lbp": patterns,
        "spectrum": [_radial_spectrum(grey)],
    }
    return {name: np.concatenate([np.ravel(f) for f in parts]).astype(np.float64) for name, parts in families.items()}


def stack_features(images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`texture_features` of many images: one ``(N, D)`` array per family."""
    per_image = [texture_features(image) for image in images]
    return {name: np.stack([f[name] for f in per_image]) for name in per_image[0]}


def _radial_spectrum(grey: np.ndarray, bins: int = 8) -> np.ndarray:
    """Share of the image's power in log-spaced spatial-frequency bands (texture scale, noise, blur)."""
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    rows, cols = np.indices(grey.shape)
    radius = np.hypot(rows - grey.shape[0] // 2, cols - grey.shape[1] // 2)
    edges = np.geomspace(1.0, min(grey.shape) / 2, bins + 1)
    bands = np.array([power[(radius >= lo) & (radius < hi)].sum() for lo, hi in itertools.pairwise(edges)])
    return np.log(bands / max(bands.sum(), 1e-12) + 1e-12)


def real_images(source: str | Path) -> list[RealImage]:
    """Real images with their groups, from a manifest CSV or a folder (searched recursively).

    A manifest (read like every manifest of the framework: UTF-8, a BOM accepted, cells stripped) needs an
    ``image`` (or ``file``) column with paths relative to it and may have ``group`` (the specimen each image
    came from); a folder holding ``manifest.csv`` is read through it; any other folder gives every image its own
    group.

    Raises:
        FileNotFoundError: If ``source`` does not exist, holds no images or its manifest lists missing files.
        ValueError: If a manifest is not UTF-8 or lacks the image column.
    """
    source = Path(source)
    if source.is_dir() and (source / "manifest.csv").is_file():
        source = source / "manifest.csv"
    if source.is_file():
        rows = read_manifest(source, required=())  # either of two image columns: checked below
        column = next((c for c in ("image", "file") if rows and c in rows[0]), None)
        if column is None:
            raise ValueError(f"manifest {source} needs an 'image' (or 'file') column with image paths relative to it")
        found = [(source.parent / row[column], row.get("group") or row[column]) for row in rows]
        missing = [str(path) for path, _ in found if not path.is_file()]
        if missing:
            # Checked before any crop is read, so a typo does not surface after minutes of work.
            raise FileNotFoundError(
                f"manifest {source} lists {len(missing)} missing image(s), e.g. {missing[0]}; paths are relative to "
                "the manifest's folder: fix or drop those rows"
            )
    elif source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        found = [(path, str(path.relative_to(source))) for path in paths]
    else:
        raise FileNotFoundError(f"real images {source} not found; give a folder of images or a manifest CSV")
    if not found:
        raise FileNotFoundError(f"no images in {source}; expected {', '.join(IMAGE_SUFFIXES)} files")
    return found


def real_crops(
    images: Sequence[RealImage], size: int, crops_per_image: int, channels: int, seed: int = 0
) -> tuple[list[np.ndarray], list[str]]:
    """Random ``size`` x ``size`` crops of each real image, converted to ``channels``, with their groups."""
    rng = np.random.default_rng(seed)
    crops, groups = [], []
    for path, group in images:
        image = to_channels(read_image(path), channels)
        height, width = image.shape[:2]
        if height < size or width < size:
            raise ValueError(f"real image {path} is {height}x{width}, smaller than the crop size {size}; lower --size")
        for _ in range(crops_per_image):
            top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
            crops.append(np.squeeze(image[top : top + size, left : left + size], axis=2) if channels == 1 else image)
            groups.append(group)
    return crops, groups


def synthetic_images(renderer: Renderer, count: int, channels: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` images of a renderer (sample ``i`` from ``default_rng([seed, i])``), converted to ``channels``."""
    images = []
    for index in range(count):
        image = np.asarray(renderer(np.random.default_rng([seed, index]), index)[0], dtype=np.float32)
        converted = to_channels(image, channels)
        images.append(converted[..., 0] if channels == 1 else converted)
    return images


def renderer_from_config(path: str | Path, size: int) -> Renderer:
    """The renderer of the procedural DataModule in a training YAML (its ``data`` section), at ``size`` pixels.

    Raises:
        ValueError: If the file does not configure a procedural DataModule.
    """
    config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    data = config.get("data", config)
    class_path = data.get("class_path") if isinstance(data, dict) else None
    if not class_path:
        raise ValueError(f"{path} has no data.class_path; give a training config of a procedural DataModule")
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, ProceduralDataModule)):
        raise ValueError(f"{path}: {class_path} is not a procedural DataModule (e.g. SyntheticGrainBoundaries)")
    datamodule = cls(**{**data.get("init_args", {}), "image_size": size})
    return datamodule.renderer()


def realism_score(
    real_features: dict[str, np.ndarray],
    real_groups: Sequence[str],
    synthetic_features: dict[str, np.ndarray],
    folds: int = 5,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Held-out balanced accuracy of a synthetic-vs-real classifier under group K-fold, with a 95 % interval.

    Every synthetic image is its own group (each is an independent draw); real images keep their specimen
    groups, so crops of one specimen never sit on both sides of a split. Balanced accuracy makes 0.5 chance
    whatever the class counts. The interval is a cluster bootstrap over groups of the pooled held-out
    predictions. The same classifier on each feature family alone says what gives the images away.

    Args:
        real_features: Per family, ``(N_real, D)`` features of the real images (:func:`stack_features`).
        real_groups: Specimen of each real image.
        synthetic_features: Per family, ``(N_synthetic, D)`` features of the synthetic images.
        folds: Group K-fold splits (fewer when there are fewer real groups).
        bootstrap: Group-bootstrap resamples.
        seed: Seed of the splits and the bootstrap.

    Returns:
        ``accuracy``, ``low``, ``high``, ``families`` (accuracy per feature family), counts, and per fold the real
        groups held out (``held_out_groups``).
    """
    names = list(real_features)
    count_real, count_synthetic = len(real_groups), len(next(iter(synthetic_features.values())))
    labels = np.r_[np.zeros(count_real, int), np.ones(count_synthetic, int)]
    groups = np.array([f"real:{g}" for g in real_groups] + [f"synthetic:{i}" for i in range(count_synthetic)])
    blocks = {name: np.vstack([real_features[name], synthetic_features[name]]) for name in names}
    blocks["all"] = np.hstack([blocks[name] for name in names])
    num_folds = min(folds, len(set(real_groups)), count_synthetic)
    if num_folds < 2:
        raise ValueError("need at least two real groups and two synthetic images to score realism")
    predicted = {name: np.empty_like(labels) for name in blocks}
    held_out: list[list[str]] = []
    splitter = StratifiedGroupKFold(num_folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(blocks["all"], labels, groups):
        for name, features in blocks.items():
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
            model.fit(features[train], labels[train])
            predicted[name][test] = model.predict(features[test])
        held_out.append(sorted({g.removeprefix("real:") for g in groups[test] if g.startswith("real:")}))
    low, high = _group_bootstrap(labels, predicted["all"], groups, bootstrap, seed, balanced_accuracy_score)
    return {
        "accuracy": float(balanced_accuracy_score(labels, predicted["all"])),
        "low": low,
        "high": high,
        "families": {name: float(balanced_accuracy_score(labels, predicted[name])) for name in names},
        "real_images": count_real,
        "real_groups": len(set(real_groups)),
        "synthetic_images": count_synthetic,
        "folds": num_folds,
        "held_out_groups": held_out,
    }


def _group_bootstrap(
    labels: np.ndarray,
    predicted: np.ndarray,
    groups: np.ndarray,
    rounds: int,
    seed: int,
    metric: Callable[[np.ndarray, np.ndarray], float],
) -> tuple[float, float]:
    """2.5 and 97.5 percentiles of ``metric`` over resamples of whole groups with replacement."""
    rng = np.random.default_rng(seed)
    names, index = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(index == g) for g in range(len(names))]
    values = []
    for _ in range(rounds):
        chosen = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
        if len(np.unique(labels[chosen])) == 2:
            values.append(metric(labels[chosen], predicted[chosen]))
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))
