"""Speed of `evaluate_run` (base vs fine-tuned, loss, perplexity, every metric): the path before issue 16 goal 3 ("old":
generation, then a separate full forward for the loss; the fit diagnosis's train and validation losses on as many
examples as the test split) against today's ("new": one prefill per prompt for loss and generation, the LM head at
scored positions only, length-sorted batches, a shared beginning read once; the fit diagnosis on the first
`FIT_EXAMPLES` (64) training and validation examples), end to end on the same run folder, in one process. Prints both
times, the ratio and whether the results agree: answers, metrics and the test loss exactly; the train and validation
losses are of different samples by design and are printed, not compared.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 HF_HUB_OFFLINE=1 \\
        flock /tmp/heavy.lock python bench/eval_speed.py [--n 200] [--max-new-tokens 8]

The run: the default model with a LoRA adapter whose B matrices are set to small random values (so the fine-tuned
model differs from the base; no training needed for a speed test). Its splits are sample tickets made multi-turn by
`few_shot` (four solved tickets as earlier turns): about 190 tokens each, with earlier assistant turns supervised,
and a shared beginning (system prompt and the four solved tickets) that the new path reads once per batch. With
`--layout distinct`, each prompt is its own (one ticket quoting five others, as long): only the system prompt is
shared, as in most classification data.
"""
import argparse, contextlib, math, tempfile, time
from pathlib import Path

import torch
import finetune_kit.evaluate as ev
from finetune_kit.config import FinetuneConfig, save_config
from finetune_kit.data import encode_example
from finetune_kit.model import add_lora, load_model
from finetune_kit.sample_data import make_support_tickets, write_jsonl

TARGET_S = 180.0  # 200 examples of ~190 tokens on a 2-core AVX2 CPU

def make_run(d: Path, n: int, max_new_tokens: int, layout: str = "few-shot") -> tuple[Path, float]:
    "A run folder with `n` examples in each split; returns it and the mean tokens of a test example."
    cfg = FinetuneConfig(runs_dir=str(d), run_name="bench", max_new_tokens=max_new_tokens)
    run = d/"bench"
    save_config(cfg, run/"config.yaml")
    tickets = make_support_tickets(3 * n + 4 if layout == "few-shot" else 18 * n, seed=7)
    shots, rest = tickets[:4], tickets[4:]
    for k, split in enumerate(("train", "validation", "test")):
        if layout == "few-shot": rows = ev.few_shot(rest[k * n:(k + 1) * n], shots)
        else:  # as long, but each prompt its own: one ticket quoting five others, only the system prompt shared
            rows = []
            for i in range(k * n, (k + 1) * n):
                t, quoted = tickets[6 * i], [tickets[6 * i + j]["messages"][1]["content"] for j in range(1, 6)]
                user = t["messages"][1]["content"] + "\n\nEarlier messages:\n" + "\n".join(quoted)
                rows.append({"messages": [t["messages"][0], {"role": "user", "content": user}, t["messages"][2]]})
        write_jsonl(rows, run/"data"/f"{split}.jsonl")
    torch.manual_seed(0)
    model, tok = load_model(cfg.model, device="cpu")
    model = add_lora(model, cfg)
    for name, p in model.named_parameters():
        if "lora_B" in name: p.data.normal_(0, 0.02)
    model.save_pretrained(run/"adapter")
    tok.save_pretrained(run/"adapter")
    test = ev.load_examples(run/"data"/"test.jsonl", verbose=False)
    mean = sum(len(encode_example(tok, e)["input_ids"]) for e in test) / len(test)
    return run, mean

def old_evaluate_model(model, tok, examples, task, max_seq_len=512, batch_size=16, max_new_tokens=32, progress=True,
                       label="model"):
    "`evaluate_model` before issue 16 goal 3: generation, then a separate full forward for the loss."
    preds, speed = ev.generate_answers(model, tok, examples, max_new_tokens, batch_size, progress, label)
    m = ev.answer_loss_full(model, tok, examples, max_seq_len, batch_size)
    m |= ev.score_answers(preds, [e["messages"][-1]["content"] for e in examples], task)
    return m | {"examples_per_s": speed}, preds

@contextlib.contextmanager
def old_path():
    """evaluate_run as it was: the old evaluate_model, answer_loss as one full forward with logits everywhere, and as
    many training and validation examples as the test split."""
    saved = ev.evaluate_model, ev.answer_loss, ev.FIT_EXAMPLES
    ev.evaluate_model, ev.answer_loss, ev.FIT_EXAMPLES = old_evaluate_model, ev.answer_loss_full, 10**9
    try: yield
    finally: ev.evaluate_model, ev.answer_loss, ev.FIT_EXAMPLES = saved

def compare(old, new, rel: float) -> list[str]:
    "What differs between two reports: answers exactly, numbers to `rel`."
    bad = [f"answers differ at {i}" for i, (a, b) in enumerate(zip(old.samples, new.samples)) if a != b]
    for side in ("base", "finetuned"):
        for k, v in getattr(old, side).items():
            w = getattr(new, side)[k]
            if k == "examples_per_s" or isinstance(v, str): continue
            if not math.isclose(v, w, rel_tol=rel, abs_tol=1e-12): bad.append(f"{side} {k}: {v} vs {w}")
    v, w = old.fit["losses"][old.split], new.fit["losses"][new.split]  # train, validation: other samples by design
    if not math.isclose(v, w, rel_tol=rel): bad.append(f"{old.split} loss: {v} vs {w}")
    return bad

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="examples per split")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--rel", type=float, default=3e-4, help="relative tolerance on losses and perplexity")
    ap.add_argument("--layout", default="few-shot", choices=["few-shot", "distinct"],
                    help="few-shot: four solved tickets before each (a long shared beginning); distinct: one ticket "
                    "quoting four others, as long, only the system prompt shared")
    ap.add_argument("--paths", default="old,new", help="which paths to time: old, new or both")
    ap.add_argument("--make-run", metavar="DIR", help="only write the run folder to DIR/bench (for timing "
                    "`finetune-kit eval DIR/bench` with /usr/bin/time) and stop")
    a = ap.parse_args()
    if a.make_run:
        run, mean = make_run(Path(a.make_run), a.n, a.max_new_tokens, a.layout)
        return print(f"{run}: {a.n} examples a split, {mean:.0f} tokens each on average")
    paths = a.paths.split(",")
    with tempfile.TemporaryDirectory() as d:
        run, mean = make_run(Path(d), a.n, a.max_new_tokens, a.layout)
        print(f"{a.n} examples a split ({a.layout}), {mean:.0f} tokens each on average; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
        times, reports = {}, {}
        for name in paths:
            t = time.perf_counter()
            with old_path() if name == "old" else contextlib.nullcontext():
                reports[name] = ev.evaluate_run(run, progress=False)
            times[name] = time.perf_counter() - t
            print(f"{name}: {times[name]:.1f} s end to end (model load and report included)", flush=True)
        if len(paths) < 2: return
        bad = compare(reports["old"], reports["new"], a.rel)
        print(f"speed-up {times['old'] / times['new']:.2f}x; new path {times['new']:.0f} s "
              f"({'within' if times['new'] <= TARGET_S * a.n / 200 else 'over'} the {TARGET_S:.0f} s target, scaled to n)")
        print("results agree (answers equal, numbers within rel", a.rel, ")" if not bad else "results DIFFER:", *bad[:10])
        for k in ("train", "validation"):
            print(f"  fit diagnosis, {k} loss: {reports['old'].fit['losses'][k]:.4g} ({a.n} examples) -> "
                  f"{reports['new'].fit['losses'][k]:.4g} ({min(a.n, ev.FIT_EXAMPLES)})")
        for k in ("loss", "token_accuracy"):
            print(f"  {k}: base {reports['old'].base[k]:.8g} -> {reports['new'].base[k]:.8g}, fine-tuned "
                  f"{reports['old'].finetuned[k]:.8g} -> {reports['new'].finetuned[k]:.8g}")

if __name__ == "__main__":
    main()
