#!/usr/bin/env bash
# `make demo`: the whole GS pipeline on a fresh CPU machine, in a few minutes.
#   1. fetches the sample photographs (scripts/fetch-samples.sh);
#   2. trains a tiny GS-DRUNet (configs/gs-drunet-tiny.json) on the CPU;
#   3. adds noise (σ = 25) to a held-out photograph and denoises it with the trained D_σ;
#   4. blurs that photograph (25×25 Gaussian kernel, std 1.6, noise ν = 2.55) and deblurs it
#      with GS-PnP (gs-pgd, at most DEMO_PNP_ITERS iterations) using the trained ∇g_σ;
#   5. leaves images, PSNR and TensorBoard logs in runs/demo/.
# Needs no ../shared: the data are the scikit-image sample photographs, the kernel is generated.
# Environment: CARGO (default cargo), GRADSTEP_BIN (a built gradstep: skips the build), DEMO_STEPS (override the number of training steps),
# DEMO_SIGMA (default 25), DEMO_PNP_ITERS (default 60: ~3 s per iteration on 2 cores).
# A previous runs/demo is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
sigma=${DEMO_SIGMA:-25}
pnp_iters=${DEMO_PNP_ITERS:-60}
start=$(date +%s)

scripts/fetch-samples.sh
if [ -n "${GRADSTEP_BIN:-}" ]; then
    bin=$GRADSTEP_BIN
else
    $cargo build --release -p gradstep-cli
    bin="${CARGO_TARGET_DIR:-target}/release/gradstep"
fi

if [ -d runs/demo ]; then
    echo "demo: replacing the previous runs/demo" >&2
    rm -rf runs/demo
fi
sets=()
[ -n "${DEMO_STEPS:-}" ] && sets+=(--set "steps=$DEMO_STEPS")
"$bin" train --config configs/gs-drunet-tiny.json --device cpu "${sets[@]}"

ckpt=runs/demo/checkpoints/best.safetensors
[ -f "$ckpt" ] || ckpt=$(ls runs/demo/checkpoints/step-*.safetensors | sort | tail -n1)
photo=datasets/samples/test/coffee.png
cp "$photo" runs/demo/clean.png
"$bin" denoise --checkpoint "$ckpt" --sigma "$sigma" --add-noise --seed 0 --device cpu \
    --save-noisy runs/demo/noisy.png "$photo" runs/demo/denoised.png | tee runs/demo/psnr.txt

mkdir -p runs/demo/deblur
"$bin" restore --checkpoint "$ckpt" --task deblur --kernel gaussian --noise 2.55 \
    --algorithm gs-pgd --max-iter "$pnp_iters" --seed 0 --device cpu \
    "$photo" runs/demo/deblur | tee runs/demo/deblur/psnr.txt
denoise_psnr=$(grep -m1 '^PSNR' runs/demo/psnr.txt || true)
blurred_psnr=$(sed -n 's/^observed: PSNR \([0-9.]*\) dB.*/\1/p' runs/demo/deblur/psnr.txt)
deblur_psnr=$(sed -n 's/^restored: PSNR \([0-9.]*\) dB.*/\1/p' runs/demo/deblur/psnr.txt)

secs=$(( $(date +%s) - start ))
cat <<MSG

demo finished in $((secs / 60)) min $((secs % 60)) s.
  denoising, σ = $sigma:   $denoise_psnr
  deblurring, GS-PnP:  PSNR input $blurred_psnr dB, deblurred $deblur_psnr dB
Look at:
  runs/demo/clean.png, noisy.png, denoised.png       the held-out photograph, denoised
  runs/demo/psnr.txt                                  denoising PSNR before / after
  runs/demo/deblur/observed.png, restored.png         blurred + noisy (ν = 2.55), GS-PnP restored
  runs/demo/deblur/psnr.txt, convergence.json, *.png  deblurring PSNR, objective and PSNR per iteration
  runs/demo/checkpoints/                              the trained tiny model
  make tensorboard                                    training curves, validation PSNR and images
MSG
