# elmo_tf build entry points. See DEVELOPERS.md.
#   make setup   Debian packages + .venv (idempotent; fast when nothing to do)
#   make train   train, then evaluate (override TRAIN_ARGS / EVAL_ARGS)
#   make test    set up, then `bazel test //...`: every test file through pytest
#   make bench   benchmarks
#   make profile op time of training steps by category (TensorFlow profiler)
#   make downstream  downstream tasks on the shipped models (bench/downstream)
#   make fusion  the token encoders compared at one training budget (bench/fusion.py)
#   make side-by-side  bilm-tf vs elmo_tf, one sitting (bench/peer; needs $(PEER)/bilm-tf)
#   make clean   caches and Bazel outputs (keeps .venv and runs/)
SHELL := /bin/bash

VENV   := .venv
PYTHON := $(VENV)/bin/python
BAZEL  ?= bazel
# Bazel's Python toolchain runs the first `python3` on PATH: make it the venv's.
VENV_PATH := PATH=$(CURDIR)/$(VENV)/bin:$$PATH

# The default run: the best PTB recipe per minute found on 2 cores
# (BENCHMARKS.md, "make train"): preset cpu_fast (256 cells, 64 projection,
# 1024 sampled negatives), stream batching as bilm-tf, Adam 0.003 with a
# cosine decay over 6,000 steps: about 7 minutes of training on the machine
# of BENCHMARKS.md, test perplexity (stream) far below the Kneser-Ney 5-gram's
# 141.2. Re-running it resumes, and stops at once when done. Training ends by
# exporting the SavedModel to $(MODEL_DIR)/saved_model.
MODEL_DIR   ?= runs/ptb_cpu_fast
TRAIN_ARGS  ?= --corpus=ptb --preset=cpu_fast --batching=stream \
               --batch_size=64 --unroll_steps=20 --max_steps=6000 \
               --optimizer=adam --learning_rate=0.003 \
               --learning_rate_schedule=cosine \
               --final_learning_rate_fraction=0.05 \
               --checkpoint_every_steps=500 --eval_every_steps=2000 \
               --model_dir=$(MODEL_DIR)
EVAL_ARGS   ?= --model_dir=$(MODEL_DIR) --split=test \
               --output_json=$(MODEL_DIR)/test_perplexity.json
BENCH_ARGS  ?=
PROFILE_ARGS ?=
DOWNSTREAM_ARGS ?=
PYTEST_ARGS ?= -q
BAZEL_TEST_ARGS ?=

.PHONY: setup train test pytest pytest-collect bazel-test bench downstream clean distclean

setup:
	bash tools/setup.sh

train: setup
	$(PYTHON) -m bin.train $(TRAIN_ARGS)
	$(PYTHON) -m bin.evaluate $(EVAL_ARGS)

# Every test file runs once, under Bazel, through pytest (tools/pytest.bzl),
# so both paths are exercised without running the suite twice: pytest first
# checks that it collects the whole suite from the repository root.
test: setup
	$(MAKE) --no-print-directory pytest-collect
	$(MAKE) --no-print-directory bazel-test

# Parts of `make test`, runnable alone (they assume `make setup`).
pytest-collect:
	set -o pipefail; $(PYTHON) -m pytest --collect-only -q tests | tail -n 1

# The whole suite directly under pytest (what developers run while editing).
pytest:
	$(PYTHON) -m pytest $(PYTEST_ARGS) tests

bazel-test:
	$(VENV_PATH) $(BAZEL) test $(BAZEL_TEST_ARGS) //...; status=$$?; \
	  $(PYTHON) tools/test_summary.py; exit $$status

bench: setup
	$(PYTHON) -m bench.run_all $(BENCH_ARGS)

# Op time of training steps by category (bench/profile_step.py; default
# cpu_small, 3 warm-up + 5 profiled steps): writes
# bench/results/profile_<preset>.json, prints the table for BENCHMARKS.md,
# and leaves the trace in runs/profile/ for TensorBoard's Profile tab.
# E.g. make profile PROFILE_ARGS="--preset=cpu_fast --precision=mixed_bfloat16"
.PHONY: profile
profile: setup
	$(PYTHON) -m bench.profile_step $(PROFILE_ARGS)

# Op time of an exported SavedModel's embedding by op type
# (bench/profile_export.py; `tokens` signature, batches of 32 PTB test
# sentences; default the shipped English model): writes
# bench/results/profile_export.json, trace in runs/profile_export/.
# E.g. make profile-export PROFILE_EXPORT_ARGS="--saved_model=DIR --intra_op_threads=1"
.PHONY: profile-export
profile-export: setup
	$(PYTHON) -m bench.profile_export $(PROFILE_EXPORT_ARGS)

# Downstream tasks on the shipped models (bench/downstream; one TensorFlow
# thread, about 25 minutes): writes bench/results/downstream.json.
downstream: setup
	$(PYTHON) -m bench.downstream.run $(DOWNSTREAM_ARGS)

# The token encoders (chars, tokens, concat, sum) trained on People's Daily
# by character at one budget (quiet-machine minutes each, turned into steps
# by a calibration), then test perplexity and the Chinese downstream rows
# layer 0 / weighted sum for each (bench/fusion.py; about 110 minutes at the
# default 20): writes bench/results/fusion.json; re-running resumes.
FUSION_ARGS ?=
.PHONY: fusion
fusion: setup
	$(PYTHON) -m bench.fusion $(FUSION_ARGS)

# Side by side with the original bilm-tf (issue 12; DEVELOPERS.md, "Side by
# side with bilm-tf"): both trainers and embedders at the same
# configurations in one sitting (about 25 minutes, estimated, on a quiet
# 2-core machine; nothing else should run meanwhile). Needs $(PEER)/bilm-tf
# (7cffee2 + the harness's patch). Writes $(PEER)/results/ (the previous
# one is moved aside unless SIDE_BY_SIDE_FRESH=0) and
# bench/results/side_by_side.json, and prints the table. Some stages only:
# make side-by-side SIDE_BY_SIDE_STAGES="d" SIDE_BY_SIDE_FRESH=0
PEER ?= /work/peer
SIDE_BY_SIDE_STAGES ?= prep smoke matmul a b c d
SIDE_BY_SIDE_FRESH ?= 1
.PHONY: side-by-side
side-by-side: setup
	PEER=$(PEER) FRESH=$(SIDE_BY_SIDE_FRESH) \
	  SIDE_BY_SIDE_COMMAND='make side-by-side PEER=$(PEER) SIDE_BY_SIDE_STAGES="$(SIDE_BY_SIDE_STAGES)"' \
	  bash bench/peer/run_side_by_side.sh "$(SIDE_BY_SIDE_STAGES)"
	$(PYTHON) -m bench.peer.summarize --results=$(PEER)/results

clean:
	if command -v $(BAZEL) >/dev/null; then $(BAZEL) clean; fi
	rm -rf .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also drops the venv and trained models.
distclean: clean
	if command -v $(BAZEL) >/dev/null; then $(BAZEL) clean --expunge; fi
	rm -rf $(VENV) runs
