#!/usr/bin/env bash
# The benchmarks whose figures benchmarks/README.md reports, in the order they were run (CPU, 2 cores).
# Usage: bash benchmarks/run_cpu_benchmarks.sh  (from the repository root, with ../shared/data present)
set -euo pipefail
out=benchmarks/runs
mkdir -p "$out"
common=(--trainer.enable_progress_bar=false --data.init_args.leakage_check=off)
run() { local name=$1; shift; /usr/bin/time -f "%e s wall" -o "$out/$name.time" "$@" > "$out/$name.log" 2>&1; }

# Issue 4 / 3(d): the recommended recipe, group-stratified 5-fold CV on UHCS-3.
run uhcs3_staged .venv/bin/smalldata cv -c configs/exercise_efficientnet_lite0_offline.yaml "${common[@]}" --cv_dir "$out/uhcs3_staged"
# Issue 3(a): the same with the backbone never unfrozen (linear probe), same epochs, size and augmentation.
run uhcs3_linear_probe .venv/bin/smalldata cv -c benchmarks/configs/uhcs3_linear_probe.yaml "${common[@]}" --cv_dir "$out/uhcs3_linear_probe"
# Issue 5: the same recipe without augmentation.
run uhcs3_no_aug .venv/bin/smalldata cv -c configs/exercise_efficientnet_lite0_offline.yaml "${common[@]}" --data.init_args.augmentation=none --cv_dir "$out/uhcs3_no_aug"
# Frozen features + logistic regression at three input sizes, on the learning-curve study's subsamples.
.venv/bin/python benchmarks/frozen_features.py --sizes 224,320,448 > "$out/frozen_features.log" 2>&1
# Issue 7: sim-to-real on the superalloy images.
bash benchmarks/sim_to_real.sh
# Issue 7: grain boundaries under an imaging-preset domain shift.
bash benchmarks/grain_boundaries.sh
# The figure of real image / truth / predictions.
.venv/bin/python benchmarks/sim_to_real_figure.py
