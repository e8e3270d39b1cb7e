"""``smalldata realism``: score how far each generator setting's images are from real micrographs."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smalldata_pl.cli.options import command_parser, parse_options
from smalldata_pl.evaluation.realism import (
    real_crops,
    real_images,
    realism_score,
    renderer_from_config,
    stack_features,
    synthetic_images,
)
from smalldata_pl.generators.imaging import IMAGING_PRESETS
from smalldata_pl.generators.renderers import GrainBoundaryRenderer, Renderer
from smalldata_pl.generators.styles import resolve_style
from smalldata_pl.io.tables import write_json


@dataclass
class RealismOptions:
    """Options of ``smalldata realism``.

    Args:
        real: Folder of real micrographs (one group per file, or its ``manifest.csv``) or a manifest CSV with
            ``image`` and ``group`` columns; crops of one group never sit on both sides of a split.
        style: Grain styles to score, comma-separated (``flat,realistic,tint_etched``), each with every
            ``imaging``.
        imaging: Imaging presets to score, comma-separated (``optical,sem_se``).
        generator_config: Training YAMLs of procedural DataModules, comma-separated, scored instead of the
            style grid.
        size: Side of the synthetic images and of the real crops.
        crops_per_image: Random crops taken from each real image.
        synthetic: Synthetic images per setting; default as many as real crops (balanced classes).
        channels: 1 compares grey images (what an ``in_chans: 1`` model sees), 3 compares colour too.
        folds: Group K-fold splits of the classifier.
        bootstrap: Group-bootstrap resamples for the 95 % interval.
        seed: Seed of crops, renders, splits and bootstrap.
        out: JSON file for the scores.
    """

    real: str
    style: str = "flat"
    imaging: str = "optical"
    generator_config: str | None = None
    size: int = 128
    crops_per_image: int = 2
    synthetic: int | None = None
    channels: int = 1
    folds: int = 5
    bootstrap: int = 1000
    seed: int = 0
    out: str = "realism.json"


def realism_command(argv: Sequence[str]) -> dict[str, Any]:
    """``smalldata realism --real DIR --style flat,realistic --imaging optical,sem_se``."""
    parser = command_parser(
        "smalldata realism",
        "Train a texture-statistics classifier to tell synthetic from real images under group K-fold; report "
        "its held-out balanced accuracy per generator setting (0.5 = indistinguishable, 1 = trivially told apart).",
        RealismOptions,
    )
    o = parse_options(parser, RealismOptions, argv)
    if o.channels not in (1, 3):
        raise ValueError(f"--channels must be 1 (grey) or 3 (colour), got {o.channels}")
    crops, groups = real_crops(real_images(o.real), o.size, o.crops_per_image, o.channels, o.seed)
    real_features = stack_features(crops)
    count = o.synthetic or len(crops)
    results = []
    for name, renderer in _settings(o).items():
        images = synthetic_images(renderer, count, o.channels, o.seed)
        score = realism_score(real_features, groups, stack_features(images), o.folds, o.bootstrap, o.seed)
        results.append({"setting": name, **score})
        print(
            f"{name:<32} accuracy {score['accuracy']:.3f} [{score['low']:.3f}, {score['high']:.3f}]  "
            f"by family {' '.join(f'{k} {v:.2f}' for k, v in score['families'].items())}"
        )
    report = {
        "real": o.real,
        "size": o.size,
        "channels": o.channels,
        "features": "texture statistics",
        "classifier": "logistic regression",
        "metric": "balanced accuracy",
        "settings": results,
    }
    write_json(o.out, report)
    print(f"written to {o.out}")
    return report


def _settings(o: RealismOptions) -> dict[str, Renderer]:
    """The generator settings to score, by name: the YAMLs if given, else every style with every imaging."""
    if o.generator_config:
        return {Path(path).stem: renderer_from_config(path, o.size) for path in _items(o.generator_config)}
    unknown = sorted(set(_items(o.imaging)) - set(IMAGING_PRESETS))
    if unknown:
        raise ValueError(f"unknown imaging preset(s) {unknown}; choose from {sorted(IMAGING_PRESETS)}")
    return {
        f"{style}/{imaging}": GrainBoundaryRenderer(o.size, imaging, 1, resolve_style(style))
        for style in _items(o.style)
        for imaging in _items(o.imaging)
    }


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]
