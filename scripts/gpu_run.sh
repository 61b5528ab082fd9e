#!/usr/bin/env bash
# The GPU checks and figures, in one pass on one lent GPU (the README's GPU figures come from its outputs).
#   OUT=dir MNIST=dir bash scripts/gpu_run.sh
# Beside each other on the one GPU, for TRAIN_MINUTES:
#   1. tests/test_cuda.py (the CUDA paths: compiled flex = dense, bf16 training, exact KV cache, FSDP over NCCL);
#   2. a Moving MNIST recipe of notebook 08 (the train CLI with the notebook's parameters; RECIPE=anchor is the
#      published tables' scale, 20-frame videos; RECIPE=short, the default, 4-frame videos, which is what next
#      clip diffusion needed at CPU scale, docs/results.md section 4);
#   3. the SimVP-style baseline for the same minutes (SIMVP=0 leaves it out).
# Then 4. python -m minivgpt.bench size=large alone on the GPU (BENCH=1; it has been measured twice),
# 5. python -m minivgpt.evaluate on both runs (samples, and the one-step mean forecast), 6. a tarball in $OUT.
# DRY=1 prints the training parameters and stops. Each step has its own time limit, so one failure still leaves
# the others' results in $OUT. TRAIN_MINUTES=6.5 fits a 15-minute lease (its start and the evaluations included).
set -u
OUT=${OUT:-runs/gpu}; MNIST=${MNIST:-data/mnist}; TRAIN_MINUTES=${TRAIN_MINUTES:-6.5}; PY=${PY:-python3}
RECIPE=${RECIPE:-short}; SIMVP=${SIMVP:-1}; BENCH=${BENCH:-0}; TESTS=${TESTS:-1}; DEVICE=${DEVICE:-cuda}
RUNS=runs/gpu_runs  # under the working directory, so the reports name their files relatively
COMMON=(data=moving_mnist_digits:$MNIST image_size=64 patch_size=8 num_samples=1000000 width=384 depth=8 heads=6
        warmup=200 ema_decay=0.999 minutes=$TRAIN_MINUTES log_every=100 threads=8 progress=false
        device=$DEVICE out=$RUNS/videogpt overwrite=true)
case $RECIPE in
  anchor) ARGS=(clips=10 frames_per_clip=2 batch_size=64 lr=1e-3 steps=31250 amp=bf16 attention=flex
          ckpt_every=500) ;;
  short) ARGS=(clips=2 frames_per_clip=2 batch_size=128 lr=1e-3 steps=100000 amp=bf16 attention=flex
         ckpt_every=2000) ;;
  tiny) ARGS=(clips=2 frames_per_clip=2 batch_size=4 lr=1e-3 steps=100000 amp=off ckpt_every=2000 width=32 depth=1
              heads=2 num_samples=64) ;;  # a smoke test of this script on a CPU
  *) echo "RECIPE=$RECIPE: choose anchor, short or tiny" >&2; exit 2 ;;
esac
if [ "${DRY:-0}" = 1 ]; then echo "${COMMON[*]} ${ARGS[*]}"; exit 0; fi  # the training parameters only
LOGS=$(mktemp -d); mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log() { { echo "=== $1"; cat "$LOGS/$1"; } >> "$OUT/log.txt"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
} > "$LOGS/env" 2>&1; log env
echo "${COMMON[*]} ${ARGS[*]}" > "$LOGS/recipe"; log recipe
LIMIT=$(awk "BEGIN{print int($TRAIN_MINUTES * 60 + 150)}")
timeout "$LIMIT" $PY -m minivgpt.train "${COMMON[@]}" "${ARGS[@]}" > "$LOGS/train" 2>&1 &
TRAIN=$!
if [ "$SIMVP" = 1 ]; then
  timeout "$LIMIT" $PY -m minivgpt.simvp data=moving_mnist_digits:$MNIST image_size=64 context=10 predict=10 \
    batch_size=16 lr=1e-3 steps=1000000 minutes=$TRAIN_MINUTES threads=4 device=$DEVICE progress=false \
    out=$RUNS/simvp overwrite=true > "$LOGS/simvp" 2>&1 &
  SIM=$!
fi
if [ "$TESTS" = 1 ]; then
  timeout 360 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -rs > "$OUT/test_cuda.log" 2>&1
fi
wait $TRAIN; echo "rc=$?" >> "$LOGS/train"; log train
if [ "$SIMVP" = 1 ]; then wait $SIM; echo "rc=$?" >> "$LOGS/simvp"; log simvp; fi
if [ "$BENCH" = 1 ]; then
  timeout 200 $PY -m minivgpt.bench size=large json="$RUNS/bench_large.json" > "$LOGS/bench" 2>&1
  echo "rc=$?" >> "$LOGS/bench"; log bench
fi
EVAL=(context=10 predict=10 videos=256 batch_size=64 device=$DEVICE progress=false)
timeout 150 $PY -m minivgpt.evaluate $RUNS/videogpt "${EVAL[@]}" samples=4 out=$RUNS/videogpt_eval \
  > "$LOGS/evaluate" 2>&1; echo "rc=$?" >> "$LOGS/evaluate"; log evaluate
timeout 60 $PY -m minivgpt.evaluate $RUNS/videogpt "${EVAL[@]}" steps=1 out=$RUNS/videogpt_mean_eval \
  > "$LOGS/evaluate_mean" 2>&1; echo "rc=$?" >> "$LOGS/evaluate_mean"; log evaluate_mean
if [ "$SIMVP" = 1 ]; then
  timeout 60 $PY -m minivgpt.evaluate $RUNS/simvp "${EVAL[@]}" out=$RUNS/simvp_eval \
    > "$LOGS/evaluate_simvp" 2>&1; echo "rc=$?" >> "$LOGS/evaluate_simvp"; log evaluate_simvp
fi
# everything but the checkpoints (too large to bring back) in one file
tar czf "$OUT/gpu_runs.tar.gz" --exclude='*.pt' "$RUNS"
tail -60 "$OUT/log.txt"
