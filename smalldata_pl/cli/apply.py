"""``smalldata apply``: a trained checkpoint on new micrographs, no config needed."""

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smalldata_pl.cli.options import command_parser, parse_options
from smalldata_pl.datasets.folder import unlabelled_files
from smalldata_pl.inference.boundary_maps import EdgeWeight
from smalldata_pl.inference.predictor import load_predictor
from smalldata_pl.inference.reports import apply_to_images
from smalldata_pl.inference.unsure import UnsureBelow


@dataclass
class ApplyOptions:
    """Options of ``smalldata apply``.

    Args:
        checkpoint: A checkpoint of ``smalldata fit`` (classifier or segmenter).
        inputs: Image files, folders (searched recursively) or glob patterns.
        out: Output folder; must be empty or new unless ``overwrite``.
        labels: CSV ``file,label`` with the true classes (paths relative to the CSV): adds true class, a correct
            flag, accuracy, macro-F1 and a confusion matrix (classification).
        device: ``cpu`` or ``cuda``.
        batch_size: Tiles per forward pass.
        overwrite: Clear a non-empty output folder first.
        tta: Test-time augmentation: average over the rotated and mirrored views the checkpoint's declared
            invariances allow (none where rotation and mirror are forbidden; the log says which are used).
            Default: as the model was validated (``model.init_args.tta`` of its training config); ``--tta false``
            or ``--tta true`` overrides it.
        temperature: Divide classification logits by this calibration temperature, fitted on other labelled
            images (never on the ones scored here).
        explain: Write Grad-CAM heat-map overlays of the predicted class to explain/ (classifiers).
        pixel_size: Micrometres per pixel of every input image, preferred to the files' metadata. Needed when the
            checkpoint was trained with a target_pixel_size and the images carry no pixel size (PNG, JPEG, TIFF
            without FEI, Zeiss, ImageJ or resolution metadata).
        edge_weight: Grain-boundary segmenters: mix this share (0-1) of the image's own colour-gradient map into
            the boundary probability, or ``auto``: calibrate the edges against the network on each image and
            combine the two by Bayes' rule, so that edges the network does not back (scratches, texture) carry
            no weight. Both helped a synthetic-only model on real colour-etched tiles (benchmarks/README.md);
            check either on a few labelled images of your own before trusting it.
        close_boundaries: Grain-boundary segmenters: draw closed grains (marked watershed of the boundary
            probability) instead of cutting it, so gaps do not merge grains and spurs do not add boundary.
        ensemble: More checkpoints of the same task, classes and preprocessing: the class probabilities of all of
            them are averaged (a model ensemble, e.g. one recipe trained with other seeds or another
            ``edge_input``); costs one pass per checkpoint.
        scales: Segmenters: zoom factors each image is predicted at (e.g. ``[0.75, 1.0]``), the probabilities
            averaged at the image's size: a multi-scale test-time augmentation, one pass per scale. Default: once,
            as it is.
        probabilities: Segmenters: also write each image's class probabilities (those its mask was decided
            from) as a float32 TIFF stack, a page per class, to probabilities/ (class names in its description).
        boundary_width: Grain-boundary segmenters: redraw the boundaries along their centre lines at this width of
            the synthetic labels (1: one pixel; 2, their default: about 3 px), so the masks can be trained on:
            manifest.csv in the output folder lists every image with its mask, a manifest for SegmentationFolder
            (``root`` the output folder), as configs/segmentation/grain_boundaries_distilled.yaml uses it.
        unsure_below: Segmenters: write 255 into the mask files where the probability of the mask's class (after
            any redrawing) is below this, e.g. 0.9: pseudo-labels then leave the pixels the model hesitates on
            unlabelled (train on them with ``data.init_args.ignore_value: 255``). Overlays and area fractions
            keep the decided classes; areas.csv adds the unsure share. ``auto``: no threshold; per image and
            class, as many of the least sure pixels as the model expects to be wrong (the sum of one minus its
            probability). ``smalldata measure`` refuses such masks: measure those of a run without it.
    """

    checkpoint: str
    inputs: list[str]
    out: str = "applied"
    labels: str | None = None
    device: str = "cpu"
    batch_size: int = 8
    overwrite: bool = False
    tta: bool | None = None
    temperature: float = 1.0
    explain: bool = False
    pixel_size: float | None = None
    edge_weight: EdgeWeight = 0.0
    close_boundaries: bool = False
    ensemble: list[str] | None = None
    scales: list[float] | None = None
    probabilities: bool = False
    boundary_width: int | None = None
    unsure_below: UnsureBelow | None = None


def expand_inputs(inputs: Sequence[str]) -> list[tuple[Path, str]]:
    """Every image named by files, folders (recursively) and globs, each with the name its outputs get.

    Names keep the path below the folder or glob root, so equal file names in different folders stay apart.
    """
    found: dict[Path, str] = {}
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            for file in unlabelled_files(path):  # every image below it; an empty folder is an error
                found.setdefault(file, str(file.relative_to(path)))
        elif path.is_file():
            found.setdefault(path, path.name)
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"input {item} is no file, folder or matching glob pattern")
            for file in matches:
                found.setdefault(file, file.name)
    names = list(found.values())
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"several inputs would write the same outputs {clashes[:3]}; pass their common folder")
    return list(found.items())


def apply_command(argv: Sequence[str]) -> Path:
    """``smalldata apply CHECKPOINT INPUT... --out DIR [--labels CSV] [--tta] [--explain] [--pixel_size UM] …``."""
    parser = command_parser(
        "smalldata apply",
        "Apply a trained checkpoint to new micrographs: predictions.csv for classifiers (with --labels also "
        "accuracy, macro-F1, calibration error and a confusion matrix; with --explain Grad-CAM overlays), palette "
        "mask PNGs, overlays and area fractions for segmenters. "
        "Unreadable files are reported and skipped.",
        ApplyOptions,
        ["checkpoint", "inputs"],
    )
    o = parse_options(parser, ApplyOptions, argv)
    out = Path(o.out)
    images = expand_inputs(o.inputs)
    # Options the predictor refuses (a temperature for a segmenter, edges without a boundary class) fail here,
    # before the output folder is touched.
    predictor = load_predictor(
        [o.checkpoint, *(o.ensemble or [])],
        o.device,
        o.batch_size,
        tta=o.tta,
        temperature=o.temperature,
        pixel_size=o.pixel_size,
        edge_weight=o.edge_weight,
        close_boundaries=o.close_boundaries,
        scales=o.scales or [1.0],
        boundary_width=o.boundary_width,
        unsure_below=o.unsure_below,
    )
    summary = apply_to_images(
        predictor, images, out, o.labels, o.overwrite, o.explain, list_views=bool(o.tta), probabilities=o.probabilities
    )
    print(summary)
    return out
