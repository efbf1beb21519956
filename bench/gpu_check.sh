#!/usr/bin/env bash
# Issue 16 goal 6 as one prepared command for a lent GPU (the device tool), after bench/gpu_wheels.sh here:
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=560)
# Three model shapes with random weights (no Hub there), the plain recipe (LoRA and full, with Liger where it installs)
# and finetune_kit (LoRA and full, padded and packed); one table per shape in $OUT. Each shape is capped in time so
# that the whole check ends inside one call; STEPS, BATCH, SHAPES, ONLY and DEVICE override the defaults.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
WHEELS=${WHEELS:-.whl}  # WHEELS=none: use what is installed
if [ -d "$WHEELS" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else export PYTHONPATH=$PWD; fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
TOK=${TOK:-.whl/smollm2-tokenizer}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
  python3 -c "import importlib.util as u; print('flash_attn', bool(u.find_spec('flash_attn')), 'liger_kernel', bool(u.find_spec('liger_kernel')))"
} 2>&1 | tee "$OUT/gpu.txt"
for shape in ${SHAPES:-smollm2-135m qwen2.5-1.5b smollm2-1.7b}; do
    timeout ${SHAPE_S:-170} python3 bench/train_throughput.py --device ${DEVICE:-cuda} --model "$TOK" --shape "$shape" \
        --steps ${STEPS:-8} --batch ${BATCH:-32} --only ${ONLY:-plain-bf16,plain-liger,lora,lora-packed,plain-full,full} \
        2>&1 | grep -v -i warn | tee "$OUT/$shape.txt"
done
