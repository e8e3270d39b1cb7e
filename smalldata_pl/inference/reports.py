"""What ``apply`` writes: predictions.csv, scores against known labels, Grad-CAM overlays, palette masks, areas."""

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)
from tqdm import tqdm

from smalldata_pl.datasets.folder import read_manifest
from smalldata_pl.datasets.segmentation import UNLABELLED
from smalldata_pl.inference.predictor import Prediction, Predictor
from smalldata_pl.io.images import (
    ImageReadError,
    class_palette,
    read_image,
    write_label_image,
    write_probability_stack,
    write_unit_image,
)
from smalldata_pl.io.output_folder import prepare_output
from smalldata_pl.io.tables import write_csv, write_json
from smalldata_pl.models.gradcam import heatmap_overlay

log = logging.getLogger(__name__)

UNSURE_GREY = (128, 128, 128)  # the palette colour of unsure pixels in mask files


def apply_to_images(
    predictor: Predictor,
    images: Sequence[tuple[Path, str]],
    out: Path,
    labels: str | Path | None = None,
    overwrite: bool = False,
    explain: bool = False,
    list_views: bool = False,
    probabilities: bool = False,
) -> str:
    """Predict every image and write the reports into ``out``; returns a one-paragraph summary.

    Args:
        predictor: The checkpoint's predictor with its inference options
            (:func:`~smalldata_pl.inference.predictor.load_predictor`).
        images: ``(path, output name)`` pairs (see ``expand_inputs`` of the apply command).
        out: Output folder.
        labels: CSV ``file,label`` of true classes, paths relative to the CSV (classification).
        overwrite: Clear a non-empty ``out`` first.
        explain: Write Grad-CAM heat-map overlays of the predicted class to ``explain/`` (classification).
        list_views: Name the predictor's test-time augmentation views in the summary.
        probabilities: Segmentation: also write each image's class probabilities to ``probabilities/<name>.tif``.

    Raises:
        ValueError: For ``explain`` with a segmenter, or ``probabilities`` with a classifier.
    """
    if explain and predictor.segmentation:
        raise ValueError("--explain draws Grad-CAM maps of classifiers; this checkpoint is a segmenter")
    if probabilities and not predictor.segmentation:
        raise ValueError("--probabilities writes a segmenter's probability maps; predictions.csv has a classifier's")
    prepare_output(out, overwrite, [path for path, _ in images])
    predictions: list[tuple[Prediction, str]] = []
    areas: list[dict[str, object]] = []
    palette = class_palette(len(predictor.class_names))
    if predictor.unsure_below is not None:  # unsure pixels grey in any viewer
        palette = np.vstack([palette, np.zeros((UNLABELLED - len(palette), 3), np.uint8), [UNSURE_GREY]])
    skipped = []
    for path, name in tqdm(images, desc="apply", unit="image"):
        try:
            prediction = predictor.predict(path)
        except ImageReadError as error:
            log.warning("skipping %s", error)
            skipped.append({"file": str(path), "reason": str(error)})
            continue
        if predictor.segmentation:  # written at once: a large image's maps are not all kept, and none is lost
            areas.append(_write_segmentation(prediction, name, predictor.class_names, palette, out, probabilities))
        else:
            predictions.append((prediction, name))
    if skipped:
        write_csv(out / "skipped.csv", skipped, ["file", "reason"])
    if predictor.segmentation:
        write_csv(out / "areas.csv", areas)
        # A manifest of the images and their masks (paths absolute and relative to ``out``): the masks as labels.
        labels_manifest = [{"image": str(Path(str(row["file"])).resolve()), "mask": row["mask"]} for row in areas]
        write_csv(out / "manifest.csv", labels_manifest, ["image", "mask"])
    else:
        _write_classification(predictions, predictor.class_names, out, labels)
        if explain:
            _write_explanations(predictor, predictions, out)
    lines = [f"{len(predictions) + len(areas)} image(s) predicted into {out}"]
    if list_views:
        lines.append(f"test-time augmentation over {len(predictor.views)} view(s): {[v.name for v in predictor.views]}")
    if skipped:
        lines.append(f"{len(skipped)} unreadable, skipped (listed in {out / 'skipped.csv'}):")
        lines += [f"  {row['file']}" for row in skipped]
    if (out / "metrics.json").is_file():
        lines.append((out / "metrics.json").read_text().strip())
    return "\n".join(lines)


def _write_classification(
    predictions: list[tuple[Prediction, str]], class_names: list[str], out: Path, labels: str | Path | None
) -> None:
    truth = read_labels(Path(labels), class_names) if labels else {}
    rows = []
    scored: list[tuple[int, np.ndarray]] = []
    for prediction, _ in predictions:
        assert prediction.probabilities is not None
        index = int(np.argmax(prediction.probabilities))
        row: dict[str, object] = {
            "file": prediction.source,
            "prediction": class_names[index],
            "tiles": prediction.tiles,
        }
        if prediction.views > 1:
            row["views"] = prediction.views
        row.update({f"p_{n}": round(float(p), 6) for n, p in zip(class_names, prediction.probabilities, strict=True)})
        true = truth.get(Path(prediction.source).resolve())
        if labels:
            row["true"] = class_names[true] if true is not None else ""
            row["correct"] = "" if true is None else int(true == index)
            if true is not None:
                scored.append((true, prediction.probabilities))
        rows.append(row)
    write_csv(out / "predictions.csv", rows)
    if scored:
        _write_scores(scored, class_names, out)


def read_labels(manifest: Path, class_names: list[str]) -> dict[Path, int]:
    """The class index of every file of a ``file,label`` CSV, keyed by resolved path (relative to the CSV).

    Raises:
        ValueError: For a label that is not one of ``class_names``, naming the line.
    """
    truth = {}
    for line, row in enumerate(read_manifest(manifest, ("file", "label")), start=2):
        if row["label"] not in class_names:
            raise ValueError(f"{manifest}:{line}: label {row['label']!r} is not one of the model's {class_names}")
        truth[(manifest.parent / row["file"]).resolve()] = class_names.index(row["label"])
    return truth


def _write_scores(scored: list[tuple[int, np.ndarray]], class_names: list[str], out: Path) -> None:
    import matplotlib.pyplot as plt

    target = torch.tensor([true for true, _ in scored])
    probabilities = torch.from_numpy(np.stack([p for _, p in scored])).float()
    predicted = probabilities.argmax(dim=1)
    k = len(class_names)
    metrics = {
        "images": len(scored),
        "accuracy": float(MulticlassAccuracy(k, average="micro")(predicted, target)),
        "macro_f1": float(MulticlassF1Score(k, average="macro")(predicted, target)),
        # Of the probabilities written to predictions.csv (after any temperature and TTA).
        "ece": float(MulticlassCalibrationError(k, n_bins=15, norm="l1")(probabilities, target)),
    }
    write_json(out / "metrics.json", metrics)
    confusion = MulticlassConfusionMatrix(k)
    confusion.update(predicted, target)
    figure, _ = confusion.plot(labels=class_names)
    figure.savefig(out / "confusion_matrix.png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def _write_explanations(predictor: Predictor, predictions: list[tuple[Prediction, str]], out: Path) -> None:
    """``explain/<name>.png``: the Grad-CAM map of each image's predicted class over the image in grey."""
    for prediction, name in tqdm(predictions, desc="explain", unit="image"):
        assert prediction.probabilities is not None
        image = read_image(prediction.source)
        # From the file, not the array: its metadata gives the pixel size and the data bar, as in predict.
        cam = predictor.explain(prediction.source, target=int(np.argmax(prediction.probabilities)))
        write_unit_image((out / "explain" / name).with_suffix(".png"), heatmap_overlay(image, cam) / 255.0)


def _write_segmentation(
    prediction: Prediction, name: str, class_names: list[str], palette: np.ndarray, out: Path, probabilities: bool
) -> dict[str, object]:
    """Mask, overlay and (if asked) probability stack of one image; its row of ``areas.csv``.

    Pixels the predictor marked unsure are ``UNLABELLED`` in the mask file (unlabelled where the masks are trained
    on); the overlay and the area fractions show the decided classes there.
    """
    assert prediction.mask is not None and prediction.image is not None
    mask = prediction.mask.astype(np.uint8 if len(class_names) <= 256 else np.uint16)
    target = (out / "masks" / name).with_suffix(".png")
    written = mask if prediction.unsure is None else np.where(prediction.unsure, UNLABELLED, mask).astype(np.uint8)
    write_label_image(target, written, palette)
    overlay = _overlay(prediction.image, mask, palette)  # the micrograph above any cropped data bar
    write_unit_image((out / "overlays" / name).with_suffix(".png"), overlay / 255.0)
    row: dict[str, object] = {"file": prediction.source, "mask": str(target.relative_to(out))}
    if probabilities:
        assert prediction.probabilities is not None
        stack = (out / "probabilities" / name).with_suffix(".tif")
        write_probability_stack(stack, prediction.probabilities, class_names)
        row["probabilities"] = str(stack.relative_to(out))
    counts = np.bincount(mask.ravel(), minlength=len(class_names))
    row.update({f"fraction_{n}": round(float(c) / mask.size, 6) for n, c in zip(class_names, counts, strict=False)})
    if prediction.unsure is not None:
        row["fraction_unsure"] = round(float(prediction.unsure.mean()), 6)
    return row


def _overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The micrograph in grey with each class's colour blended at 40 %; class 0 left uncoloured."""
    grey = image if image.ndim == 2 else image[:, :, :3].mean(axis=2)
    rgb = np.repeat(grey[:, :, None], 3, axis=2) * 255
    colours = palette.astype(np.float64)[mask]
    blended = np.where(mask[:, :, None] > 0, 0.6 * rgb + 0.4 * colours, rgb)
    return blended.round().clip(0, 255).astype(np.uint8)
