"""Superalloy Super1: test mean IoU of one trained segmenter with and without D4 test-time augmentation.

    smalldata fit -c configs/segmentation/superalloy_imagenet.yaml \
        --trainer.logger.init_args.save_dir=benchmarks/runs/super1_tta
    python benchmarks/super1_tta.py --checkpoint benchmarks/runs/super1_tta/superalloy/version_0/checkpoints/last.ckpt
"""

import argparse
import json
from pathlib import Path

import torch

from smalldata_pl.datamodules import Superalloy
from smalldata_pl.inference import load_predictor
from smalldata_pl.models.metrics import ClassIoU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/superalloy")
    parser.add_argument("--checkpoint", type=Path, required=True)
    args = parser.parse_args()
    data = Superalloy(args.root, official_split="Super1", crop_size=256)
    data.setup("test")
    assert data.test_dataset is not None
    results = {}
    for tta in (False, True):
        predictor = load_predictor(args.checkpoint, tta=tta)
        iou = ClassIoU(len(data.class_names))
        for record in data.test_dataset.records:
            mask = data.test_dataset[data.test_dataset.records.index(record)]["mask"]
            predicted = torch.from_numpy(predictor.predict(record.image).mask)
            iou.update(predicted[None], mask[None])
        per_class = iou.compute()
        name = "TTA (8 views)" if tta else "no TTA"
        results[name] = {"miou": float(ClassIoU.mean(per_class)), "per_class": per_class.tolist()}
        print(f"{name:14s} mean IoU {results[name]['miou']:.3f}  per class {[round(v, 3) for v in per_class.tolist()]}")
    (args.checkpoint.parent / "super1_tta.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
