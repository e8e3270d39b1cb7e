"""A checkpoint as a function of an image: the preprocessing it was trained with, whole images or tiles."""

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smalldata_pl.io.images import read_image, to_unit_float
from smalldata_pl.tasks.base import TransferModule
from smalldata_pl.transforms.pipeline import IMAGENET_MEAN, IMAGENET_STD, ImagePipeline, normalization_stats


@dataclass
class Prediction:
    """What a model says about one image.

    Attributes:
        source: The file, or ``<array>``.
        probabilities: Classification: class probabilities ``[K]`` (the mean over tiles for tiled models).
        mask: Segmentation: class index per pixel ``[H, W]``.
        tiles: How many tiles or windows the image was cut into.
    """

    source: str
    probabilities: np.ndarray | None = None
    mask: np.ndarray | None = None
    tiles: int = 1


class Predictor:
    """Applies a trained classifier or segmenter to images of any size, with its training preprocessing.

    Classification resizes like the training evaluation did and, when the model was trained on tiles, averages
    the class probabilities over every tile of the image. Segmentation normalises the whole image and predicts it
    in one pass, or in overlapping windows of the training crop size when the image is larger.

    Example:
        >>> predictor = load_predictor("lightning_logs/run/version_0/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> predictor.predict("new_micrograph.tif").probabilities  # doctest: +SKIP

    Args:
        model: The trained task module.
        preprocessing: The checkpoint's preprocessing record (see :meth:`TransferModule.preprocessing`).
        device: Where to run the model.
        batch_size: Tiles per forward pass.
    """

    def __init__(
        self, model: TransferModule, preprocessing: dict[str, Any], device: str = "cpu", batch_size: int = 8
    ) -> None:
        self.model = model.to(device).eval()
        self.preprocessing = preprocessing
        self.device = device
        self.batch_size = batch_size
        self.class_names: list[str] = list(preprocessing.get("class_names") or getattr(model, "class_names", []))
        self.segmentation = hasattr(model, "predict_logits")
        in_chans = int(preprocessing.get("in_chans", 1))
        mean, std = normalization_stats(
            in_chans, preprocessing.get("mean", IMAGENET_MEAN), preprocessing.get("std", IMAGENET_STD)
        )
        image_size = None if self.segmentation else preprocessing.get("image_size")
        self.pipeline = ImagePipeline(in_chans, image_size, None, mean, std)

    def predict(self, source: str | Path | np.ndarray) -> Prediction:
        """Predict one image given as a file path or an array (integer or float, ``(H, W)`` or ``(H, W, C)``).

        Raises:
            ImageReadError: If the file cannot be read; the message names it.
        """
        name = "<array>" if isinstance(source, np.ndarray) else str(source)
        image = to_unit_float(source) if isinstance(source, np.ndarray) else read_image(source)
        with torch.inference_mode():
            if self.segmentation:
                return self._segment(image, name)
            return self._classify(image, name)

    def _classify(self, image: np.ndarray, name: str) -> Prediction:
        tiles = self._tiles(image)
        probabilities = []
        for start in range(0, len(tiles), self.batch_size):
            batch = torch.stack([self.pipeline(t)["image"] for t in tiles[start : start + self.batch_size]])
            probabilities.append(self.model(batch.to(self.device)).softmax(dim=1).cpu())
        mean = torch.cat(probabilities).mean(dim=0).numpy()
        return Prediction(name, probabilities=mean, tiles=len(tiles))

    def _tiles(self, image: np.ndarray) -> list[np.ndarray]:
        """The tiles the model was trained on (``tile_size``), or the whole image."""
        size = self.preprocessing.get("tile_size")
        height, width = image.shape[:2]
        if size is None or height < size or width < size:
            return [image]
        stride = self.preprocessing.get("tile_stride") or size
        return [
            image[top : top + size, left : left + size]
            for top in range(0, height - size + 1, stride)
            for left in range(0, width - size + 1, stride)
        ]

    def _segment(self, image: np.ndarray, name: str) -> Prediction:
        tensor = self.pipeline(image)["image"][None].to(self.device)
        model: Any = self.model
        crop = self.preprocessing.get("crop_size") or self.preprocessing.get("image_size")
        height, width = tensor.shape[-2:]
        configured = model.tile_size
        windows = 1
        if configured is None and crop is not None and max(height, width) > crop:
            model.tile_size = crop  # images larger than the training crop go window by window
        try:
            if model.tile_size is not None:
                stride = max(1, model.tile_size - model.tile_overlap)
                windows = int(np.ceil(max(height - model.tile_size, 0) / stride + 1)) * int(
                    np.ceil(max(width - model.tile_size, 0) / stride + 1)
                )
            logits = model.predict_logits(tensor)
        finally:
            model.tile_size = configured
        mask = logits.argmax(dim=1)[0].cpu().numpy().astype(np.int64)
        return Prediction(name, mask=mask, tiles=windows)


def load_predictor(checkpoint: str | Path, device: str = "cpu", batch_size: int = 8) -> Predictor:
    """A :class:`Predictor` from a smalldata_pl checkpoint alone: no config or DataModule needed.

    Raises:
        ValueError: If the checkpoint carries no preprocessing record or is not an image task.
    """
    path = Path(checkpoint)
    state = torch.load(path, map_location="cpu", weights_only=True)
    preprocessing = state.get("preprocessing")
    if not preprocessing:
        raise ValueError(
            f"{path} carries no preprocessing record; it was written by an older smalldata_pl. Resume it for one "
            "epoch with `smalldata fit --ckpt_path` to re-save it, or apply it through `smalldata predict -c CONFIG`"
        )
    module_name, _, class_name = preprocessing["task"].rpartition(".")
    task = getattr(importlib.import_module(module_name), class_name)
    if not issubclass(task, TransferModule) or not hasattr(task, "forward") or "Spectrum" in class_name:
        raise ValueError(f"{path} holds a {class_name}; `apply` takes micrograph classifiers and segmenters")
    # pretrained=False: the checkpoint holds every weight, so no weights file or download is needed to rebuild.
    model = task.load_from_checkpoint(path, map_location="cpu", pretrained=False)
    return Predictor(model, preprocessing, device, batch_size)
