# gradstep: every target sets up libtorch itself (scripts/setup-libtorch.sh, cached per machine).
SHELL := /bin/bash
VENV := $(shell scripts/setup-libtorch.sh)
ifeq ($(VENV),)
$(error scripts/setup-libtorch.sh failed: see the messages above)
endif
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
export GRADSTEP_SHARED ?= $(abspath ../shared)
CARGO ?= cargo

.PHONY: build test bench bench-model bench-gpu
build:
	$(CARGO) build --release

test:
	$(CARGO) test --release --workspace
	@if [ "$${GRADSTEP_SKIP_SLURM:-0}" = 1 ]; then echo "test-slurm: skipped (GRADSTEP_SKIP_SLURM=1)"; else $(MAKE) --no-print-directory test-slurm; fi

# ∇g of one 256² image and one GS training step (full model) on this machine's device,
# beside the PyTorch anchor (deepinv installed from ../shared/bench/wheels into the venv).
bench-model: build anchor-deps
	target/release/gradstep bench model --anchor $(GRADSTEP_SHARED)/bench/anchor_deepinv.py --anchor-python $(VENV)/bin/python $(ARGS)

# The PyTorch anchor's deepinv 0.5.0 (from ../shared/bench/wheels, without its optional
# dependencies) plus the few modules `import deepinv` needs on a bare venv.
.PHONY: anchor-deps
anchor-deps:
	$(VENV)/bin/pip install --quiet --no-deps $(GRADSTEP_SHARED)/bench/wheels/*.whl
	$(VENV)/bin/python -c 'import deepinv' 2>/dev/null || $(VENV)/bin/pip install --quiet --progress-bar off requests tqdm h5py

# Every benchmark, each printed as a ratio against the anchor measured in the same run.
bench: bench-model bench-data bench-prox bench-pnp bench-memory

# The GPU benchmarks (model, prox, pnp) and the anchor in one call, one table; last line
# `bench-gpu min-speedup <ratio>`. Logs in runs/bench-gpu/.
bench-gpu: build anchor-deps
	GRADSTEP_BIN=target/release/gradstep ANCHOR_PYTHON=$(VENV)/bin/python GRADSTEP_SHARED=$(GRADSTEP_SHARED) scripts/bench-gpu.sh

# Data-parallel training (issue 14): GS steps on 1 rank and on N (2 Gloo processes on the
# CPU; the visible GPUs on a GPU machine), beside PyTorch DDP on the same model and batch in
# the same call. Small widths on the CPU; full model with ARGS on a GPU machine, e.g.
# `make bench-dist DIST_ARGS="--widths 64,128,256,512 --batch 16 --patch 128"`.
# Last line: `bench-dist efficiency <ratio>`.
.PHONY: bench-dist
DIST_ARGS ?= --widths 8,16,32,64 --batch 4 --patch 64
bench-dist: build
	$(VENV)/bin/pip install --quiet --no-deps $(GRADSTEP_SHARED)/bench/wheels/*.whl
	target/release/gradstep bench dist $(DIST_ARGS) \
		--anchor $(GRADSTEP_SHARED)/bench/anchor_deepinv.py --anchor-python $(VENV)/bin/python $(ARGS)

# Training data: the scikit-image sample photographs into datasets/samples/{train,test}.
.PHONY: data bench-data
data:
	scripts/fetch-samples.sh

# Patches/s from PNG and from the decode-once cache vs the PyTorch DataLoader anchor
# (needs torchvision + Pillow in the venv: installed here, matching torch 2.11.0).
bench-data:
	$(VENV)/bin/pip install --quiet --progress-bar off torchvision==0.26.0 pillow
	$(CARGO) run --release -p gradstep-cli -- bench data \
		--anchor $(GRADSTEP_SHARED)/bench/anchor_deepinv.py --anchor-python $(VENV)/bin/python

# Training (issue 4). The paper's GS-DRUNet (CUDA when available); extra options in ARGS,
# e.g. `make train-gs ARGS="--resume --set data.roots=[\"/data/train\"]"`.
.PHONY: train-gs demo tensorboard
train-gs:
	$(CARGO) run --release -p gradstep-cli -- train --config configs/gs-drunet.json $(ARGS)

# Fetches the sample photographs, trains a tiny GS model on the CPU for a few minutes,
# denoises a held-out photograph and deblurs it with GS-PnP: everything in runs/demo/.
demo:
	CARGO="$(CARGO)" scripts/demo.sh

# TensorBoard on runs/ (installed into the venv if an old venv lacks it).
tensorboard:
	@$(VENV)/bin/python -c 'import tensorboard' 2>/dev/null || $(VENV)/bin/pip install --quiet tensorboard
	$(VENV)/bin/tensorboard --logdir runs

# Prox-DRUNet (issue 5): fine-tune a Softplus GS checkpoint with the spectral-norm penalty.
# The starting point is `init_from` in the config (a Softplus GS run, e.g.
# `make train-gs ARGS="--set name=gs-drunet-softplus --set model.activation=softplus"`);
# other options in ARGS, e.g. ARGS="--set init_from=path/to/gs-softplus.safetensors".
.PHONY: train-prox bench-prox
train-prox:
	$(CARGO) run --release -p gradstep-cli -- train --config configs/prox-drunet.json $(ARGS)

# One Prox training step (batch 16 of 128², full Softplus model): reference power iteration
# vs Lanczos, and the PyTorch anchor in the same call. Last line: `bench-prox speedup <ratio>`.
bench-prox: anchor-deps
	$(CARGO) run --release -p gradstep-cli -- bench prox \
		--anchor $(GRADSTEP_SHARED)/bench/anchor_deepinv.py --anchor-python $(VENV)/bin/python $(ARGS)

# PnP (issue 6): GS-PnP deblurring of CBSD10 (full model), batched vs one at a time vs the
# deepinv anchor one at a time, in the same call (CUDA when available). On the CPU keep it
# short: `make bench-pnp ARGS="--device cpu --tiny --count 2 --iters 5"`.
# Last line: `bench-pnp speedup <ratio>`.
.PHONY: bench-pnp
bench-pnp: anchor-deps
	$(CARGO) run --release -p gradstep-cli -- bench pnp --images $(GRADSTEP_SHARED)/data/CBSD10 \
		--anchor $(GRADSTEP_SHARED)/bench/anchor_deepinv.py --anchor-python $(VENV)/bin/python $(ARGS)

# Memory limits (issue 8): the largest GS training batch, the largest image ∇g handles at
# once (gray, colour), tiles against the whole image, and an image beyond memory through
# tiles. On the CPU the searches stop at small caps: `make bench-memory ARGS="--tiny"`.
# Last line: `bench-memory tiles-vs-whole-dpsnr <dB>`.
.PHONY: bench-memory
bench-memory:
	$(CARGO) run --release -p gradstep-cli -- bench memory $(ARGS)

# Sweeps (issue 7): a real Slurm on localhost (installs slurm-wlm + munge with apt-get when
# missing, needs root; skips with a message otherwise): a 4-shard sweep on a tiny model and
# a SIGTERM-requeue-resume of a tiny training job (~4 minutes on 2 cores). `make test` runs it
# too unless GRADSTEP_SKIP_SLURM=1.
.PHONY: test-slurm
test-slurm:
	CARGO="$(CARGO)" tests/slurm/run.sh

# The papers' experiments as recipes (docs/experiments.md): all six at CPU scale (tiny models
# trained once into runs/experiments/models/cpu/, small crops; ~30 min on 2 cores), or one
# with ONLY=<name> / `make experiment-<name>`; FULL=1 for the GPU scale (published-size
# models, the papers' image sets). Not part of `make test`.
.PHONY: experiments
experiments:
	CARGO="$(CARGO)" scripts/experiments.sh $(if $(ONLY),$(ONLY),all) $(if $(FULL),--full)

experiment-%:
	CARGO="$(CARGO)" scripts/experiments.sh $* $(if $(FULL),--full)
