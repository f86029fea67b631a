#!/usr/bin/env bash
# Creates (once) the Python venv that provides libtorch 2.11.0 for tch 0.24.0.
#
# The venv lives in a cache directory outside the clone, so every clone on a
# machine (and CI on a warm machine) reuses the same 4.6 GB install. Prints the
# venv's path on stdout; everything else goes to stderr.
#
#   GRADSTEP_CACHE   cache root (default: $XDG_CACHE_HOME/gradstep or ~/.cache/gradstep)
#   GRADSTEP_VENV    use this venv instead (must already hold torch 2.11.0)
set -euo pipefail

TORCH_VERSION=2.11.0
cache="${GRADSTEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gradstep}"
venv="${GRADSTEP_VENV:-$cache/venv-torch-$TORCH_VERSION}"
# The stamp names the package set: bump its suffix when the pip line changes, so
# existing venvs install the new packages (2: + tensorboard; 3: + nvidia-cuda-crt and
# nvidia-cuda-cccl, the CUDA headers, ~15 MB, that the CUDA-graph part of crates/model/csrc
# includes through ATen's CUDA headers; torch's wheel ships the runtime without them).
stamp="$venv/.gradstep-torch-ok-3"

if [ -f "$stamp" ]; then
    echo "$venv"
    exit 0
fi

python=${PYTHON:-python3}
mkdir -p "$(dirname "$venv")"
# One installer at a time per cache: a second clone waits instead of corrupting the venv.
exec 9>"$venv.lock"
flock 9
if [ -f "$stamp" ]; then
    echo "$venv"
    exit 0
fi

echo "gradstep: installing torch==$TORCH_VERSION into $venv (once per machine, ~4.6 GB)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet --progress-bar off "torch==$TORCH_VERSION" numpy safetensors tensorboard \
    "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*" >&2
got=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
if [ "$got" != "$TORCH_VERSION" ]; then
    echo "gradstep: $venv has torch $got, expected $TORCH_VERSION" >&2
    exit 1
fi
touch "$stamp"
echo "$venv"
