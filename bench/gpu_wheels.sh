#!/usr/bin/env bash
# What bench/gpu_check.sh needs on a GPU machine without network (the device tool's H100/H200 image has torch,
# transformers, peft and accelerate, not the rest of finetune_kit's imports): wheels for its Python 3.12, the
# Liger kernels, and the default model's tokenizer (no weights: --shape builds random ones). Run here, in the repo root.
set -euo pipefail
ex=$(git rev-parse --git-path info/exclude); mkdir -p "$(dirname "$ex")"; grep -qx '/.whl/' "$ex" 2>/dev/null || echo '/.whl/' >> "$ex"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6 fastcore==2.2.41 nltk==3.10.4 \
    pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 liger-kernel==0.8.5
python3 -m pip wheel -q --no-deps rouge_score==0.1.2 -w .whl  # published as source only
python3 - <<'PY'
import pathlib, shutil
from finetune_kit.model_sources import resolve_model
src, dst = resolve_model("smollm2-135m"), pathlib.Path(".whl/smollm2-tokenizer")
dst.mkdir(exist_ok=True)
for f in src.iterdir():
    if f.is_file() and f.suffix not in (".safetensors", ".bin", ".gguf"): shutil.copy(f, dst/f.name)
PY
du -sh .whl
