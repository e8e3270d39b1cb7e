"""Figure for the sim-to-real report: a real Super1 test image, its truth, and each model's prediction.

python benchmarks/sim_to_real_figure.py   (after bash benchmarks/sim_to_real.sh)
"""

from pathlib import Path

import matplotlib
import torch

matplotlib.use("agg")
import matplotlib.pyplot as plt

from smalldata_pl.datamodules import Superalloy
from smalldata_pl.tasks import MicrographSegmenter

RUNS = Path("benchmarks/runs/sim_to_real")
MODELS = {
    "(a) synthetic only": RUNS / "synthetic/version_0/checkpoints/last.ckpt",
    "(b) ImageNet, Super1": RUNS / "b_imagenet_Super1/version_0/checkpoints/last.ckpt",
    "(c) synthetic+real, Super1": RUNS / "c_synthetic_Super1/version_0/checkpoints/last.ckpt",
    "(b) ImageNet, one-shot": RUNS / "b_imagenet_Super3/version_0/checkpoints/last.ckpt",
    "(c) synthetic+real, one-shot": RUNS / "c_synthetic_Super3/version_0/checkpoints/last.ckpt",
}


def main() -> None:
    data = Superalloy(root="../shared/data/superalloy", official_split="Super1")
    data.setup("test")
    sample = data.test_dataset[0]
    columns = [("image", sample["image"][0]), ("truth", sample["mask"])]
    for name, checkpoint in MODELS.items():
        if checkpoint.is_file():
            model = MicrographSegmenter.load_from_checkpoint(checkpoint, pretrained=False).eval()
            with torch.no_grad():
                columns.append((name, model.predict_logits(sample["image"][None]).argmax(1)[0]))
    figure, axes = plt.subplots(1, len(columns), figsize=(3 * len(columns), 3.3))
    for axis, (title, array) in zip(axes, columns, strict=True):
        axis.imshow(
            array,
            cmap="gray" if title == "image" else "viridis",
            vmin=None if title == "image" else 0,
            vmax=None if title == "image" else 2,
        )
        axis.set_title(title, fontsize=8)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig("benchmarks/sim_to_real.png", dpi=80)
    print("wrote benchmarks/sim_to_real.png")


if __name__ == "__main__":
    main()
