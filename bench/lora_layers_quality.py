#!/usr/bin/env python
"""Held-out quality of adapters on the top N blocks only (`lora_layers: N`) against adapters on every block (the
default), at equal wall-clock: each run trains in the same time budget, as `finetune-kit quickstart` does, so a
faster step buys more steps. Issue 16 goal 1: a lever that trains something different is measured on a held-out task
before it may become a default.

Two sample tasks with held-out test splits: `support_tickets` (route a ticket to one of five teams: accuracy; the test
tickets come from request templates no training ticket was made from) and `ticket_titles` (write a one-line title:
ROUGE-L). For each task and each N it prints the probe's seconds per step, the steps trained, the last validation
loss of the run, and the test split's loss and main metric for the fine-tuned model, all from one process.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 HF_HUB_OFFLINE=1 \\
        python bench/lora_layers_quality.py [--layers all,15,6] [--time-budget 2m30s]
"""
import argparse, json, sys, tempfile, time
from pathlib import Path

import torch
from finetune_kit.config import FinetuneConfig
from finetune_kit.evaluate import evaluate_run
from finetune_kit.runs import read_metrics
from finetune_kit.train import train

TASKS = {"support_tickets": "accuracy", "ticket_titles": "rougeL"}

def one(data: str, layers: int | None, budget: str, runs: Path) -> dict:
    "Train `data` in `budget` with adapters on the top `layers` blocks (None: all), then evaluate its test split."
    name = f"{data}-{layers or 'all'}"
    t = time.perf_counter()
    run = train(FinetuneConfig(data=f"sample:{data}", epochs=1, time_budget=budget, lora_layers=layers,
                               runs_dir=str(runs), run_name=name, device="cpu"))
    train_s = time.perf_counter() - t
    plan = json.loads((run/"hyperparameters.json").read_text())["time_budget"]
    evals = [m["eval_loss"] for m in read_metrics(run) if "eval_loss" in m]
    r = evaluate_run(run, progress=False)
    return dict(task=data, layers=layers or "all", step_s=plan["probe"]["step_s"], steps=plan["plan"]["steps"],
                train_s=train_s, val_loss=evals[-1] if evals else float("nan"), test_loss=r.finetuned["loss"],
                metric=TASKS[data], value=r.finetuned[TASKS[data]], base_value=r.base[TASKS[data]])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="all,15,6", help="comma-separated N (all: adapters on every block)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--time-budget", default="2m30s", help="the same budget for every run (the quickstart's)")
    a = ap.parse_args()
    layers = [None if x == "all" else int(x) for x in a.layers.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, time budget {a.time_budget} a run", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for task in a.tasks.split(","):
            for n in layers:
                rows.append(one(task, n, a.time_budget, Path(d)))
                print(json.dumps(rows[-1]), flush=True)
    print("\n| task | lora_layers | probe s/step | steps trained | last val loss | test loss | test metric (base) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['task']} | {r['layers']} | {r['step_s']:.2f} | {r['steps']} | {r['val_loss']:.4f} | "
              f"{r['test_loss']:.4f} | {r['metric']} {r['value']:.3f} ({r['base_value']:.3f}) |")

if __name__ == "__main__":
    sys.exit(main())
