#!/usr/bin/env bash
# The GPU checks and figures, in one pass on one lent GPU (the README's GPU figures come from its outputs).
#   OUT=dir MNIST=dir bash scripts/gpu_run.sh
# 1. tests/test_cuda.py (the CUDA paths: compiled flex = dense, bf16 training, exact KV cache, FSDP over NCCL)
#    beside 2. the Moving MNIST GPU recipe of notebook 08 (the train CLI with the notebook's parameters),
# 3. python -m minivgpt.bench size=large alone on the GPU, 4. python -m minivgpt.evaluate on the run.
# Each step has its own time limit, so one failure still leaves the others' results in $OUT.
set -u
OUT=${OUT:-runs/gpu}; MNIST=${MNIST:-data/mnist}; TRAIN_MINUTES=${TRAIN_MINUTES:-3.5}; PY=${PY:-python3}
LOGS=$(mktemp -d); mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log() { { echo "=== $1"; cat "$LOGS/$1"; } >> "$OUT/log.txt"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } > "$LOGS/env" 2>&1; log env
RECIPE=(data=moving_mnist_digits:$MNIST image_size=64 patch_size=8 num_samples=1000000 clips=10 frames_per_clip=2
        width=384 depth=8 heads=6 batch_size=64 lr=1e-3 warmup=200 steps=6000 ema_decay=0.999 amp=bf16
        attention=flex minutes=$TRAIN_MINUTES ckpt_every=500 log_every=50 threads=8 progress=false
        out=runs/gpu_mnist overwrite=true)
echo "${RECIPE[*]}" > "$LOGS/recipe"; log recipe
timeout 330 $PY -m minivgpt.train "${RECIPE[@]}" > "$LOGS/train" 2>&1 &
TRAIN=$!
timeout 300 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -rs > "$OUT/test_cuda.log" 2>&1
wait $TRAIN; echo "rc=$?" >> "$LOGS/train"; log train
cp runs/gpu_mnist/metrics.jsonl "$OUT/gpu_mnist_metrics.jsonl"
timeout 200 $PY -m minivgpt.bench size=large json="$OUT/bench_large.json" > "$LOGS/bench" 2>&1
echo "rc=$?" >> "$LOGS/bench"; log bench
timeout 120 $PY -m minivgpt.evaluate runs/gpu_mnist context=10 predict=10 samples=4 videos=256 batch_size=64 \
    device=cuda progress=false out="$OUT/gpu_mnist_eval" > "$LOGS/evaluate" 2>&1
echo "rc=$?" >> "$LOGS/evaluate"; log evaluate
tail -40 "$OUT/log.txt"
