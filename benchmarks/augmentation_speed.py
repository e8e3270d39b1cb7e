"""Throughput of the `micrograph` augmentation preset per loader worker (one process, one thread).

python benchmarks/augmentation_speed.py
"""

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from smalldata_pl.transforms.augmentation import build_augmentation
from smalldata_pl.transforms.pipeline import ImagePipeline

cv2.setNumThreads(1)


def main() -> None:
    rng = np.random.default_rng(0)
    source = rng.random((475, 645)).astype(np.float32)  # a UHCS-sized micrograph
    for size in (224, 512):
        pipeline = ImagePipeline(3, size, build_augmentation("micrograph", size), (0.45, 0.45, 0.45), (0.22,) * 3)
        evaluation = ImagePipeline(3, size, None, (0.45, 0.45, 0.45), (0.22,) * 3)
        for name, pipe in (("micrograph preset", pipeline), ("eval resize+normalise", evaluation)):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < 3.0:
                pipe(source, seed=count)
                count += 1
            print(f"{size}px {name:<22} {count / (time.perf_counter() - start):7.1f} images/s per worker")


if __name__ == "__main__":
    main()
