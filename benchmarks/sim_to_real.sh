#!/usr/bin/env bash
# Sim-to-real on the real superalloy images (upstream Super1 and one-shot Super3 splits).
set -euo pipefail
out=benchmarks/runs/sim_to_real
mkdir -p "$out"
seg=configs/segmentation
log() { echo "$(date +%T) $*" | tee -a "$out/steps.log"; }
opts=(--trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir=$out)

log "synthetic pre-training"
.venv/bin/smalldata fit -c $seg/synthetic_pretrain_precipitates.yaml "${opts[@]}" --trainer.logger.init_args.name=synthetic > "$out/synthetic.log" 2>&1
ckpt=$(ls $out/synthetic/version_0/checkpoints/last.ckpt)
.venv/bin/smalldata export-encoder "$ckpt" --out "$out/synthetic_encoder.pth"
log "(a) synthetic only, evaluated on the real Super1 test images"
.venv/bin/smalldata test -c $seg/superalloy_imagenet.yaml "${opts[@]}" --trainer.logger.init_args.name=a_synthetic_only --ckpt_path "$ckpt" > "$out/a_synthetic_only.log" 2>&1
for split in Super1 Super3; do
  # One-shot (Super3): 16 random crops of the single training image per epoch instead of one.
  crops=1; [ "$split" = Super3 ] && crops=16
  log "(b) ImageNet fine-tune, $split"
  .venv/bin/smalldata fit -c $seg/superalloy_imagenet.yaml "${opts[@]}" --data.init_args.official_split=$split --data.init_args.crops_per_image=$crops --trainer.logger.init_args.name=b_imagenet_$split > "$out/b_$split.log" 2>&1
  .venv/bin/smalldata test -c $seg/superalloy_imagenet.yaml "${opts[@]}" --data.init_args.official_split=$split --data.init_args.crops_per_image=$crops --trainer.logger.init_args.name=b_imagenet_${split}_test --ckpt_path $out/b_imagenet_$split/version_0/checkpoints/last.ckpt >> "$out/b_$split.log" 2>&1
  log "(c) synthetic pre-training then fine-tune, $split"
  .venv/bin/smalldata fit -c $seg/superalloy_imagenet.yaml "${opts[@]}" --data.init_args.official_split=$split --data.init_args.crops_per_image=$crops --model.init_args.pretrained=$out/synthetic_encoder.pth --trainer.logger.init_args.name=c_synthetic_$split > "$out/c_$split.log" 2>&1
  .venv/bin/smalldata test -c $seg/superalloy_imagenet.yaml "${opts[@]}" --data.init_args.official_split=$split --data.init_args.crops_per_image=$crops --model.init_args.pretrained=$out/synthetic_encoder.pth --trainer.logger.init_args.name=c_synthetic_${split}_test --ckpt_path $out/c_synthetic_$split/version_0/checkpoints/last.ckpt >> "$out/c_$split.log" 2>&1
done
log done
