#!/usr/bin/env bash
# Superalloy Super1, synthetic labels only, adapted to the unlabelled Super1 training images: target-style
# histogram matching and imaging calibration during synthetic training, then AdaBN on the same unlabelled images.
# Scored on the Super1 test images (a group no decision touched), before and after AdaBN. Compare with
# benchmarks/sim_to_real.sh's (a) row (synthetic only, no adaptation). The adapted checkpoints are also scored with
# the 8-view test-time augmentation (benchmarks/super1_tta.py), a third seed repeats the shipped training, and a
# last variant trains only the decoder and head on the frozen ImageNet encoder.
set -euo pipefail
out=benchmarks/runs/super1_adapted
mkdir -p "$out"
seg=configs/segmentation
data=$(cd ../shared/data/superalloy && pwd)
# The unlabelled targets: the Super1 training images (their masks are never read).
python3 - "$data" "$out/targets.csv" <<'PY'
import csv, sys
data, target = sys.argv[1], sys.argv[2]
with open(f"{data}/manifest.csv") as handle, open(target, "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["file"])
    for row in csv.DictReader(handle):
        if "Super1:train" in row["official_splits"].split(";"):
            writer.writerow([f"{data}/{row['image']}"])
PY
cat > "$out/adabn.yaml" <<'YAML'
trainer:
  callbacks:
    # The real images are segmented at native scale in 256 px windows: estimate the statistics at that scale.
    - {class_path: smalldata_pl.callbacks.AdaptiveBatchNorm, init_args: {image_size: 512, batch_size: 4}}
YAML
# The same, with the ImageNet encoder frozen (weights and statistics) during synthetic training: only the decoder
# and head learn from synthetic labels, so the encoder's features stay ImageNet's until the real fine-tune.
cat > "$out/adabn_frozen_encoder.yaml" <<'YAML'
trainer:
  callbacks:
    - {class_path: smalldata_pl.callbacks.StagedUnfreezing, init_args: {unfreeze_at: []}}
    - {class_path: smalldata_pl.callbacks.AdaptiveBatchNorm, init_args: {image_size: 512, batch_size: 4}}
YAML
opts=(--trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir=$out)
# adapted: style + calibration while training, then AdaBN; adabn_only: the shipped synthetic training, then AdaBN
# (and again with two other seeds for the synthetic stream and the network).
declare -A variants=(
  [adapted]="--data.init_args.target_style=histogram --data.init_args.calibrate_imaging=true"
  [adabn_only]=""
  [adabn_only_seed1]="--seed_everything=1 --data.init_args.seed=1"
  [adabn_only_seed2]="--seed_everything=2 --data.init_args.seed=2"
  [adabn_frozen_encoder]="-c $out/adabn_frozen_encoder.yaml"
)
for name in adapted adabn_only adabn_only_seed1 adabn_only_seed2 adabn_frozen_encoder; do
  run=$out/$name/version_0/checkpoints
  if [ ! -f "$run/adabn.ckpt" ]; then
    start=$(date +%s)
    # shellcheck disable=SC2086  # the variant's options are separate words
    .venv/bin/smalldata fit -c $seg/synthetic_pretrain_precipitates.yaml -c "$out/adabn.yaml" "${opts[@]}" \
      --trainer.logger.init_args.name=$name --data.init_args.target_manifest="$out/targets.csv" \
      ${variants[$name]} > "$out/fit_$name.log" 2>&1
    echo "$name fit: $(( $(date +%s) - start )) s" | tee -a "$out/times.txt"
  fi
  for ckpt in last adabn; do
    log=$out/test_${name}_$ckpt.log
    [ -f "$log" ] || .venv/bin/smalldata test -c $seg/superalloy_imagenet.yaml "${opts[@]}" \
      --trainer.logger.init_args.name=test_${name}_$ckpt --ckpt_path "$run/$ckpt.ckpt" > "$log" 2>&1
    echo "== $name $ckpt"; grep -E "test/(miou|iou)" "$log" || tail -5 "$log"
  done
  [ -f "$out/tta_$name.log" ] || .venv/bin/python benchmarks/super1_tta.py --checkpoint "$run/adabn.ckpt" > "$out/tta_$name.log" 2>&1
  echo "== $name adabn, no TTA and 8-view TTA"; grep "mean IoU" "$out/tta_$name.log"
done
