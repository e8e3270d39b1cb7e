"""Exported models against PyTorch on real micrographs: logits difference, agreement and speed, side by side.

Exports one UHCS-3 fold model (by default fold 0 of benchmarks/uhcs3_geometry_tta.py at 448 px) with
`smalldata export` to ONNX and TorchScript, then runs the fold's own validation micrographs, preprocessed by the
DataModule's evaluation pipeline at full size (shorter side 448, aspect kept: 448x608), through PyTorch, ONNX
Runtime and the TorchScript module, one image at a time.

    python benchmarks/export_equivalence.py --checkpoint benchmarks/runs/geometry_448/fold_0/checkpoints/last.ckpt
"""

import argparse
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from smalldata_pl.datamodules import UHCS3
from smalldata_pl.inference.export import INPUT_NAME, OUTPUT_NAME, export_model
from smalldata_pl.tasks import MicrographClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/uhcs3")
    parser.add_argument(
        "--checkpoint", type=Path, default=Path("benchmarks/runs/geometry_448/fold_0/checkpoints/last.ckpt")
    )
    parser.add_argument("--image_size", type=int, default=448)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/export"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_file = export_model(args.checkpoint, args.out / "model.onnx", "onnx")
    script_file = export_model(args.checkpoint, args.out / "model.pt", "torchscript")
    model = MicrographClassifier.load_from_checkpoint(args.checkpoint, map_location="cpu", pretrained=False).eval()
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in PyTorch
        scripted = torch.jit.load(script_file)
    data = UHCS3(args.root, num_folds=5, fold=args.fold, image_size=args.image_size, in_chans=3, leakage_check="off")
    data.setup("validate")
    dataset: Any = data.val_dataset
    images = [dataset[i]["image"][None] for i in range(len(dataset))]
    runners = {
        "pytorch": lambda x: model(x).numpy(),
        "onnxruntime": lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0],
        "torchscript": lambda x: scripted(x).numpy(),
    }
    logits: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    seconds = dict.fromkeys(runners, 0.0)
    with torch.inference_mode():
        for run in runners.values():  # warm-up: TorchScript profiles and optimises its first calls
            run(images[0])
        for image in images:
            for name, run in runners.items():  # interleaved, so load on the machine hits all three alike
                start = time.perf_counter()
                logits[name].append(run(image))
                seconds[name] += time.perf_counter() - start
    reference = np.concatenate(logits["pytorch"])
    print(f"{len(images)} micrographs of fold {args.fold} at {tuple(images[0].shape[-2:])}, {args.checkpoint}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    for name in runners:
        table = np.concatenate(logits[name])
        difference = float(np.abs(table - reference).max())
        agree = float(np.mean(table.argmax(1) == reference.argmax(1)))
        ratio = seconds[name] / seconds["pytorch"]
        print(
            f"{name:12s} max |logit - pytorch| {difference:.2e}  same class {agree:.3f}  time x{ratio:.2f} of pytorch"
        )


if __name__ == "__main__":
    main()
