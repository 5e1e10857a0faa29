#!/usr/bin/env bash
# Validate every GPU path of lit-ft on a machine with one CUDA GPU (about 5 minutes) and write one report:
# $OUT/gpu_report.md when OUT is set, else logs/gpu_check/gpu_report.md, with the steps' whole output in
# gpu_check.log beside it. Each step ends passed, failed: <why> or skipped: <why> (a missing GPU, package or extra
# is a skip). Exit status 1 when a step failed. What it runs and how: scripts/gpu_check.py, docs/scale.md.
#
#   bash scripts/gpu_bundle.sh    # first, on a machine with a network: .gpu_bundle/ (wheels, tokenizer) to carry
#   bash scripts/gpu_check.sh     # then on the GPU machine
#
# PYTHON (default python3: the one with torch), GPU_CHECK_BUNDLE (default .gpu_bundle), GPU_CHECK_BUDGET_S
# (default 480: no step starts or runs past it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
