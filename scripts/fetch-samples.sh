#!/usr/bin/env bash
# Extracts the natural photographs shipped inside the scikit-image wheel (PyPI) into
# datasets/samples/{train,test}: the embedded default dataset of `make data` / `make demo`.
# Needs only the package registry (pip download of one wheel, cached). Idempotent.
#
#   GRADSTEP_CACHE   cache root for the wheel (default: $XDG_CACHE_HOME/gradstep or ~/.cache/gradstep)
#   PYTHON           python with pip (default: python3)
#
# Only real photographs are taken (no synthetic test patterns, logos, text or silhouettes).
# Gray ones (camera, moon, coins, textures) are kept: the sampler converts them to 3 channels.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out="${1:-$repo/datasets/samples}"
cache="${GRADSTEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gradstep}/wheels"
python=${PYTHON:-python3}

train=(astronaut.png brick.png camera.png chelsea.png grass.png gravel.png hubble_deep_field.jpg
       ihc.png moon.png motorcycle_left.png motorcycle_right.png retina.jpg rocket.jpg)
test=(coffee.png coins.png)

have_all() {
    local f
    for f in "${train[@]}"; do [ -s "$out/train/$f" ] || return 1; done
    for f in "${test[@]}"; do [ -s "$out/test/$f" ] || return 1; done
}
if have_all; then
    echo "samples: $out already holds ${#train[@]} training and ${#test[@]} test photographs" >&2
    exit 0
fi

mkdir -p "$cache"
wheel=$(ls "$cache"/scikit_image-*.whl 2>/dev/null | sort | tail -n1 || true)
if [ -z "$wheel" ]; then
    echo "samples: downloading the scikit-image wheel into $cache" >&2
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$cache" scikit-image >&2
    wheel=$(ls "$cache"/scikit_image-*.whl | sort | tail -n1)
fi

mkdir -p "$out/train" "$out/test"
"$python" - "$wheel" "$out" "${train[*]}" "${test[*]}" <<'PY'
import os, sys, zipfile
wheel, out, train, test = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
with zipfile.ZipFile(wheel) as z:
    for split, names in (("train", train), ("test", test)):
        for n in names:
            dst = os.path.join(out, split, n)
            tmp = dst + ".tmp"
            with z.open("skimage/data/" + n) as src, open(tmp, "wb") as f:
                f.write(src.read())
            os.replace(tmp, dst)
print("samples: %d training and %d test photographs in %s (from %s)"
      % (len(train), len(test), out, os.path.basename(wheel)), file=sys.stderr)
PY
