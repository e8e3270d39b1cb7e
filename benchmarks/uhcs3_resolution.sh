#!/usr/bin/env bash
# UHCS-3 at a higher input resolution (default 448 px) on one machine with a GPU and many cores: the recommended
# recipe's group-stratified 5-fold CV (one process per fold, then cv-report) and the learning-curve study's
# small-data points for the strongest strategies (sharded over processes), validating at the last epoch only.
#   bash benchmarks/uhcs3_resolution.sh [DATA_ROOT] [OUT_DIR]
# Knobs (environment; defaults = the published run): IMAGE_SIZE EPOCHS SIZES REPEATS FOLDS SHARDS EPOCH_SAMPLES
# STRATEGIES BUDGET (seconds per process) PYTHON.
set -u
DATA=${1:-../shared/data/uhcs3}
OUT=${2:-benchmarks/runs/uhcs3_448}
IMAGE_SIZE=${IMAGE_SIZE:-448} EPOCHS=${EPOCHS:-8} SIZES=${SIZES:-5,10} REPEATS=${REPEATS:-2} FOLDS=${FOLDS:-5}
SHARDS=${SHARDS:-10} EPOCH_SAMPLES=${EPOCH_SAMPLES:-192} STRATEGIES=${STRATEGIES:-linear_probe,staged_aug}
BUDGET=${BUDGET:-86400} PY=${PYTHON:-python}
# One thread per process: many processes share the cores, and intra-op threads would oversubscribe them.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT/logs"
COMMON=(-c configs/exercise_efficientnet_lite0_offline.yaml --data.init_args.root="$DATA"
  --data.init_args.leakage_check=off --data.init_args.image_size="$IMAGE_SIZE" --trainer.max_epochs="$EPOCHS"
  --trainer.check_val_every_n_epoch="$EPOCHS" --trainer.enable_progress_bar=false --trainer.enable_model_summary=false)
start=$SECONDS
for fold in 0 1 2 3 4; do
  timeout "$BUDGET" $PY -m smalldata_pl fit "${COMMON[@]}" --data.init_args.num_workers=2 \
    --data.init_args.fold="$fold" --trainer.logger.init_args.save_dir="$OUT/cv" \
    --trainer.logger.init_args.name="fold_$fold" --trainer.logger.init_args.version="" \
    --checkpoint.save_top_k=0 >"$OUT/logs/fold_$fold.log" 2>&1 &
done
for ((shard = 0; shard < SHARDS; shard++)); do
  timeout "$BUDGET" $PY -m smalldata_pl study "${COMMON[@]}" --data.init_args.num_workers=1 \
    --data.init_args.epoch_samples="$EPOCH_SAMPLES" --strategies "$STRATEGIES" --sizes "$SIZES" \
    --repeats "$REPEATS" --folds "$FOLDS" --shard "$shard/$SHARDS" --out "$OUT/study" >"$OUT/logs/study_$shard.log" 2>&1 &
done
wait
echo "all processes done after $((SECONDS - start)) s"
$PY -m smalldata_pl cv-report "$OUT/cv"
$PY -m smalldata_pl study --out "$OUT/study" --report_only && cat "$OUT/study/summary.md"
