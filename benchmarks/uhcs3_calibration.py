"""UHCS-3: temperature scaling of the fold models, fitted and scored on disjoint groups of each validation fold.

Each fold model's validation fold is split by group into two halves; the temperature is fitted on one half and
the expected calibration error (15 bins) is measured on the other, then the halves swap. Nothing the model was
trained on, and nothing the temperature was fitted on, is scored.

    python benchmarks/uhcs3_calibration.py --cv_dir benchmarks/runs/geometry_224
"""

import json
from pathlib import Path

import numpy as np
import torch
from uhcs3_geometry_tta import fold_arguments, fold_model_and_batches  # the sibling script: same fold models, same data

from smalldata_pl.inference.calibration import calibration_report, fit_temperature


def fold_logits(root: str, image_size: int, cv_dir: Path, fold: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    model, data, batches = fold_model_and_batches(root, image_size, cv_dir, fold)
    logits, labels = [], []
    with torch.inference_mode():
        for images, targets in batches:
            logits.append(model(images))
            labels.append(targets)
    assert data.val_dataset is not None
    return torch.cat(logits), torch.cat(labels), [r.group for r in data.val_dataset.records]


def main() -> None:
    args = fold_arguments(__doc__)
    rows = []
    per_fold = [fold_logits(args.root, args.image_size, args.cv_dir, fold) for fold in range(5)]
    for fold, (logits, labels, groups) in enumerate(per_fold):
        names = sorted(set(groups))
        half = {g: i % 2 for i, g in enumerate(np.random.default_rng(fold).permutation(names))}
        side = torch.tensor([half[g] for g in groups])
        for fit_side in (0, 1):
            fit, score = side == fit_side, side != fit_side
            temperature = fit_temperature(logits[fit], labels[fit])
            report = calibration_report(logits[score], labels[score], temperature)
            rows.append({"fold": fold, "fit_half": fit_side, **report})
            print(f"fold {fold} half {fit_side}: T={temperature:.2f} ECE {report['ece_before']:.3f} -> "
                  f"{report['ece_after']:.3f} (n={int(score.sum())})")  # fmt: skip
    # A recipe-level temperature: fitted on the out-of-fold logits of the other four folds (about 380 images, the
    # same recipe's models), scored on the held-out fold.
    pooled = []
    for fold, (logits, labels, _) in enumerate(per_fold):
        others = [k for k in range(5) if k != fold]
        temperature = fit_temperature(
            torch.cat([per_fold[k][0] for k in others]), torch.cat([per_fold[k][1] for k in others])
        )
        report = calibration_report(logits, labels, temperature)
        pooled.append({"fold": fold, **report})
        print(f"fold {fold} pooled: T={temperature:.2f} ECE {report['ece_before']:.3f} -> {report['ece_after']:.3f}")

    def stats(table: list[dict]) -> dict:
        keys = ("temperature", "ece_before", "ece_after", "nll_before", "nll_after")
        return {k: {"mean": float(np.mean([r[k] for r in table])), "std": float(np.std([r[k] for r in table], ddof=1))}
                for k in keys}  # fmt: skip

    summary = {"split_halves": stats(rows), "other_folds": stats(pooled)}
    print(json.dumps(summary, indent=2))
    (args.cv_dir / "calibration.json").write_text(
        json.dumps({"rows": rows, "pooled": pooled, "summary": summary}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
