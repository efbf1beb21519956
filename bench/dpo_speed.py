#!/usr/bin/env python
"""A DPO step, plain against finetune_kit's fast path, on the same batch in one process.

Plain: the policy and the reference (the adapter switched off) each run the whole model with logits at every
position, as TRL does without a precomputed reference. Fast (what `train_preference` runs): the SFT stage's fast path
(fast LoRA, bf16 weights where bf16 is native, eager attention for short sequences), the output layer at the answer
positions only, and with adapters on the top blocks only (`lora_layers`), the blocks below them run once, in the
reference pass. It prints the loss of both (they must agree) and the best of three forward + backward passes.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 HF_HUB_OFFLINE=1 PYTHONPATH=. python bench/dpo_speed.py
"""
from __future__ import annotations
import argparse, os, time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--pairs", type=int, default=8, help="pairs in the batch (the preference lesson's batch size)")
    p.add_argument("--lora-layers", default="6,all", help="comma-separated: adapters on the top N blocks, or all")
    args = p.parse_args()
    if bad := [x for x in args.lora_layers.split(",") if x != "all" and not (x.isdigit() and int(x) > 0)]:
        p.error(f"--lora-layers: {bad} is not a number of blocks or 'all'")
    from finetune_kit.config import FinetuneConfig
    from finetune_kit.model import load_model, pick_precision, setup_strategy
    from finetune_kit.preference import (PairCollator, answer_logps, dpo_loss, load_pairs, preference_loss,
                                         reference_logps, tokenize_pairs)
    from finetune_kit.speed import SupervisedHead, speed_setup
    from finetune_kit.workshop import cpu_class
    precision = pick_precision("auto", "cpu")
    print(f"CPU: {cpu_class()}, {os.cpu_count()} cores; torch kernels: {torch.backends.cpu.get_cpu_capability()}; "
          f"fast path precision {precision}")
    print("| lora_layers | path | s/step | vs plain | loss |\n|---|---|---:|---:|---:|")
    for layers in args.lora_layers.split(","):
        n = None if layers == "all" else int(layers)
        results = {}
        for fast in (False, True):
            torch.manual_seed(0)
            model, tok = load_model(args.model, "cpu")
            model = setup_strategy(model, FinetuneConfig(lora_layers=n, lora_dropout=0.0))
            with torch.no_grad():  # a moved policy, as after some training
                for name, q in model.named_parameters():
                    if "lora_B" in name: q.normal_(0, 0.02)
            data = tokenize_pairs(tok, load_pairs("sample:ticket_preferences")[:args.pairs], verbose=False)
            batch = PairCollator(tok.pad_token_id)([data[i] for i in range(len(data))])
            head = None
            if fast:
                speed_setup(model, "lora", "cpu", precision, batch["input_ids"].shape[1])
                head = SupervisedHead(model)
            model.train()

            def step() -> tuple[float, float]:
                model.zero_grad()
                t = time.perf_counter()
                if fast: loss = preference_loss(model, batch, 0.1, head)[0]
                else:
                    ref, pol = reference_logps(model, batch), answer_logps(model, batch)
                    k = len(pol) // 2
                    loss = dpo_loss(pol[:k], pol[k:], ref[:k], ref[k:], 0.1)[0]
                loss.backward()
                return time.perf_counter() - t, loss.item()

            runs = [step() for _ in range(4)][1:]  # the first warms up
            results[fast] = (min(r[0] for r in runs), runs[-1][1])
        for fast in (False, True):
            s, loss = results[fast]
            print(f"| {layers} | {'fast' if fast else 'plain'} | {s:.2f} | {results[False][0] / s:.2f}x | {loss:.5f} |")
    print(f"\n{args.pairs} pairs of the bundled ticket preferences ({2 * args.pairs} sequences, "
          f"{batch['input_ids'].shape[1]} tokens padded), LoRA r 16 on the given blocks.")


if __name__ == "__main__":
    main()
