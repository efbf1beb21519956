#!/usr/bin/env python
"""Training throughput: the plain recipe against finetune_kit's default (fast) path, measured in one run.

Same model, same chat examples (about 200 tokens), same number of optimizer steps (one pass over the same
examples), same learning rate and schedule. For each configuration it prints non-pad tokens/s, the ratio
to the plain recipe, MFU against the matmul peak measured in this run (bf16 where the device computes bf16
natively, else fp32), peak memory, and the validation loss on the answer tokens of held-out examples (computed the
same way, in fp32, for all).

On a CPU without native bf16 (AVX2 only, or a newer CPU told to behave as one with ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2), nothing is measured in bf16: an emulated bf16 product runs
about 100x slower than fp32 there, and no one would train that way. The plain-bf16 configuration is skipped and says so.

    PYTHONPATH=. python bench/train_throughput.py                   # CPU, SmolLM2-135M, LoRA + freeze + full
    PYTHONPATH=. python bench/train_throughput.py --steps 6 --only plain-fp32,plain-bf16,lora
    PYTHONPATH=. python bench/train_throughput.py --device cuda --model Qwen/Qwen2.5-1.5B-Instruct --batch 16
    PYTHONPATH=. python bench/train_throughput.py --device cuda --shape qwen2.5-1.5b --batch 16 --only plain-bf16,plain-full,lora,full,lora-packed

Each configuration runs in its own process, so peak memory is its own and no state leaks between them.

`--shape` builds the model from a published configuration with random weights (no download: a GPU machine without
the Hub still measures the real shapes); the tokenizer is `--model`'s. Throughput only: the validation loss of random
weights means nothing and is not computed. Configurations: `plain-fp32` / `plain-bf16` (HF Trainer + PEFT LoRA, the
recipe people write), `plain-full` (HF Trainer, every weight trained, bf16 autocast where native), `plain-liger`
(plain-bf16 with `use_liger_kernel=True`, where `liger-kernel` is installed); finetune_kit's `lora`, `freeze`, `full`,
`lora-topN` (adapters on the top N blocks), and `lora-packed` / `full-packed` (batches packed without padding whatever
the attention kernel: on a GPU without flash-attn, flex_attention, which skips the blocks between examples; `--attention`
picks one for all of finetune_kit's configurations).
"""
from __future__ import annotations
import argparse, importlib.util, json, os, random, resource, subprocess, sys, tempfile, time
from pathlib import Path

PLAIN = ("plain-fp32", "plain-bf16", "plain-full", "plain-liger")
FAST = ("lora", "freeze", "full")
PACKED = ("lora-packed", "full-packed")  # finetune_kit's path with packed batches forced on
DEFAULT = ("plain-fp32", "plain-bf16", "lora", "freeze", "full")
SHAPES = {  # published configurations (config.json of each model), built here with random weights
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                         rope_theta=100000.0, max_position_embeddings=8192, rms_norm_eps=1e-5),
    "smollm2-1.7b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=49152, tie_word_embeddings=True,
                         rope_theta=130000.0, max_position_embeddings=8192, rms_norm_eps=1e-5),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         rope_theta=1000000.0, max_position_embeddings=32768, rms_norm_eps=1e-6),
}
TOP = ("lora-top8", "lora-top15")  # LoRA on the top N blocks only (`lora_layers: N`, any N): the backward pass stops below
NOTES = ["I'm routing your ticket to the {t} team; they will reply within one business day.",
         "Thanks for the details. This belongs with {t}, and I've sent it there with your message attached.",
         "{t}. A specialist will follow up by email shortly."]


def chat_examples(n: int, seed: int) -> list[dict]:
    "Multi-turn support conversations of about 200 tokens (2-4 tickets, each answered with a routing note)."
    from finetune_kit.sample_data import SYSTEM_PROMPT, make_support_tickets
    tickets, rng = make_support_tickets(800, seed=seed), random.Random(seed)
    out = []
    for i in range(n):
        msgs = [{"role": "system", "content": SYSTEM_PROMPT}]
        for k in range(rng.randint(2, 4)):
            t = tickets[(i * 4 + k) % len(tickets)]["messages"]
            msgs += [t[1], {"role": "assistant", "content": rng.choice(NOTES).format(t=t[2]["content"])}]
        out.append({"messages": msgs})
    return out


def matmul_peak(device: str, dtype_name: str, n: int = 2048, reps: int = 10) -> float:
    "Measured FLOP/s of a large square matrix product in `dtype` on `device` (best of three timings)."
    import torch
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b; sync()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps): a @ b
        sync(); best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best


def _is_top(kind: str) -> bool: return kind.startswith("lora-top") and kind.removeprefix("lora-top").isdigit()
def _strategy(kind: str) -> str:
    if kind in ("plain-full", "full-packed"): return "full"
    return "lora" if kind in PLAIN or _is_top(kind) or kind == "lora-packed" else kind


def build_model(args):
    "(model, tokenizer): `--model` itself, or with `--shape` that configuration with random weights and `--model`'s tokenizer."
    import torch
    from finetune_kit.model import load_model, load_tokenizer
    from finetune_kit.model_sources import resolve_model
    if not args.shape: return load_model(args.model, args.device)
    from transformers import AutoConfig, AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**SHAPES[args.shape]), dtype=torch.float32)
    return model.to(args.device), load_tokenizer(str(resolve_model(args.model)))
def _top(kind: str) -> int | None: return int(kind.removeprefix("lora-top")) if _is_top(kind) else None


def fp32_trained_copy(model, kind: str, args):
    "A fresh fp32 model of the same structure holding the trained weights (so every run is scored the same way)."
    import torch
    from finetune_kit.config import FinetuneConfig
    from finetune_kit.model import load_model, setup_strategy
    trained = {n: p.detach().float().cpu() for n, p in model.named_parameters() if p.requires_grad}
    fresh, _ = load_model(args.model, "cpu")
    fresh = setup_strategy(fresh, FinetuneConfig(strategy=_strategy(kind), lora_dropout=0.0, lora_layers=_top(kind)))
    missing = set(trained) - {n for n, _ in fresh.named_parameters()}
    if missing: raise RuntimeError(f"cannot map trained weights: {sorted(missing)[:3]}")
    with torch.no_grad():
        for n, p in fresh.named_parameters():
            if n in trained: p.copy_(trained[n])
    return fresh.eval()


def child(kind: str, args) -> dict:
    "Train one configuration and return its measurements (runs in its own process)."
    import torch
    from transformers import set_seed
    from finetune_kit.config import AUTO_LEARNING_RATE, FinetuneConfig, resolve_auto
    from finetune_kit.data import tokenize_examples
    from finetune_kit.evaluate import answer_loss
    from finetune_kit.model import count_parameters, cpu_has_bf16, pick_precision, setup_strategy
    from finetune_kit.trainer import make_trainer
    set_seed(0)
    train_rows = chat_examples(args.steps * args.batch, seed=1)
    val_rows = chat_examples(args.val, seed=2)
    strategy = _strategy(kind)
    lr = AUTO_LEARNING_RATE[strategy]
    model, tok = build_model(args)
    out_dir = tempfile.mkdtemp(prefix=f"bench-{kind}-")
    bf16 = torch.cuda.is_bf16_supported() if args.device == "cuda" else cpu_has_bf16()
    if kind in PLAIN:  # the recipe people write by hand
        from datasets import Dataset
        from peft import LoraConfig, get_peft_model
        from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
        texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in train_rows]
        ds = Dataset.from_dict({"text": texts}).map(lambda b: tok(b["text"], truncation=True, max_length=512), batched=True, remove_columns=["text"])
        if kind != "plain-full":
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
        half = kind in ("plain-bf16", "plain-liger") or (kind == "plain-full" and bf16)
        targs = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=lr,
                                  lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=max(1, args.steps // 4), save_strategy="no",
                                  report_to=[], bf16=half, use_cpu=args.device == "cpu", seed=0, disable_tqdm=True,
                                  use_liger_kernel=kind == "plain-liger")
        trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
        tokens = sum(len(x) for x in ds["input_ids"])
        precision = "bf16" if half else "fp32"
    else:
        precision = pick_precision("auto", args.device)
        cfg = FinetuneConfig(model=args.model, strategy=strategy, batch_size=args.batch, max_steps=args.steps, epochs=1,
                             learning_rate=lr, logging_steps=max(1, args.steps // 4), eval_steps=10**9, save_steps=10**9, seed=0,
                             lora_layers=_top(kind))
        rcfg, _ = resolve_auto(cfg, len(train_rows))
        data = {"train": tokenize_examples(tok, train_rows, 512, verbose=False)}
        model = setup_strategy(model, rcfg)
        trainer, plan = make_trainer(rcfg, model, tok, data, Path(out_dir), args.device, precision,
                                     packed=True if kind in PACKED else None)
        attention = args.attention
        if not attention and kind in PACKED and args.device == "cuda" and plan["attention"] != "flash_attention_2":
            attention = "flex_attention"  # without flash-attn, the kernel that skips the blocks between packed examples
        if attention:
            (model.get_base_model() if hasattr(model, "get_base_model") else model).set_attn_implementation(attention)
        trainer.args.disable_tqdm = True
        tokens = sum(len(x) for x in data["train"]["input_ids"])
    trainable, total = count_parameters(model)
    if args.device == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    from transformers import TrainerCallback
    class StepEnds(TrainerCallback):
        def __init__(self): self.times = []
        def on_step_end(self, *a, **kw):
            if args.device == "cuda": torch.cuda.synchronize()
            self.times.append(time.perf_counter())
    ends = StepEnds()
    trainer.add_callback(ends)
    t = time.perf_counter()
    result = trainer.train()
    if args.device == "cuda": torch.cuda.synchronize()
    seconds, timed = time.perf_counter() - t, tokens
    if args.device == "cuda" and len(ends.times) >= 4:  # a GPU's first step compiles and tunes kernels: time the rest
        timed, seconds = tokens * (len(ends.times) - 1) / len(ends.times), ends.times[-1] - ends.times[0]
    peak = (torch.cuda.max_memory_allocated() if args.device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    val = answer_loss(fp32_trained_copy(model, kind, args), tok, val_rows) if not args.shape else {}
    cfg_m = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    return dict(kind=kind, precision=precision, packed=bool(plan and plan["packed"]) if kind not in PLAIN else False,
                attention=cfg_m._attn_implementation, tokens=tokens, seconds=seconds, tokens_per_s=timed / seconds, train_loss=result.training_loss,
                val_loss=val["loss"] if "loss" in val else val.get("nll", float("nan")), val_token_accuracy=val.get("token_accuracy"),
                peak_gib=peak, params=total, trainable=trainable, layers=cfg_m.num_hidden_layers, hidden=cfg_m.hidden_size,
                mean_len=tokens / len(train_rows), examples=len(train_rows))


def mfu(r: dict, peak: float) -> float:
    "Model FLOPs utilisation: (4N, or 6N when every weight is trained, + 12·L·d·T attention) × tokens/s ÷ peak."
    # LoRA's backward computes input gradients (2N) through the blocks that hold adapters, and nothing below them
    top = _top(r["kind"])
    dense = (6 if _strategy(r["kind"]) == "full" else 2 + 2 * top / r["layers"] if top else 4) * r["params"]
    return (dense + 12 * r["layers"] * r["hidden"] * r["mean_len"]) * r["tokens_per_s"] / peak


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per configuration (one pass over steps x batch examples)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--val", type=int, default=48, help="held-out examples for the validation loss")
    p.add_argument("--only", default=",".join(DEFAULT), help="comma-separated configurations to run (also: "
                   f"{', '.join(k for k in PLAIN + PACKED + TOP if k not in DEFAULT)}, lora-topN for any N)")
    p.add_argument("--shape", choices=sorted(SHAPES), help="build this model shape with random weights (throughput only)")
    p.add_argument("--attention", help="attention implementation for finetune_kit's configurations (default: the fast path's choice)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)), flush=True); return
    kinds = args.only.split(",")
    if bad := [k for k in kinds if k not in PLAIN + FAST + PACKED and not _is_top(k)]:
        sys.exit(f"unknown configuration(s) {bad}; choose from {PLAIN + FAST + PACKED + TOP}")
    import torch
    from finetune_kit.model import cpu_has_bf16
    from finetune_kit.workshop import cpu_class
    bf16 = torch.cuda.is_bf16_supported() if args.device == "cuda" else cpu_has_bf16()
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU: {cpu_class()}, {os.cpu_count()} cores"
    if not bf16 and "plain-bf16" in kinds:
        kinds.remove("plain-bf16")
        print("plain-bf16 skipped: no native bf16 on this device (an emulated bf16 product is ~100x slower than fp32)")
    if "plain-liger" in kinds and (args.device != "cuda" or importlib.util.find_spec("liger_kernel") is None):
        kinds.remove("plain-liger")
        print("plain-liger skipped: Liger kernels need CUDA and the liger-kernel package")
    fp32_peak = matmul_peak(args.device, "float32")
    peak = matmul_peak(args.device, "bfloat16") if bf16 else fp32_peak
    peaks = (f"bf16 matmul peak measured {peak / 1e9:.0f} GFLOP/s, " if bf16 else "") + f"fp32 {fp32_peak / 1e9:.0f} GFLOP/s"
    print(f"{args.shape + ' (random weights)' if args.shape else args.model} on {args.device} ({where}; {torch.get_num_threads()} threads): {peaks}; "
          f"{args.steps} steps x batch {args.batch}\n", flush=True)
    rows = []
    for k in kinds:
        cmd = [sys.executable, __file__, "--child", k, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode or not line:
            print(f"{k}: failed\n{proc.stderr[-3000:]}"); continue
        rows.append(json.loads(line[7:]))
        r = rows[-1]
        print(f"  {k:11s} {r['tokens_per_s']:7.0f} tok/s  {r['seconds']:6.1f} s  val loss {r['val_loss']:.4f}  "
              f"attention {r['attention']}{', packed' if r['packed'] else ''}", flush=True)
    base = {r["kind"]: r["tokens_per_s"] for r in rows if r["kind"] in PLAIN}
    print(f"\n| configuration | precision | attention | tokens/s | vs plain fp32 | vs plain bf16 | vs plain-full | MFU ({'bf16' if bf16 else 'fp32'} peak) "
          "| peak memory | train loss | val loss (answers) | val token acc |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    fmt = lambda v, f: "-" if v is None or v != v else format(v, f)  # missing or NaN (random weights: not computed)
    for r in rows:
        name = r["kind"] if r["kind"] in PLAIN else f"finetune_kit {r['kind']}"
        vs = lambda b: f"{r['tokens_per_s'] / base[b]:.2f}x" if b in base else "-"
        print(f"| {name} | {r['precision']} | {r['attention']}{', packed' if r['packed'] else ''} | {r['tokens_per_s']:.0f} | "
              f"{vs('plain-fp32')} | {vs('plain-bf16')} | {vs('plain-full')} | {100 * mfu(r, peak):.1f}% | {r['peak_gib']:.2f} GiB | {r['train_loss']:.3f} | "
              f"{fmt(r['val_loss'], '.4f')} | {fmt(r['val_token_accuracy'], '.3f')} |")
    if rows: print(f"\n{rows[0]['examples']} examples, {rows[0]['mean_len']:.0f} tokens on average; tokens/s counts non-pad tokens of one pass"
                   + (" after the first step (its share of the tokens)." if args.device == "cuda" else "."))


if __name__ == "__main__":
    main()
