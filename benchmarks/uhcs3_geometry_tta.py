"""UHCS-3 group 5-fold: the same fold models evaluated with squashed vs aspect-keeping inputs, with and without TTA.

Trains the recommended recipe once per fold with `smalldata cv` (skipped when the fold checkpoints exist), then
scores every fold's final model (last.ckpt) on its validation fold four ways: `resize: squash` (the old
evaluation geometry) or `shortest_side` (the new default), each with and without D4 test-time augmentation.
Training is identical for all four, so the differences are the evaluation geometry and TTA alone.

    python benchmarks/uhcs3_geometry_tta.py --root ../shared/data/uhcs3 --image_size 224 \
        --cv_dir benchmarks/runs/geometry_224
"""

import argparse
import json
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from smalldata_pl.datamodules import UHCS3
from smalldata_pl.inference.tta import classify
from smalldata_pl.tasks import MicrographClassifier
from smalldata_pl.transforms.views import allowed_views

CONFIG = "configs/exercise_efficientnet_lite0_offline.yaml"


def train_folds(root: str, image_size: int, cv_dir: Path) -> None:
    if all((cv_dir / f"fold_{k}" / "checkpoints" / "last.ckpt").is_file() for k in range(5)):
        return
    subprocess.run(
        ["smalldata", "cv", "-c", CONFIG, f"--data.init_args.root={root}", f"--data.init_args.image_size={image_size}",
         "--data.init_args.leakage_check=off", "--trainer.enable_progress_bar=false", "--cv_dir", str(cv_dir)],
        check=True,
    )  # fmt: skip


def fold_model_and_batches(
    root: str, image_size: int, cv_dir: Path, fold: int, resize: str = "shortest_side", batch_size: int = 16
) -> tuple[MicrographClassifier, UHCS3, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Fold ``fold``'s final model, its DataModule, and its validation fold as ``(images, labels)`` batches."""
    data = UHCS3(root, num_folds=5, fold=fold, image_size=image_size, in_chans=3, leakage_check="off", resize=resize)
    data.setup("validate")
    model = MicrographClassifier.load_from_checkpoint(
        cv_dir / f"fold_{fold}" / "checkpoints" / "last.ckpt", map_location="cpu", pretrained=False
    ).eval()
    dataset = data.val_dataset
    assert dataset is not None

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(dataset), batch_size):
            samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            yield torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])

    return model, data, batches()


def fold_accuracy(root: str, image_size: int, cv_dir: Path, fold: int, resize: str, tta: bool) -> float:
    model, data, batches = fold_model_and_batches(root, image_size, cv_dir, fold, resize)
    invariances = data.invariances
    views = allowed_views(invariances.rotation, invariances.mirror)[: 8 if tta else 1]
    correct = total = 0
    with torch.inference_mode():
        for images, labels in batches:
            correct += int((classify(model, images, views).argmax(dim=1) == labels).sum())
            total += len(labels)
    return correct / total


def fold_arguments(description: str | None) -> argparse.Namespace:
    """``--root``, ``--image_size`` and ``--cv_dir`` of the fold models, shared with the calibration script."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/uhcs3")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--cv_dir", type=Path, default=Path("benchmarks/runs/geometry_224"))
    return parser.parse_args()


def main() -> None:
    args = fold_arguments(__doc__)
    torch.set_num_threads(2)
    start = time.perf_counter()
    train_folds(args.root, args.image_size, args.cv_dir)
    trained = time.perf_counter()
    results = {}
    for resize in ("squash", "shortest_side"):
        for tta in (False, True):
            scores = [fold_accuracy(args.root, args.image_size, args.cv_dir, k, resize, tta) for k in range(5)]
            name = f"{resize}{' + TTA' if tta else ''}"
            results[name] = {"folds": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores, ddof=1))}
            print(f"{name:22s} {np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f}  folds {np.round(scores, 3)}")
    results["machine"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    results["seconds"] = {"train": round(trained - start, 1), "evaluate": round(time.perf_counter() - trained, 1)}
    (args.cv_dir / "geometry_tta.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
