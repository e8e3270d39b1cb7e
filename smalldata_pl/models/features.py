"""Pooled features of a frozen backbone, computed once per image and view and kept in memory for the process."""

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from smalldata_pl.transforms.views import View

# Room for about 200,000 feature rows of 1,280 floats: every view of every image of many sizes and backbones.
DEFAULT_CACHE_BYTES = 2**30


class FeatureCache:
    """Feature rows keyed by ``(backbone, preprocessing, sample, view)``, least recently used dropped first.

    The key holds a fingerprint of the backbone's weights and of the preprocessing, so a fine-tuned backbone or
    another input size never reads stale rows; a second fit in the same process on the same images (the next
    cross-validation fold, the next study point) reads them instead of running the backbone again.

    Args:
        max_bytes: Memory the rows may take; the least recently used rows go first beyond it.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._rows: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: Hashable) -> np.ndarray | None:
        """The row stored under ``key``, or ``None``."""
        row = self._rows.get(key)
        if row is None:
            self.misses += 1
            return None
        self._rows.move_to_end(key)
        self.hits += 1
        return row

    def put(self, key: Hashable, row: np.ndarray) -> None:
        """Store ``row`` under ``key``, dropping the oldest rows beyond ``max_bytes``."""
        old = self._rows.pop(key, None)
        self._bytes -= old.nbytes if old is not None else 0
        self._rows[key] = row
        self._bytes += row.nbytes
        while self._bytes > self.max_bytes and self._rows:
            _, dropped = self._rows.popitem(last=False)
            self._bytes -= dropped.nbytes

    def clear(self) -> None:
        """Drop every row."""
        self._rows.clear()
        self._bytes = 0


# One cache per process: what every LinearProbe shares unless it is given its own.
FEATURE_CACHE = FeatureCache()


def module_fingerprint(module: nn.Module) -> str:
    """A hash of every parameter and buffer of ``module`` (names, shapes and bytes)."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode without gradients; every submodule's own train/eval mode is restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for submodule, training in modes:
            submodule.training = training


def pooled_features(
    backbone: nn.Module,
    dataset: Dataset,
    views: Sequence[View],
    context: Hashable,
    sample_keys: Sequence[Hashable | None],
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Pooled ``backbone`` features of every sample of ``dataset`` under every view, from the cache where possible.

    Args:
        backbone: Maps ``[N, C, H, W]`` images to pooled ``[N, F]`` features (a timm model with ``num_classes=0``).
        dataset: Deterministic samples (dicts with ``image``), i.e. an evaluation pipeline.
        views: D4 views of each image to compute (``[IDENTITY]`` for the image alone).
        context: What besides the backbone defines a feature (the preprocessing), part of every cache key.
        sample_keys: A stable identity per sample (file and tile), or ``None`` where there is none (not cached).
        cache: Where rows are looked up and stored; ``None`` computes everything.
        batch_size: Images per backbone forward pass.
        num_workers: Loader processes decoding the images that are not cached.
        device: Where the backbone runs.

    Returns:
        float32 ``[len(views), len(dataset), F]``.
    """
    if len(sample_keys) != len(dataset):  # type: ignore[arg-type]
        raise ValueError(f"{len(sample_keys)} sample keys for {len(dataset)} samples")  # type: ignore[arg-type]
    prefix = (module_fingerprint(backbone), context)
    keys = [[(prefix, s, v.name) if s is not None else None for v in views] for s in sample_keys]
    rows: dict[tuple[int, int], np.ndarray] = {}
    if cache is not None:
        for i, per_view in enumerate(keys):
            for j, key in enumerate(per_view):
                row = cache.get(key) if key is not None else None
                if row is not None:
                    rows[i, j] = row
    missing = [i for i in range(len(keys)) if any((i, j) not in rows for j in range(len(views)))]
    if missing:
        # batch_size=None: samples one by one (evaluation images may differ in shape), batched here by shape.
        loader = DataLoader(Subset(dataset, missing), batch_size=None, num_workers=num_workers)
        pending: list[tuple[int, int, torch.Tensor]] = []
        with evaluation_mode(backbone):
            for i, sample in zip(missing, loader, strict=True):
                for j, view in enumerate(views):
                    if (i, j) in rows:
                        continue
                    image = view.forward(sample["image"])
                    if pending and (len(pending) == batch_size or pending[0][2].shape != image.shape):
                        rows.update(_forward(backbone, pending, device))
                        pending = []
                    pending.append((i, j, image))
            if pending:
                rows.update(_forward(backbone, pending, device))
        if cache is not None:
            for i in missing:
                for j, key in enumerate(keys[i]):
                    if key is not None:
                        cache.put(key, rows[i, j])
    return np.stack([np.stack([rows[i, j] for i in range(len(keys))]) for j in range(len(views))])


def _forward(
    backbone: nn.Module, pending: list[tuple[int, int, torch.Tensor]], device: torch.device | str
) -> dict[tuple[int, int], np.ndarray]:
    images = torch.stack([image for _, _, image in pending]).to(device)
    features = backbone(images).float().cpu().numpy()
    if features.ndim != 2:
        raise ValueError(
            f"the backbone returned features of shape {features.shape}, not pooled [N, F]; "
            "create it with num_classes=0 (create_backbone does)"
        )
    return {(i, j): row.copy() for (i, j, _), row in zip(pending, features, strict=True)}
