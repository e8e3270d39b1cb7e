"""Unlabelled target images for domain adaptation, their pseudo-labels, and training sets mixing both in."""

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from smalldata_pl.datasets.folder import Record, resolve_image_set, unlabelled_files
from smalldata_pl.datasets.sampling import split_key
from smalldata_pl.io.images import read_image
from smalldata_pl.transforms.pipeline import ImagePipeline, sample_seed


def target_records(
    root: str | Path | None, manifest: str | Path | None = None, limit: int | None = None
) -> list[Record]:
    """Unlabelled target images (every image under ``root``, or a manifest's ``file`` column), as records.

    Args:
        root: Folder of target images.
        manifest: CSV with a ``file`` column relative to ``root`` (or to its own folder without ``root``).
        limit: Keep at most this many, evenly spaced over the sorted list (deterministic).

    Returns:
        Records with label ``-1`` and group ``target/<stem>``.

    Raises:
        FileNotFoundError: If the folder, manifest or a listed file does not exist.
        ValueError: If no target images are found.
    """
    found = resolve_image_set(root, manifest, "target")
    if found is None:
        raise ValueError("no target images: set target_root (a folder of unlabelled real images) or target_manifest")
    files = unlabelled_files(*found)
    if limit is not None and len(files) > limit:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit).round()]
    return [Record(path, -1, f"target/{path.stem}") for path in files]


class PseudoLabelDataset(Dataset):
    """Target images with pseudo-label masks; unconfident pixels hold ``IGNORE_INDEX``.

    Args:
        paths: Image files.
        masks: Pseudo-label masks at each image's native size.
        pipeline: Training pipeline (augmentation, crop to the training size, normalisation).
        seed: Seed of the per-sample augmentation draws.
    """

    def __init__(self, paths: Sequence[Path], masks: Sequence[np.ndarray], pipeline: ImagePipeline, seed: int = 0):
        if len(paths) != len(masks):
            raise ValueError(f"{len(paths)} images but {len(masks)} pseudo-label masks")
        self.paths = list(paths)
        # int16 holds IGNORE_INDEX (-100) and any class index at a quarter of int64's memory.
        self.masks = [np.asarray(m, dtype=np.int16) for m in masks]
        self.pipeline = pipeline
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = split_key(key)
        image = read_image(self.paths[index])
        if image.shape[:2] != self.masks[index].shape:
            raise ValueError(
                f"pseudo-label of {self.paths[index]} is {self.masks[index].shape} but the image is {image.shape[:2]}"
            )
        # An offset of the index keeps these draws apart from the synthetic samples' at the same index.
        seed = sample_seed(self.seed + 1, epoch, index)
        sample = self.pipeline(image, mask=self.masks[index].astype(np.int64), seed=seed)
        sample["group"] = f"target/{self.paths[index].stem}"
        return sample


class ConcatSamples(Dataset):
    """Datasets one after another, passing the epoch of ``(epoch, index)`` keys through to each part.

    ``torch.utils.data.ConcatDataset`` takes plain indices only, and the parts here derive their (augmentation or
    procedural) randomness from the epoch.

    Args:
        parts: The datasets, in order.
        keys: Keep only these sample keys (those all parts have), so samples of different kinds batch together,
            e.g. real ones with a ``path`` and procedural ones without; ``None``: every key.
    """

    def __init__(self, parts: Sequence[Dataset], keys: Sequence[str] | None = None) -> None:
        self.parts = list(parts)
        self.keys = list(keys) if keys is not None else None
        self.ends = list(accumulate(len(p) for p in self.parts))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        part = bisect_right(self.ends, index)
        start = self.ends[part - 1] if part else 0
        sample = self.parts[part][(epoch, index - start)]
        return sample if self.keys is None else {key: sample[key] for key in self.keys}


def keep_confident(
    confidence: torch.Tensor, labels: torch.Tensor, threshold: float | torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """``labels`` where ``confidence`` reaches ``threshold``, ``ignore_index`` elsewhere.

    Args:
        confidence: Top-class probability of every pixel.
        labels: Arg-max class of every pixel (same shape).
        threshold: Least confidence kept: one for every class, or a ``[C]`` tensor with each class's own.
        ignore_index: Label of the pixels left out.
    """
    least = threshold[labels] if isinstance(threshold, torch.Tensor) else threshold
    return labels.masked_fill(confidence < least, ignore_index)


def class_balanced_thresholds(
    confidences: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    num_classes: int,
    threshold: float,
    share: float,
) -> torch.Tensor:
    """Each class's least kept confidence for class-balanced self-training (Zou et al., ECCV 2018).

    A single threshold keeps what the model is surest of, and on micrographs that is the majority class: the
    grain interiors pass 0.9 and thin boundaries hardly ever do, so the pseudo-labels teach the model to draw
    fewer boundaries. Here every class keeps at least the most confident ``share`` of the pixels predicted as it,
    pooled over all target images, even below ``threshold``; pixels at or above ``threshold`` stay kept.

    Args:
        confidences: Top-class probability maps of the target images.
        labels: Their arg-max class maps.
        num_classes: Number of classes (a class never predicted gets ``threshold``).
        threshold: Confidence that is always enough.
        share: Least share of each class's predicted pixels kept, in (0, 1].

    Returns:
        ``[num_classes]`` least confidences, none above ``threshold``.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"the kept share of each class must be in (0, 1], got {share}")
    confidence = torch.cat([c.flatten() for c in confidences])
    label = torch.cat([lab.flatten() for lab in labels])
    thresholds = torch.full((num_classes,), threshold, dtype=confidence.dtype)
    for cls in range(num_classes):
        values = confidence[label == cls]
        if len(values):
            kept = max(1, round(share * len(values)))
            # The kept-th largest value: the most confident `kept` pixels of the class reach it.
            kth = values.kthvalue(len(values) - kept + 1).values
            thresholds[cls] = torch.minimum(kth, thresholds[cls])
    return thresholds
