"""A checkpoint as a function of an image: the preprocessing it was trained with, whole images or tiles."""

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from smalldata_pl.datasets.folder import tile_origins
from smalldata_pl.datasets.segmentation import UNLABELLED
from smalldata_pl.inference.boundary_maps import (
    EdgeWeight,
    check_edge_weight,
    close_boundaries,
    fuse_class_edges,
    likeliest_other_class,
    thin_boundaries,
)
from smalldata_pl.inference.ensemble import ModelEnsemble, ensemble
from smalldata_pl.inference.tta import segment, view_logits, views_from_invariances
from smalldata_pl.inference.unsure import UnsureBelow, check_unsure_below, unsure_pixels
from smalldata_pl.io.images import read_image, to_unit_float
from smalldata_pl.models.checkpoint_files import paths_allowed, read_checkpoint
from smalldata_pl.models.gradcam import gradcam
from smalldata_pl.models.unet import sliding_window, window_origins
from smalldata_pl.tasks.base import TransferModule
from smalldata_pl.tasks.classification import MicrographClassifier
from smalldata_pl.tasks.segmentation import MicrographSegmenter
from smalldata_pl.transforms.pipeline import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImagePipeline,
    PhysicalScale,
    normalization_stats,
)
from smalldata_pl.transforms.views import IDENTITY


@dataclass
class Prediction:
    """What a model says about one image.

    Attributes:
        source: The file, or ``<array>``.
        probabilities: Classification: class probabilities ``[K]``, the mean of the softmax over tiles (tiled
            models) and test-time augmentation views, after the predictor's temperature. Segmentation: class
            probabilities ``[K, H, W]`` (float32) at the mask's size, those the mask was decided from (averaged over
            views, scales and ensemble members; with the image's edges fused in when ``edge_weight`` is set).
        mask: Segmentation: class index per pixel ``[H, W]`` of the image as read, less any cropped data bar.
        tiles: How many tiles or windows the image was cut into (summed over the scales of a multi-scale
            segmentation).
        logits: Classification: the identity view's logits ``[K]`` before any temperature (the mean over tiles
            for tiled models), what temperature scaling is fitted on.
        views: How many test-time augmentation views were averaged (1 without TTA).
        unsure: Segmentation with ``unsure_below``: ``[H, W]``, ``True`` where the model is unsure of the mask's
            class (:func:`~smalldata_pl.inference.unsure.unsure_pixels`), the pixels that pseudo-labels leave
            unlabelled.
        image: Segmentation: the image as read, in [0, 1], less any cropped data bar: what the mask covers (kept so
            that an overlay needs no second read of the file).
    """

    source: str
    probabilities: np.ndarray | None = None
    mask: np.ndarray | None = None
    tiles: int = 1
    logits: np.ndarray | None = None
    views: int = 1
    unsure: np.ndarray | None = None
    image: np.ndarray | None = None


class Predictor:
    """Applies a trained classifier or segmenter to images of any size, with its training preprocessing.

    Classification resizes like the training evaluation did and, when the model was trained on tiles, averages
    the class probabilities over every tile of the image. Segmentation normalises the whole image and predicts it
    in one pass, or in overlapping windows of the training crop size when the image is larger; the windows go
    through the network ``batch_size`` at a time.

    First of all, as in training, the instrument's data bar is cropped (when the checkpoint did so and the file's
    metadata gives its height) and, for a checkpoint trained with ``target_pixel_size``, the image is resampled
    to that pixel size; the pixel size is ``pixel_size`` when given, else the file's metadata. Masks and Grad-CAM
    maps come back at the image's own pixel size.

    With ``tta`` the probabilities are averaged over the D4 views (quarter turns, flips, transposes) that the
    checkpoint's declared invariances allow: none where both rotation and mirror are forbidden, only the mirrors
    where rotation is, only the quarter turns where mirror is. Segmentation maps each view's logits back with
    the view's inverse before averaging. With several ``scales`` a segmenter also sees the image zoomed by each
    factor (after any resampling to the training pixel size) and its probabilities, mapped back to one size, are
    averaged: a multi-scale test-time augmentation.

    Example:
        >>> predictor = load_predictor("lightning_logs/run/version_0/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> predictor.predict("new_micrograph.tif").probabilities  # doctest: +SKIP

    Args:
        model: The trained task module, or an ensemble of several (:func:`~smalldata_pl.inference.ensemble.ensemble`).
        preprocessing: The checkpoint's preprocessing record (see :meth:`TransferModule.preprocessing`).
        device: Where to run the model.
        batch_size: Tiles per forward pass.
        tta: Test-time augmentation over the views the declared invariances allow.
        temperature: Classification logits are divided by it before the softmax (see
            :func:`~smalldata_pl.inference.calibration.calibrate_from_labelled_images`); 1 leaves them as they are.
        pixel_size: Micrometres per pixel of every image, preferred to the files' metadata (needed for arrays
            and files without metadata when the checkpoint was trained with ``target_pixel_size``).
        edge_weight: Boundary segmenters: mix this share of the image's own colour-gradient map into the
            boundary probability before the decision (:func:`~smalldata_pl.inference.boundary_maps.fuse_edges`);
            0 trusts the network alone; ``"auto"`` calibrates the edges against the network on each image and
            combines the two by Bayes' rule, with no share to set.
        close_boundaries: Boundary segmenters: draw closed grains by marked watershed of the (fused) boundary
            probability (:func:`~smalldata_pl.inference.boundary_maps.close_boundaries`) instead of cutting it.
        scales: Segmenters: zoom factors the image is predicted at, probabilities averaged; ``(1.0,)`` predicts it
            once as it is.
        boundary_width: Boundary segmenters: redraw the decided boundaries along their centre lines at this
            ``boundary_width`` of the synthetic labels (1: one pixel; 2: about 3 px;
            :func:`~smalldata_pl.inference.boundary_maps.thin_boundaries`), e.g. to train on the masks as labels;
            ``None`` keeps them as decided.
        unsure_below: Segmenters: mark the pixels whose class in the final mask (after any redrawing) has a
            probability below this as unsure (:attr:`Prediction.unsure`), so that masks used as pseudo-labels
            teach nothing there: where the model hesitates, and where a redrawn boundary disagrees with its
            decision. ``"auto"``: per image and class, as many of the least sure pixels as the model expects to
            be wrong (:func:`~smalldata_pl.inference.unsure.unsure_pixels`), no threshold to set. ``None`` marks
            none.

    Raises:
        ValueError: For a temperature that is not positive, or one given to a segmenter; for ``edge_weight``
            neither in [0, 1] nor ``"auto"``; for either boundary option with a model that has no boundary class;
            for scales that are empty or not positive, or given to a classifier; for ``unsure_below`` neither in
            (0, 1) nor ``"auto"``, given to a classifier, or for a model with a class numbered ``UNLABELLED``.
    """

    def __init__(
        self,
        model: TransferModule | ModelEnsemble,
        preprocessing: dict[str, Any],
        device: str = "cpu",
        batch_size: int = 8,
        tta: bool = False,
        temperature: float = 1.0,
        pixel_size: float | None = None,
        edge_weight: EdgeWeight = 0.0,
        close_boundaries: bool = False,
        scales: Sequence[float] = (1.0,),
        boundary_width: int | None = None,
        unsure_below: UnsureBelow | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if pixel_size is not None and not pixel_size > 0:
            raise ValueError(f"pixel_size must be positive (µm per pixel), got {pixel_size}")
        self.model = model.to(device).eval()
        self.preprocessing = preprocessing
        self.device = device
        self.batch_size = batch_size
        self.class_names: list[str] = list(preprocessing.get("class_names") or getattr(model, "class_names", []))
        self.segmentation = hasattr(model, "predict_logits")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if self.segmentation and temperature != 1:
            raise ValueError("temperature scaling calibrates classifiers' probabilities; this model is a segmenter")
        self.temperature = float(temperature)
        self.views = views_from_invariances(preprocessing.get("invariances")) if tta else [IDENTITY]
        in_chans = int(preprocessing.get("in_chans", 1))
        mean, std = normalization_stats(
            in_chans, preprocessing.get("mean", IMAGENET_MEAN), preprocessing.get("std", IMAGENET_STD)
        )
        image_size = None if self.segmentation else preprocessing.get("image_size")
        resize = preprocessing.get("resize", "squash")  # checkpoints from before the policy squashed
        self.pipeline = ImagePipeline(in_chans, image_size, None, mean, std, resize)
        # Checkpoints from before the physical scale step neither resampled nor cropped a data bar.
        self.scale = PhysicalScale(preprocessing.get("target_pixel_size"), preprocessing.get("crop_data_bar", False))
        self.pixel_size = pixel_size
        self.boundary_class: int | None = getattr(model, "boundary_class", None)
        self.edge_weight = check_edge_weight(edge_weight)
        if (edge_weight != 0 or close_boundaries) and self.boundary_class is None:
            raise ValueError(
                "edge_weight and close_boundaries refine grain-boundary maps; this checkpoint's model has no "
                "boundary_class (train it with model.init_args.boundary_class set to the boundary class index)"
            )
        self.close_boundaries = close_boundaries
        if boundary_width is not None and self.boundary_class is None:
            raise ValueError("boundary_width redraws grain boundaries; this checkpoint's model has no boundary_class")
        if boundary_width is not None and boundary_width < 1:
            raise ValueError(f"boundary_width must be at least 1 (1: one-pixel boundaries), got {boundary_width}")
        self.boundary_width = boundary_width
        self.scales = tuple(float(scale) for scale in scales)
        if not self.scales or not all(scale > 0 for scale in self.scales):
            raise ValueError(f"scales must be one or more positive zoom factors, got {list(scales)}")
        if not self.segmentation and self.scales != (1.0,):
            raise ValueError("scales zoom a segmenter's input; a classifier resizes to its training image_size")
        if unsure_below is not None:
            if not self.segmentation:
                raise ValueError("unsure_below marks a segmenter's unsure pixels; this model is a classifier")
            check_unsure_below(unsure_below)
            if len(self.class_names) > UNLABELLED:
                raise ValueError(f"unsure_below writes {UNLABELLED} for unsure pixels, a class of this model")
        self.unsure_below = unsure_below

    def predict(self, source: str | Path | np.ndarray, pixel_size: float | None = None) -> Prediction:
        """Predict one image given as a file path or an array (integer or float, ``(H, W)`` or ``(H, W, C)``).

        Args:
            source: The image file or array.
            pixel_size: Micrometres per pixel of this image, preferred to the predictor's and the file's.

        Raises:
            ImageReadError: If the file cannot be read; the message names it.
            PixelSizeError: If the checkpoint resamples to a target pixel size and this image's is unknown.
        """
        name, image, native, _ = self._load(source, pixel_size)
        with torch.inference_mode():
            if self.segmentation:
                return self._segment(image, name, native)
            return self._classify(image, name)

    def _load(
        self, source: str | Path | np.ndarray, pixel_size: float | None
    ) -> tuple[str, np.ndarray, np.ndarray, int]:
        """``(name, image at the model's scale, image as read less the data bar, data-bar rows)``."""
        given = pixel_size if pixel_size is not None else self.pixel_size
        if isinstance(source, np.ndarray):
            name, image, bar = "<array>", to_unit_float(source), 0
        else:
            name, image = str(source), read_image(source)
            given, bar = self.scale.resolve(source, given)
        scaled, _ = self.scale(image, given, bar, source=name)
        return name, scaled, image[: image.shape[0] - bar], bar

    def explain(
        self, source: str | Path | np.ndarray, target: int | None = None, pixel_size: float | None = None
    ) -> np.ndarray:
        """Grad-CAM map of a classifier for one image, ``[H, W]`` in [0, 1] at the image's own size.

        Tiled models get one map per tile, placed where the tile lies (overlaps averaged). No TTA views. A cropped
        data bar gets 0.

        Args:
            source: Image file or array, as for :meth:`predict`.
            target: Class index to explain; ``None`` explains the predicted class.
            pixel_size: Micrometres per pixel of this image, as for :meth:`predict`.

        Raises:
            ValueError: For a segmenter or an ensemble, or a backbone without a spatial feature map.
        """
        if self.segmentation:
            raise ValueError("Grad-CAM maps explain classifiers; this model is a segmenter")
        if isinstance(self.model, ModelEnsemble):
            raise ValueError("Grad-CAM maps explain one model; explain each checkpoint of the ensemble on its own")
        _, image, native, bar = self._load(source, pixel_size)
        rows, columns = native.shape[:2]
        if target is None:
            with torch.inference_mode():
                probabilities = self._classify(image, "").probabilities
            assert probabilities is not None
            target = int(np.argmax(probabilities))
        height, width = image.shape[:2]
        total = torch.zeros(height, width)
        count = torch.zeros(height, width)
        for top, left, tile in self._tiles(image):
            cam = torch.from_numpy(gradcam(self.model, self.pipeline(tile)["image"], target))
            h, w = tile.shape[:2]
            total[top : top + h, left : left + w] += F.interpolate(
                cam[None, None], (h, w), mode="bilinear", align_corners=False
            )[0, 0]
            count[top : top + h, left : left + w] += 1
        stitched = total / count.clamp(min=1)
        if (height, width) != (rows, columns):  # back from the model's pixel scale to the image's own
            stitched = F.interpolate(stitched[None, None], (rows, columns), mode="bilinear", align_corners=False)[0, 0]
        cam_map = F.pad(stitched, (0, 0, 0, bar)).numpy()  # the data bar: nothing the model looked at
        peak = float(cam_map.max())
        return (cam_map / peak if peak > 0 else cam_map).astype(np.float32)

    def _classify(self, image: np.ndarray, name: str) -> Prediction:
        tiles = [tile for _, _, tile in self._tiles(image)]
        probabilities, logits = [], []
        for start in range(0, len(tiles), self.batch_size):
            batch = torch.stack([self.pipeline(t)["image"] for t in tiles[start : start + self.batch_size]])
            views = view_logits(self.model, batch.to(self.device), self.views).cpu()  # [V, N, K]
            probabilities.append((views / self.temperature).softmax(dim=-1).mean(dim=0))
            logits.append(views[0])  # views[0] is the identity
        return Prediction(
            name,
            probabilities=torch.cat(probabilities).mean(dim=0).numpy(),
            tiles=len(tiles),
            logits=torch.cat(logits).mean(dim=0).numpy(),
            views=len(self.views),
        )

    def _tiles(self, image: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """``(top, left, tile)`` for the tiles the model was trained on (``tile_size``), or the whole image."""
        size = self.preprocessing.get("tile_size")
        height, width = image.shape[:2]
        if size is None or height < size or width < size:
            return [(0, 0, image)]
        stride = self.preprocessing.get("tile_stride") or size
        return [
            (top, left, image[top : top + size, left : left + size])
            for top, left in tile_origins(height, width, size, stride)
        ]

    def _segment(self, image: np.ndarray, name: str, native: np.ndarray) -> Prediction:
        tensor = self.pipeline(image)["image"][None].to(self.device)
        height, width = tensor.shape[-2:]
        windows, maps = 0, []
        for scale in self.scales:
            zoomed = tensor
            if scale != 1:  # antialiased when shrinking, so fine texture does not alias into false edges
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                zoomed = F.interpolate(tensor, size, mode="bilinear", align_corners=False, antialias=scale < 1)
            count, probabilities = self._segment_tensor(zoomed)
            if scale != 1:
                probabilities = F.interpolate(probabilities, (height, width), mode="bilinear", align_corners=False)
            windows += count
            maps.append(probabilities)
        probabilities = torch.stack(maps).mean(dim=0)
        rows, columns = native.shape[:2]
        if (height, width) != (rows, columns):  # back from the model's pixel scale to the image's own
            probabilities = F.interpolate(probabilities, (rows, columns), mode="bilinear", align_corners=False)
        per_class = probabilities[0].float().cpu().numpy()
        if self.edge_weight != 0 or self.close_boundaries:  # only set for boundary segmenters (__init__)
            per_class, mask = self._boundary_mask(per_class, native)
        else:
            mask = per_class.argmax(axis=0).astype(np.int64)
        if self.boundary_width is not None:  # only set for boundary segmenters (__init__)
            assert self.boundary_class is not None
            mask = thin_boundaries(mask, per_class, self.boundary_class, self.boundary_width)
        unsure = None
        if self.unsure_below is not None:
            unsure = unsure_pixels(per_class, mask, self.unsure_below)
        return Prediction(
            name, probabilities=per_class, mask=mask, tiles=windows, views=len(self.views), unsure=unsure, image=native
        )

    def _segment_tensor(self, tensor: torch.Tensor) -> tuple[int, torch.Tensor]:
        """Windows used and class probabilities of one normalised image tensor, at its own size."""
        model: Any = self.model
        height, width = tensor.shape[-2:]
        # The model's own sliding-window setting, else windows of the training crop for larger images.
        tile = model.tile_size or _training_window(self.preprocessing)
        windows = 1
        predict = model.predict_logits
        if tile is not None and max(height, width) > tile:
            windows = len(window_origins(height, width, tile, model.tile_overlap))

            def predict(images: torch.Tensor) -> torch.Tensor:
                return sliding_window(model, images, tile, model.tile_overlap, self.batch_size)

        return windows, segment(predict, tensor, self.views)

    def _boundary_mask(self, probabilities: np.ndarray, native: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities with the boundary's fused with the image's edges, and the mask decided from them.

        The mask is their argmax, or with ``close_boundaries`` the closed lines as boundary and the likeliest other
        class elsewhere.
        """
        boundary = self.boundary_class
        assert boundary is not None
        fused = fuse_class_edges(probabilities, native, boundary, self.edge_weight)
        if not self.close_boundaries:
            return fused, fused.argmax(axis=0).astype(np.int64)
        mask = likeliest_other_class(fused, boundary)
        mask[close_boundaries(fused[boundary])] = boundary
        return fused, mask


def load_predictor(
    checkpoint: str | Path | Sequence[str | Path],
    device: str = "cpu",
    batch_size: int = 8,
    tta: bool | None = None,
    temperature: float = 1.0,
    pixel_size: float | None = None,
    edge_weight: EdgeWeight = 0.0,
    close_boundaries: bool = False,
    scales: Sequence[float] = (1.0,),
    boundary_width: int | None = None,
    unsure_below: UnsureBelow | None = None,
) -> Predictor:
    """A :class:`Predictor` from a smalldata_pl checkpoint alone: no config or DataModule needed.

    Several checkpoints make an ensemble that averages their class probabilities
    (:func:`~smalldata_pl.inference.ensemble.ensemble`); they must share their preprocessing record, so that one
    image tensor suits them all.

    Args:
        checkpoint: A checkpoint of ``smalldata fit``, or several.
        device: Where to run the model.
        batch_size: Tiles per forward pass.
        tta: Test-time augmentation over the views the checkpoint's declared invariances allow; ``None`` does
            what the model was validated with (its ``tta`` setting; an ensemble's first checkpoint's).
        temperature: Divides classification logits before the softmax (a fitted calibration temperature).
        pixel_size: Micrometres per pixel of every image, preferred to the files' metadata.
        edge_weight: Share of the image's own edges in a boundary segmenter's boundary probability, or
            ``"auto"`` (see :class:`Predictor`).
        close_boundaries: Close a boundary segmenter's boundaries into grains by marked watershed.
        scales: Zoom factors a segmenter predicts each image at, probabilities averaged (see :class:`Predictor`).
        boundary_width: Redraw a boundary segmenter's boundaries at this width (see :class:`Predictor`).
        unsure_below: Mark a segmenter's pixels whose class has a probability below this as unsure, or with
            ``"auto"`` as many as it expects to be wrong (see :class:`Predictor`).

    Raises:
        ValueError: If a checkpoint carries no preprocessing record or is not an image task, or the checkpoints
            of an ensemble differ in preprocessing, task or classes.
    """
    loaded = load_model(checkpoint)
    if tta is None:
        # A model validated with TTA (e.g. the probe fitted on every view) is only as good as measured with it.
        tta = bool(loaded.hparams.get("tta", False))
    return Predictor(
        loaded.model,
        loaded.preprocessing,
        device,
        batch_size,
        tta=tta,
        temperature=temperature,
        pixel_size=pixel_size,
        edge_weight=edge_weight,
        close_boundaries=close_boundaries,
        scales=scales,
        boundary_width=boundary_width,
        unsure_below=unsure_below,
    )


class LoadedModel(NamedTuple):
    """A checkpoint's model, or the ensemble of several checkpoints' (:func:`load_model`).

    Attributes:
        model: The task module, or the :class:`~smalldata_pl.inference.ensemble.ModelEnsemble` of several.
        preprocessing: The preprocessing record they share.
        hparams: The first checkpoint's hyperparameters (its ``tta`` setting decides an ensemble's).
        paths: The checkpoint files, in the order given.
    """

    model: TransferModule | ModelEnsemble
    preprocessing: dict[str, Any]
    hparams: Mapping[str, Any]
    paths: list[Path]


def load_model(checkpoint: str | Path | Sequence[str | Path]) -> LoadedModel:
    """The model of one checkpoint, or the ensemble of several, with their shared preprocessing record.

    Raises:
        ValueError: If a checkpoint carries no preprocessing record or is not an image task, or the checkpoints
            differ in preprocessing (the message names both files and the keys that differ), task or classes.
    """
    paths = [Path(checkpoint)] if isinstance(checkpoint, str | Path) else [Path(c) for c in checkpoint]
    loaded = [load_task_checkpoint(path) for path in paths]
    preprocessing = loaded[0][1]
    first = _as_applied(*loaded[0])
    for path, member in zip(paths[1:], loaded[1:], strict=True):
        other = _as_applied(*member)
        differing = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        if differing:
            raise ValueError(
                f"{path} was trained with other preprocessing than {paths[0]} ({', '.join(differing)} differ); an "
                "ensemble feeds one image tensor to every model: train its members on the same data settings"
            )
    members = [model for model, _ in loaded]
    model = members[0] if len(members) == 1 else ensemble(members)
    return LoadedModel(model, preprocessing, members[0].hparams, paths)


def _as_applied(model: TransferModule, record: dict[str, Any]) -> dict[str, Any]:
    """What applying ``model`` does with the image, from its preprocessing record.

    A segmenter (a user's subclass too) sees images at their own pixel scale, so its training ``image_size``,
    ``crop_size`` and ``resize`` only set the windows it slides (``window``): a model trained on synthetic images and
    one trained on crops of real ones apply alike when their windows agree.
    """
    if not isinstance(model, MicrographSegmenter):
        return record
    applied = {k: v for k, v in record.items() if k not in ("image_size", "crop_size", "resize")}
    return {**applied, "window": _training_window(record)}


def _training_window(record: Mapping[str, Any]) -> int | None:
    """The side of the images a segmenter was trained on: its crop, else its image size.

    It is the window the segmenter slides over a larger image unless its ``tile_size`` says otherwise.
    """
    return record.get("crop_size") or record.get("image_size")


def load_task_checkpoint(path: Path) -> tuple[TransferModule, dict[str, Any]]:
    """The task module of a checkpoint of ``smalldata fit`` and its preprocessing record.

    Raises:
        ValueError: If the checkpoint carries no preprocessing record or is not an image task.
    """
    state = read_checkpoint(path)
    preprocessing = state.get("preprocessing")
    if not preprocessing:
        raise ValueError(
            f"{path} carries no preprocessing record; it was written by an older smalldata_pl. Resume it for one "
            "epoch with `smalldata fit --ckpt_path` to re-save it, or apply it through `smalldata predict -c CONFIG`"
        )
    module_name, _, class_name = preprocessing["task"].rpartition(".")
    task = getattr(importlib.import_module(module_name), class_name)
    if not issubclass(task, MicrographClassifier | MicrographSegmenter):
        raise ValueError(f"{path} holds a {class_name}; `apply` takes micrograph classifiers and segmenters")
    # pretrained=False: the checkpoint holds every weight, so no weights file or download is needed to rebuild.
    with paths_allowed():
        return task.load_from_checkpoint(path, map_location="cpu", pretrained=False), preprocessing
