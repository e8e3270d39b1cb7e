#!/usr/bin/env bash
# UHCS-3 on one machine with a GPU and many cores: the transfer-method comparison (linear probe, full fine-tune,
# Lightning's BackboneFinetuning, StagedUnfreezing; group-stratified 5-fold) and the learning-curve study
# (6 strategies x labelled images per class), run as parallel processes sharing the GPU.
#   bash benchmarks/uhcs3_parallel.sh [DATA_ROOT] [OUT_DIR]
# Knobs (environment; defaults = the published run): EPOCHS IMAGE_SIZE WORKERS SIZES_SMALL SIZES_LARGE REPEATS
# FOLDS EPOCH_SAMPLES PRETRAIN_SIZE PLAN CV_NUM_FOLDS BUDGET (seconds per process) PYTHON.
set -u
DATA=${1:-../shared/data/uhcs3}
OUT=${2:-benchmarks/runs/uhcs3_parallel}
EPOCHS=${EPOCHS:-8} IMAGE_SIZE=${IMAGE_SIZE:-224} WORKERS=${WORKERS:-1}
SIZES_SMALL=${SIZES_SMALL:-5,10} SIZES_LARGE=${SIZES_LARGE:-20,50,all}
REPEATS=${REPEATS:-2} FOLDS=${FOLDS:-2} EPOCH_SAMPLES=${EPOCH_SAMPLES:-192}
PRETRAIN_SIZE=${PRETRAIN_SIZE:-2048} PLAN=${PLAN:-[2,3,4,5]} CV_NUM_FOLDS=${CV_NUM_FOLDS:-5}
BUDGET=${BUDGET:-86400} PY=${PYTHON:-python}
# One thread per process: many processes share the cores, and intra-op threads would oversubscribe them.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT/logs"
COMMON=(-c configs/exercise_efficientnet_lite0_offline.yaml --data.init_args.root="$DATA"
  --data.init_args.leakage_check=off --data.init_args.num_workers="$WORKERS" --data.init_args.image_size="$IMAGE_SIZE"
  --trainer.max_epochs="$EPOCHS" --trainer.enable_progress_bar=false --trainer.enable_model_summary=false)
STAGED='smalldata_pl.callbacks.StagedUnfreezing'
PROBE="[{\"class_path\": \"$STAGED\", \"init_args\": {\"unfreeze_at\": [], \"lr_decay\": 0.2, \"keep_bn_eval\": true}}]"
LIGHTNING="[{\"class_path\": \"lightning.pytorch.callbacks.BackboneFinetuning\", \"init_args\": {\"unfreeze_backbone_at_epoch\": 2}}]"
# BackboneFinetuning appends a param group mid-run: the default per-step LambdaLR then raises, so it gets the
# per-epoch cosine, and an optimizer over the parameters trainable at the start.
COSINE="{\"class_path\": \"torch.optim.lr_scheduler.CosineAnnealingLR\", \"init_args\": {\"T_max\": $EPOCHS}}"

timed() { # name command... : run with the budget, log, and record the wall time
  local name=$1 start=$SECONDS
  shift
  timeout "$BUDGET" "$@" >"$OUT/logs/$name.log" 2>&1
  echo "$name rc=$? seconds=$((SECONDS - start))" >>"$OUT/timings.txt"
}
cv() { # method, extra fit options...
  local method=$1
  shift
  timed "cv_$method" $PY -m smalldata_pl cv "${COMMON[@]}" --data.init_args.num_folds="$CV_NUM_FOLDS" "$@" \
    --cv_dir "$OUT/cv_$method"
}
study() { # strategies, sizes, extra study options...
  timed "study_$1_$2" $PY -m smalldata_pl study "${COMMON[@]}" --data.init_args.epoch_samples="$EPOCH_SAMPLES" \
    --strategies "$1" --sizes "$2" --repeats "$REPEATS" --folds "$FOLDS" --plan "$PLAN" --out "$OUT/study" "${@:3}"
}
synthetic() { # pre-pretrain on procedural grains, export the encoder, then its two study chunks
  timed synthetic_pretrain $PY -m smalldata_pl fit -c configs/synthetic_pretrain_grains.yaml \
    --data.init_args.train_size="$PRETRAIN_SIZE" --data.init_args.image_size="$IMAGE_SIZE" \
    --data.init_args.num_workers=4 --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$OUT" \
    --checkpoint.dirpath="$OUT/synthetic_ckpt" --checkpoint.save_top_k=0
  $PY -m smalldata_pl export-encoder "$OUT/synthetic_ckpt/last.ckpt" --out "$OUT/synthetic_lite0.pth" || return
  study synthetic_staged_aug "$SIZES_SMALL" --synthetic_encoder "$OUT/synthetic_lite0.pth" &
  study synthetic_staged_aug "$SIZES_LARGE" --synthetic_encoder "$OUT/synthetic_lite0.pth" &
  wait
}

synthetic &
for strategy in scratch linear_probe full_finetune staged staged_aug; do
  study "$strategy" "$SIZES_SMALL" &
  study "$strategy" "$SIZES_LARGE" &
done
cv staged &
cv linear_probe --trainer.callbacks="$PROBE" &
cv full_finetune --trainer.callbacks=[] &
cv backbone_finetuning --trainer.callbacks="$LIGHTNING" --model.init_args.optimize=trainable \
  --model.init_args.scheduler="$COSINE" --model.init_args.scheduler_interval=epoch &
wait
$PY -m smalldata_pl study --out "$OUT/study" --report_only
for method in staged linear_probe full_finetune backbone_finetuning; do
  echo "== $method" && cat "$OUT/cv_$method/summary.csv" 2>/dev/null
done
cat "$OUT/timings.txt" "$OUT/study/summary.md"
