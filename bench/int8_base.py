#!/usr/bin/env python
"""A quantized frozen base for LoRA on a CPU without bf16 (issue 16 goal 1's other lever), measured and rejected.

The frozen linear layers under the LoRA adapters compute in int8 (`torch._int_mm`): weights quantized per output
channel once, the activations per row at every call (dynamic W8A8), and in the backward pass the gradient per row
as well. It runs on finetune_kit's default path (fast LoRA, loss at supervised positions only), one batch of 8
multi-turn support conversations from bench/train_throughput.py, best of three forward + backward passes, all in one
process. It prints the step time against the same path in fp32, the loss, and how far the LoRA gradients move.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 HF_HUB_OFFLINE=1 PYTHONPATH=. python bench/int8_base.py

int8 products honour ONEDNN_MAX_CPU_ISA, so under these variables they run oneDNN's AVX2 kernels, without VNNI.
"""
from __future__ import annotations
import argparse, os, sys, time, types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import chat_examples  # noqa: E402


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    "int8 values and the per-row scales of a 2-d fp32 tensor (symmetric, absmax / 127)."
    s = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
    return (x / s).round_().to(torch.int8), s


class Int8Linear(torch.autograd.Function):
    "y = x W^T with int8 products; the backward pass in int8 too unless `exact_backward` (then x's gradient in fp32)."
    @staticmethod
    def forward(ctx, x, layer):
        x2 = x.reshape(-1, x.shape[-1])
        q, s = quantize_rows(x2)
        ctx.layer = layer
        return (torch._int_mm(q, layer.w8t).float() * s * layer.wscale).view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx, g):
        layer = ctx.layer
        g2 = g.reshape(-1, g.shape[-1])
        if layer.exact_backward: gx = g2 @ layer.weight
        else:
            q, s = quantize_rows(g2 * layer.wscale)
            gx = torch._int_mm(q, layer.w8).float() * s
        return gx.view(*g.shape[:-1], -1), None


def int8_forward(self, x): return Int8Linear.apply(x, self)


def use_int8_base(model, exact_backward: bool) -> int:
    "Make the frozen layer under every PEFT LoRA Linear compute in int8; returns how many."
    from peft.tuners.lora.layer import Linear as LoraLinear
    n = 0
    for m in model.modules():
        if type(m) is LoraLinear:
            base = m.base_layer
            if base.bias is not None: raise ValueError("this sketch handles linear layers without bias only")
            w = base.weight.detach().float()
            base.wscale = w.abs().amax(1).clamp_min(1e-12) / 127
            base.w8 = (w / base.wscale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
            base.w8t, base.exact_backward = base.w8.t().contiguous(), exact_backward
            base.forward = types.MethodType(int8_forward, base)
            n += 1
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    from transformers import DataCollatorForSeq2Seq
    from finetune_kit.config import FinetuneConfig
    from finetune_kit.data import tokenize_examples
    from finetune_kit.model import load_model, setup_strategy
    from finetune_kit.speed import SupervisedHead, speed_setup, supervised_loss
    from finetune_kit.workshop import cpu_class
    print(f"CPU: {cpu_class()}, {os.cpu_count()} cores; torch kernels: {torch.backends.cpu.get_cpu_capability()}; "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}")
    model, tok = load_model(args.model, "cpu")
    data = tokenize_examples(tok, chat_examples(args.batch, seed=1), 512, verbose=False)
    model = setup_strategy(model, FinetuneConfig(strategy="lora", lora_dropout=0.0))
    speed_setup(model, "lora", "cpu", "fp32", 256)
    batch = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)(
        [{"input_ids": data[i]["input_ids"], "labels": data[i]["labels"]} for i in range(args.batch)])
    head = SupervisedHead(model)
    trained = [(n, q) for n, q in model.named_parameters() if q.requires_grad]

    def step() -> tuple[float, float, torch.Tensor]:
        model.zero_grad()
        t = time.perf_counter()
        loss = supervised_loss(model, batch, head)[0]
        loss.backward()
        return time.perf_counter() - t, loss.item(), torch.cat([q.grad.flatten() for _, q in trained])

    def measure() -> tuple[float, float, torch.Tensor]:
        runs = [step() for _ in range(4)][1:]  # the first warms up
        return min(r[0] for r in runs), runs[-1][1], runs[-1][2]

    print(f"batch: {args.batch} conversations, {int((batch['labels'] != -100).sum())} answer tokens, "
          f"{int(sum(len(data[i]['input_ids']) for i in range(args.batch)))} tokens, padded to {tuple(batch['input_ids'].shape)}\n")
    t0, l0, g0 = measure()
    print("| frozen base | s/step | vs fp32 | loss | LoRA gradient: relative error | cosine |\n|---|---:|---:|---:|---:|---:|")
    print(f"| fp32 (default) | {t0:.2f} | 1.00x | {l0:.4f} | 0 | 1 |")
    for exact, name in ((True, "int8 forward, fp32 backward"), (False, "int8 forward and backward")):
        use_int8_base(model, exact)
        t, l, g = measure()
        err, cos = ((g - g0).norm() / g0.norm()).item(), torch.nn.functional.cosine_similarity(g, g0, 0).item()
        print(f"| {name} | {t:.2f} | {t0 / t:.2f}x | {l:.4f} | {err:.3f} | {cos:.4f} |")


if __name__ == "__main__":
    main()
