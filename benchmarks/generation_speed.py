"""Procedural generation throughput per core, against a brute-force nearest-seed baseline.

    python benchmarks/generation_speed.py

Prints images/s (one process, one thread) for grain and precipitate micrographs with the `sem_se` imaging
preset at 256² and 512², the brute-force baseline (every pixel against every seed) measured in the same run,
spectra/s, and the SyntheticGrains default (128², optical) next to the quickstart's training consumption.
"""

import os
import time
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from smalldata_pl.generators import GRAIN_MORPHOLOGIES, IMAGING_PRESETS, render_grain_micrograph, tessellate
from smalldata_pl.generators.precipitates import render_precipitates
from smalldata_pl.generators.seeds import place_seeds
from smalldata_pl.generators.spectra import load_phase_library, render_spectrum


def rate(fn, seconds: float = 3.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(count)
        count += 1
    return count / (time.perf_counter() - start)


def brute_force_voronoi(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """The baseline: distance from every pixel to every seed, then argmin."""
    seeds = place_seeds(rng, count, (size, size), "poisson")
    rows, cols = np.mgrid[0:size, 0:size]
    best = np.full((size, size), np.inf)
    labels = np.zeros((size, size), np.int32)
    for k, (r, c) in enumerate(seeds):
        d = (rows - r) ** 2 + (cols - c) ** 2
        closer = d < best
        best[closer], labels[closer] = d[closer], k
    return labels


def main() -> None:
    sem = IMAGING_PRESETS["sem_se"]
    fine = GRAIN_MORPHOLOGIES[0]
    print("images/s per core (one process, OMP_NUM_THREADS=1)")
    for size, count in ((256, 204), (512, 204), (512, 1000)):
        spacing = size / np.sqrt(count)
        morphology = replace(fine, grain_size=spacing / size, size_jitter=0.0)
        seeds = lambda i: place_seeds(np.random.default_rng([0, i]), count, (size, size), "poisson")  # noqa: E731
        ours = rate(lambda i: tessellate(seeds(i), (size, size)))
        brute = rate(lambda i: brute_force_voronoi(np.random.default_rng([0, i]), size, count))
        grains = rate(lambda i: render_grain_micrograph(np.random.default_rng([0, i]), (size, size), morphology, sem))
        print(
            f"  {size}², {count} grains: tessellation {ours:7.1f}/s vs brute force {brute:6.1f}/s = {ours / brute:5.1f}x;"
            f"  whole grain image with sem_se imaging {grains:6.1f}/s"
        )
    for size in (256, 512):
        precipitates = rate(lambda i: render_precipitates(np.random.default_rng([0, i]), (size, size), imaging=sem))
        print(f"  {size}² precipitates with sem_se imaging: {precipitates:6.1f}/s")
    library = load_phase_library()
    spectra = rate(lambda i: render_spectrum(np.random.default_rng(i), library, np.array([0.6, 0.4, 0.0])))
    print(f"  spectra (2048 points, two phases): {spectra:,.0f}/s")
    default = rate(
        lambda i: render_grain_micrograph(
            np.random.default_rng([0, i]), (128, 128), GRAIN_MORPHOLOGIES[i % 4], IMAGING_PRESETS["optical"]
        )
    )
    print(f"  SyntheticGrains default (128², optical): {default:.1f}/s")


if __name__ == "__main__":
    main()
