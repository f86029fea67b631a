#!/usr/bin/env bash
# Every GPU measurement of docs/performance.md in one call (issue 8), about 8 minutes:
#   1. 300-step training runs of configs/gs-drunet.json with the speed switches, to check
#      the validation PSNR of D_σ against the fp32 autograd reference (budget 0.05 dB);
#   2. scripts/bench-gpu.sh: model (eager variants and CUDA-graph rows), prox, pnp (with the
#      bf16 / fp16 / layout variants and the backtracking check) beside the PyTorch anchor,
#      then memory. pnp and memory use the default run's 300-step checkpoint from 1: the
#      PSNR gaps of the 16-bit variants and the tiles-vs-whole check mean little with random
#      weights (a random network is neither close to x nor nearly local).
#
#   GRADSTEP_BIN     the gradstep binary (default: target/release/gradstep)
#   GRADSTEP_SHARED  folder with bench/anchor_deepinv.py and data/CBSD68 (default: ../shared)
#   ANCHOR_PYTHON    Python with torch 2.11 + deepinv 0.5.0 (default: python3)
#   OUT              where logs go (default: runs/gpu-checks): info.txt, train.txt (every
#                    training run's log), bench-gpu.txt, bench/{model,prox,pnp,memory}.txt
#   RUNS_DIR         the training runs' checkpoints and TensorBoard logs (default: $OUT/runs;
#                    on the device machine put them outside $OUT, e.g. /tmp/runs)
#   TRAIN_DATA       training images for the 300-step runs (default: datasets/samples/train)
#   TRAIN_TIMEOUT    seconds per training run (default: 90)
#   BENCH_TIMEOUT    seconds allowed to each benchmark (default: 240)
#   PART             train, bench or all (default: all)
set -uo pipefail
bin=${GRADSTEP_BIN:-target/release/gradstep}
shared=${GRADSTEP_SHARED:-../shared}
out=${OUT:-runs/gpu-checks}
runs=${RUNS_DIR:-$out/runs}
data=${TRAIN_DATA:-datasets/samples/train}
mkdir -p "$out"
part=${PART:-all}
"$bin" info | tee "$out/info.txt"
default_run=check-adjoint-bf16-channels_last-graphfalse
if [ "$part" != bench ]; then
    # The reference (fp32 double backward), the default of configs/gs-drunet.json (bf16,
    # channels-last), the default with the CUDA graph, and fp32 channels-last.
    for v in "autograd fp32 contiguous false" "adjoint bf16 channels_last false" \
             "adjoint bf16 channels_last true" "adjoint fp32 channels_last false"; do
        set -- $v
        name=check-$1-$2-$3-graph$4
        log=$(mktemp)
        start=$(date +%s)
        timeout "${TRAIN_TIMEOUT:-90}" "$bin" train --config configs/gs-drunet.json --device cuda \
            --set name=$name --set runs_dir="$runs" --set "data.roots=[\"$data\"]" --set data.cache_dir=null \
            --set steps=300 --set validation.every=300 --set "validation.dirs=[\"$shared/data/CBSD68\"]" \
            --set validation.limit=8 --set checkpoint.every=300 --set log.every=100 \
            --set performance.grad_method=$1 --set performance.precision=$2 \
            --set performance.memory_format=$3 --set performance.cuda_graph=$4 > "$log" 2>&1
        rc=$?
        { echo "== $name (exit $rc, $(( $(date +%s) - start )) s)"; cat "$log"; } >> "$out/train.txt"
        echo "$name: $(grep -E 'validation at step 300' "$log" | sed 's/.*mean D/mean D/') $(grep -oE '[0-9.]+ steps/s' "$log" | tail -1) (exit $rc)"
        rm -f "$log"
    done
fi
[ "$part" = train ] && exit 0
memory_args="--image $shared/data/CBSD68/0000.png"
pnp_args=""
ckpt=$runs/$default_run/checkpoints/step-00000300.safetensors
if [ -f "$ckpt" ]; then
    memory_args="$memory_args --checkpoint $ckpt"
    pnp_args="--checkpoint $ckpt"
fi
GRADSTEP_BIN=$bin GRADSTEP_SHARED=$shared ANCHOR_PYTHON=${ANCHOR_PYTHON:-python3} OUT_DIR=$out/bench \
    BENCH_TIMEOUT=${BENCH_TIMEOUT:-240} MEMORY_ARGS="$memory_args" PNP_ARGS="$pnp_args" \
    bash scripts/bench-gpu.sh > "$out/bench-gpu.txt" 2>&1
grep -E "^(ours|adjoint|∇g|headline|with backtracking|\||bench|GPU|estimates|batched|largest|tiles|beyond|  )" "$out/bench-gpu.txt"
