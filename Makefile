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

.PHONY: build test
build:
	$(CARGO) build --release

test:
	$(CARGO) test --release --workspace
