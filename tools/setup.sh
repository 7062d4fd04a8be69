#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Debian packages (Bazel, WordNet),
# a virtualenv in .venv with the pinned requirements. Re-running installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(bazel-bootstrap bazel-rules-java wordnet-base fonts-wqy-microhei)  # the font: CJK labels in bin/polysemy plots
PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP="$VENV/.requirements.sha256"

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned Python packages"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  echo "$want" > "$STAMP"
fi

# elmo_tf itself, in editable mode: .venv's site-packages gets a finder that
# maps `elmo_tf` (and `elmo_tf_bin`, the programs of bin/; see pyproject.toml)
# to this working tree, and .venv/bin gets the `elmo-tf` command. No copy of
# the code: edits are live. Redone only when pyproject.toml (or the setuptools
# pin) changes, or when the install is gone. --no-build-isolation and
# --no-deps: nothing is fetched but the setuptools pin, if .venv lacks it.
# setuptools is pinned, not just >= 77 as pyproject.toml's [build-system]
# asks: tensorflow-hub 0.16.1 imports pkg_resources, which setuptools 81
# removed and 80.9 warns about on every import.
SETUPTOOLS="setuptools==80.8.0"
EDITABLE_STAMP="$VENV/.editable.sha256"
want=$(cat pyproject.toml <(echo "$SETUPTOOLS") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$EDITABLE_STAMP" 2>/dev/null)" != "$want" ] ||
   ! compgen -G "$VENV/lib/python3*/site-packages/__editable__.elmo_tf-*.pth" >/dev/null; then
  echo "setup: installing elmo_tf in editable mode"
  "$VENV/bin/python" -m pip install -q "$SETUPTOOLS"
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$EDITABLE_STAMP"
fi

# The custom ops (elmo_tf/ops/*_kernel.cc: the fused LSTMP recurrence, the
# character CNN's window max), compiled once for this machine's CPU and
# TensorFlow into ~/.cache/elmo_tf/ops, so that training and tests find them
# ready (elmo_tf compiles them on first use otherwise). A failure only costs
# speed: training falls back to TensorFlow's ops.
# Skipped (no TensorFlow start-up) when these sources, these pins and this
# CPU were built for already and both libraries are in the cache.
KERNEL_STAMP="$VENV/.ops_kernels.sha256"
OPS_CACHE=${ELMO_TF_OPS_CACHE:-$HOME/.cache/elmo_tf/ops}
want=$(cat elmo_tf/ops/*_kernel.cc elmo_tf/ops/kernel_library.py requirements.txt \
         <(grep -m1 "^model name" /proc/cpuinfo) <(grep -m1 "^flags" /proc/cpuinfo) |
       sha256sum | cut -d' ' -f1)
if [ "$(cat "$KERNEL_STAMP" 2>/dev/null)" != "$want" ] ||
   ! compgen -G "$OPS_CACHE/lstmp_kernel-*.so" >/dev/null ||
   ! compgen -G "$OPS_CACHE/window_max_kernel-*.so" >/dev/null ||
   ! compgen -G "$OPS_CACHE/highway_kernel-*.so" >/dev/null ||
   ! compgen -G "$OPS_CACHE/adagrad_kernel-*.so" >/dev/null; then
  echo "setup: building the custom ops (fused LSTMP, window max, highway gate, fused Adagrad)"
  if TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" - 2>/dev/null <<'PY'
import concurrent.futures
import os
import sys
from elmo_tf.ops import fused_adagrad, fused_lstmp, highway_gate, window_max
# One compiler per core: the LSTMP kernel takes about as long as the other
# three together (~30 s each way on 2 cores).
modules = (fused_lstmp, window_max, highway_gate, fused_adagrad)
with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    loaded = list(pool.map(lambda module: module.load(), modules))
failed = False
for module, library in zip(modules, loaded):
    if library is None:
        print("setup: a custom op did not build (training uses TensorFlow's "
              "ops instead):", module.failure())
        failed = True
sys.exit(1 if failed else 0)
PY
  then
    echo "$want" > "$KERNEL_STAMP"
  fi
fi
