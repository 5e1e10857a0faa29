#!/usr/bin/env bash
# Fill .gpu_bundle/ (git-ignored, about 6 MB) with what scripts/gpu_check.sh needs on a GPU machine that has no
# network and lacks some of lit-ft's dependencies. Run it here, on a machine with lit-ft installed and a package
# registry in reach, before the GPU call; carry .gpu_bundle/ with the repository (docs/scale.md, "Checking a GPU
# machine").
#   wheels/  pure-Python wheels of what the GPU image lacks (Hydra, OmegaConf, ANTLR; TRL and datasets for the
#            benchmark), pinned to the versions lit-ft is tested with; gpu_check.sh installs only those whose
#            package is missing there.
#   cache/smollm2-135m-instruct/  the embedded model's tokenizer files alone (3.5 MB, not the 98 MB GGUF): with
#            LIT_FT_CACHE pointing at cache/, the alias's tokenizer loads from there (model=tiny needs nothing else).
#
#   bash scripts/gpu_bundle.sh [FOLDER]        # FOLDER defaults to .gpu_bundle
#   GPU_PYTHON_VERSION=3.12 (default): the GPU machine's Python, for the wheels' tags.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUNDLE=${1:-.gpu_bundle}
PYTHON=${PYTHON:-python3}
PY_VERSION=${GPU_PYTHON_VERSION:-3.12}

# The GPU image has torch, lightning, transformers, peft, accelerate, pyarrow, pandas, matplotlib, rich and pytest;
# these it lacks. datasets 5.2 needs huggingface-hub >= 1.31 (the image has 1.33), TRL 1.16 transformers >= 4.56.
WHEELS=(hydra-core==1.3.8 omegaconf==2.3.1 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 trl==1.16.0)
# OmegaConf 2.3 pins ANTLR 4.9, published as a source archive only: its pure-Python wheel is built here.
SOURCE_ONLY=(antlr4-python3-runtime==4.9.3)

rm -rf "$BUNDLE/wheels"
mkdir -p "$BUNDLE/wheels"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d "$BUNDLE/wheels" "${WHEELS[@]}"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$BUNDLE/wheels" "${SOURCE_ONLY[@]}"

"$PYTHON" - "$BUNDLE/cache" <<'EOF'
import sys
from pathlib import Path

from lit_ft.models import load_tokenizer

alias = "smollm2-135m-instruct"
target = Path(sys.argv[1]) / alias
load_tokenizer(alias).save_pretrained(target)  # what lit_ft.models.loading.resolve_tokenizer_path finds
print(f"tokenizer of {alias} -> {target}")
EOF
ls -1 "$BUNDLE/wheels"
du -sh "$BUNDLE"
