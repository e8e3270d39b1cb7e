#!/usr/bin/env bash
# Boundary segmenter trained only on synthetic optical grain images; boundary F1 on held-out synthetic images
# rendered with the training preset and with other presets (domain shift), and on the real TBM tiles.
set -euo pipefail
out=benchmarks/runs/grain_boundaries
mkdir -p "$out"
cfg=configs/segmentation/grain_boundaries_synthetic.yaml
opts=(--trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir=$out)
.venv/bin/smalldata fit -c $cfg "${opts[@]}" --trainer.logger.init_args.name=train > "$out/train.log" 2>&1
ckpt=$out/train/version_0/checkpoints/last.ckpt
for preset in optical sem_se sem_bse clean; do
  echo "== $preset" >> "$out/eval.log"
  .venv/bin/smalldata test -c $cfg "${opts[@]}" --data.init_args.imaging=$preset --trainer.logger.init_args.name=test_$preset --ckpt_path $ckpt >> "$out/eval.log" 2>&1
done
# The same checkpoint on the real TBM tiles, as `smalldata apply` runs it (when the shared data is present).
if [ -d ../shared/data/grain_boundaries_tbm ]; then
  .venv/bin/python benchmarks/tbm_apply.py "$ckpt" | tee "$out/tbm_apply.log"
fi
