#!/usr/bin/env bash
# Every GPU measurement of docs/performance.md in one call (issue 8):
#   1. scripts/bench-gpu.sh: model (eager variants and CUDA-graph rows), prox, pnp (with the
#      bf16 / channels-last variants) beside the PyTorch anchor, and memory;
#   2. 300-step training runs of configs/gs-drunet.json with the speed switches, to check
#      the validation PSNR of D_σ against the fp32 autograd reference (budget 0.05 dB).
#
#   GRADSTEP_BIN     the gradstep binary (default: target/release/gradstep)
#   GRADSTEP_SHARED  folder with bench/anchor_deepinv.py and data/CBSD68 (default: ../shared)
#   ANCHOR_PYTHON    Python with torch 2.11 + deepinv 0.5.0 (default: python3)
#   OUT              where logs go (default: runs/gpu-checks)
#   TRAIN_DATA       training images for the 300-step runs (default: datasets/samples/train)
#   TRAIN_TIMEOUT    seconds per training run (default: 90)
#   PART             bench, train or all (default: all); split to fit a time-limited call
set -uo pipefail
bin=${GRADSTEP_BIN:-target/release/gradstep}
shared=${GRADSTEP_SHARED:-../shared}
out=${OUT:-runs/gpu-checks}
data=${TRAIN_DATA:-datasets/samples/train}
mkdir -p "$out"
part=${PART:-all}
"$bin" info | tee "$out/info.txt"
if [ "$part" != train ]; then
GRADSTEP_BIN=$bin GRADSTEP_SHARED=$shared ANCHOR_PYTHON=${ANCHOR_PYTHON:-python3} OUT_DIR=$out/bench \
  MEMORY_ARGS="--image $shared/data/CBSD68/0000.png" bash scripts/bench-gpu.sh > "$out/bench-gpu.txt" 2>&1
grep -v "Warning: at::autocast" "$out/bench-gpu.txt" \
  | grep -E "^(ours|adjoint|headline|\||bench|GPU|estimates|batched|largest|tiles|beyond|  )"
fi
[ "$part" = bench ] && exit 0
for v in "autograd fp32 contiguous false" "adjoint fp32 contiguous false" \
         "adjoint bf16 contiguous false" "adjoint bf16 channels_last false" "adjoint bf16 contiguous true"; do
  set -- $v
  name=check-$1-$2-$3-graph$4
  timeout "${TRAIN_TIMEOUT:-90}" "$bin" train --config configs/gs-drunet.json --device cuda \
    --set name=$name --set runs_dir="$out/runs" --set "data.roots=[\"$data\"]" --set data.cache_dir=null \
    --set steps=300 --set validation.every=300 --set "validation.dirs=[\"$shared/data/CBSD68\"]" \
    --set validation.limit=8 --set checkpoint.every=300 --set log.every=100 \
    --set performance.grad_method=$1 --set performance.precision=$2 --set performance.memory_format=$3 \
    --set performance.cuda_graph=$4 \
    2>&1 | grep -v "Warning: at::autocast" > "$out/$name.txt"
  echo "$name: $(grep -E 'validation at step 300' "$out/$name.txt" | sed 's/.*mean D/mean D/') $(grep -oE '[0-9.]+ steps/s' "$out/$name.txt" | tail -1)"
done
