#!/usr/bin/env bash
# All GPU benchmarks beside the PyTorch anchor, in one call (issue 8):
# model (∇g, GS training step), prox (training step with the spectral-norm penalty) and
# pnp (GS-PnP deblurring of CBSD10), then memory (largest batch and image, tiles; no anchor).
# Every row carries its peak GPU memory. Prints one table with the GPU's name; last line:
# `bench-gpu min-speedup <ratio>` (the smallest of the three speedups; 0 when one of them
# failed; with a subset in BENCHES, the smallest of those run, and the line says which).
#
#   GRADSTEP_BIN    the gradstep binary (default: target/release/gradstep)
#   ANCHOR_PYTHON   Python with torch 2.11 + deepinv 0.5.0 (default: python3)
#   GRADSTEP_SHARED the shared folder with bench/anchor_deepinv.py and data/CBSD10 (default: ../shared)
#   OUT_DIR         where the full logs go (default: runs/bench-gpu)
#   MEMORY_ARGS     extra arguments of `gradstep bench memory` (e.g. --checkpoint, --image)
#   PNP_ARGS        extra arguments of `gradstep bench pnp` (e.g. --checkpoint: the PSNR gaps
#                   of the precision variants mean more with trained weights)
#   BENCHES         which to run, in order (default: "model prox pnp memory")
#   BENCH_TIMEOUT   seconds allowed to each benchmark (default: no limit), for time-limited calls
set -uo pipefail
bin=${GRADSTEP_BIN:-target/release/gradstep}
py=${ANCHOR_PYTHON:-python3}
shared=${GRADSTEP_SHARED:-../shared}
out=${OUT_DIR:-runs/bench-gpu}
mkdir -p "$out"
anchor="$shared/bench/anchor_deepinv.py"
[ -x "$bin" ] || { echo "bench-gpu: no binary at $bin (build with cargo build --release)" >&2; exit 1; }
[ -f "$anchor" ] || { echo "bench-gpu: no anchor at $anchor (set GRADSTEP_SHARED)" >&2; exit 1; }
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
[ -n "$gpu" ] || gpu="no GPU (CPU run)"

limit=()
[ -n "${BENCH_TIMEOUT:-}" ] && limit=(timeout "$BENCH_TIMEOUT")
ran=" "
run() { # name, then the command
    local name=$1; shift
    echo "== $name: $*" >&2
    ran+="$name "
    rm -f "$out/$name.txt" # a failed run must not show an earlier run's numbers
    "${limit[@]}" "$@" 2>&1 | grep -v 'Warning: at::autocast' | tee "$out/$name.txt" >&2
}
for b in ${BENCHES:-model prox pnp memory}; do
    case $b in
        model) run model "$bin" bench model --anchor "$anchor" --anchor-python "$py" ;;
        prox) run prox "$bin" bench prox --anchor "$anchor" --anchor-python "$py" ;;
        pnp) run pnp "$bin" bench pnp --images "$shared/data/CBSD10" --anchor "$anchor" --anchor-python "$py" ${PNP_ARGS:-} ;;
        memory) run memory "$bin" bench memory ${MEMORY_ARGS:-} ;;
        *) echo "bench-gpu: unknown benchmark $b in BENCHES (model, prox, pnp, memory)" >&2; exit 2 ;;
    esac
done

speedup() { grep -E "^bench-$1 speedup " "$out/$1.txt" | tail -1 | awk '{print $3}'; }
echo
echo "GPU: $gpu"
echo "| benchmark | speedup vs PyTorch (same run) | goal |"
echo "|---|---|---|"
min=""
measured=()
for b in model prox pnp; do
    goal=3; [ $b = pnp ] && goal=4
    if [[ "$ran" != *" $b "* ]]; then
        echo "| $b | not run (BENCHES) | ${goal}× |"
        continue
    fi
    measured+=("$b")
    s=$(speedup $b 2>/dev/null)
    echo "| $b | ${s:-failed} | ${goal}× |"
    if [[ "$s" =~ ^[0-9.]+$ ]]; then
        if [ -z "$min" ] || awk "BEGIN{exit !($s < $min)}"; then min=$s; fi
    else
        min=0
    fi
done
echo
echo "memory (full model, $gpu):"
if [[ "$ran" == *" memory "* ]]; then
    grep -sE "^(largest|tiles vs|beyond memory)" "$out/memory.txt" | sed 's/^/  /'
else
    echo "  not run (BENCHES)"
fi
if [ ${#measured[@]} -eq 3 ]; then
    echo "bench-gpu min-speedup ${min:-0}"
elif [ ${#measured[@]} -gt 0 ]; then
    echo "bench-gpu min-speedup ${min:-0} (of ${measured[*]} only)"
else
    echo "bench-gpu min-speedup none (no speedup benchmark in BENCHES)"
fi
