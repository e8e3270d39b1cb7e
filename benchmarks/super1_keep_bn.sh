#!/usr/bin/env bash
# Super1 with its 10 real training images (one crop each per epoch, as row (b) of sim_to_real.sh): the shipped
# ImageNet fine-tune beside the same fine-tune with the pretrained BatchNorm statistics kept
# (configs/overlays/keep_pretrained_bn.yaml). Scored with the last checkpoint on the Super1 test images.
set -euo pipefail
out=benchmarks/runs/super1_keep_bn
mkdir -p "$out"
seg=configs/segmentation
opts=(--trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir=$out
  --data.init_args.official_split=Super1 --data.init_args.crops_per_image=1)
for name in shipped keep_bn; do
  configs=(-c $seg/superalloy_imagenet.yaml)
  [ "$name" = keep_bn ] && configs+=(-c configs/overlays/keep_pretrained_bn.yaml)
  start=$(date +%s)
  .venv/bin/smalldata fit "${configs[@]}" "${opts[@]}" --trainer.logger.init_args.name=$name > "$out/$name.log" 2>&1
  echo "$name fit $(( $(date +%s) - start )) s" | tee -a "$out/times.txt"
  .venv/bin/smalldata test "${configs[@]}" "${opts[@]}" --trainer.logger.init_args.name=${name}_test \
    --ckpt_path $out/$name/version_0/checkpoints/last.ckpt >> "$out/$name.log" 2>&1
done
