"""llama.cpp on a GGUF export against transformers on the merged folder: accuracy and tokens/s on a run's test split.
Not a test (it times things, and needs `llama-cpp-python`, which PyPI ships as source: it builds llama.cpp).

    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF" \\
        nice -n 19 flock /tmp/heavy.lock pip install llama-cpp-python
    HF_HUB_OFFLINE=1 flock /tmp/heavy.lock python bench/gguf_llamacpp.py RUN [--quant q8_0,f16,q4_0] [--n 16]

Both sides answer each test conversation greedily, one at a time (what a local chat does), with the run's token budget
(`max_new_tokens` of its config, as `evaluate_run`); llama.cpp applies the chat template embedded in the GGUF
(`create_chat_completion`), transformers the tokenizer's. Accuracy is `evaluate_run`'s (`score_answers` with the task
inferred from the training answers). tokens/s = generated tokens, end-of-turn included, over the wall time of all
answers, prompt processing included. llama-cpp-python keeps the previous prompt's KV cache and re-reads only what
differs, so the shared system prompt is read once; the `from scratch` row resets the cache before each answer, as
transformers' `generate` does.
"""
import argparse, os, tempfile, time
from pathlib import Path

import torch

def answer_llamacpp(gguf: Path, convs: list[list[dict]], max_new_tokens: int, reuse_prefix: bool = True) -> dict:
    from llama_cpp import Llama
    n = os.cpu_count()
    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=n, n_threads_batch=n, verbose=False)
    # chat_format "chat_template.default" = the Jinja template read from the file, not a built-in guess
    ask = lambda c: llm.create_chat_completion(messages=c, max_tokens=max_new_tokens, temperature=0.0,
                                              repeat_penalty=1.0)
    ask(convs[0])  # warm-up, untimed, as on the transformers side
    out, gen, prompt, t0 = [], 0, 0, time.perf_counter()
    for c in convs:
        if not reuse_prefix: llm.reset()
        r = ask(c)
        out.append(r["choices"][0]["message"]["content"].strip())
        # llama-cpp-python does not count the end-of-turn token it stopped on
        gen += r["usage"]["completion_tokens"] + (r["choices"][0]["finish_reason"] == "stop")
        prompt += r["usage"]["prompt_tokens"]
    return dict(answers=out, tokens=gen, prompt_tokens=prompt, seconds=time.perf_counter() - t0,
                note=f"chat_format {llm.chat_format}")

@torch.no_grad()
def answer_transformers(folder: Path, convs: list[list[dict]], max_new_tokens: int) -> dict:
    "As `finetune_kit.model.generate_replies` with batch_size=1, counting the tokens generate returns."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    eot = tok.convert_tokens_to_ids(tok.eos_token)
    def ask(c):
        text = tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        o = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=eot, pad_token_id=tok.pad_token_id,
                           do_sample=False, temperature=None, top_p=None, top_k=None)
        return enc["input_ids"].shape[1], o[0, enc["input_ids"].shape[1]:]
    ask(convs[0])
    out, gen, prompt, t0 = [], 0, 0, time.perf_counter()
    for c in convs:
        n_prompt, new = ask(c)
        out.append(tok.decode(new, skip_special_tokens=True).strip())
        gen += len(new)
        prompt += n_prompt
    return dict(answers=out, tokens=gen, prompt_tokens=prompt, seconds=time.perf_counter() - t0,
                note=f"torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}")

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="run folder")
    p.add_argument("--quant", default="q8_0", help="GGUF weight types, comma-separated (default: q8_0)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the run config's max_new_tokens")
    p.add_argument("--n", type=int, default=None, help="first N test examples (default: all)")
    a = p.parse_args()
    import llama_cpp
    from finetune_kit.deploy import merge_and_save
    from finetune_kit.eval_report import eval_inputs
    from finetune_kit.metrics import infer_task, score_answers
    from finetune_kit.gguf_export import export_gguf
    run, cfg, examples, train_answers = eval_inputs(a.run, "test", a.n)
    task = infer_task(train_answers, getattr(cfg, "task", None) or "auto", getattr(cfg, "labels", None))
    convs = [e["messages"][:-1] for e in examples]
    refs = [e["messages"][-1]["content"] for e in examples]
    budget = a.max_new_tokens or cfg.max_new_tokens
    tmp = tempfile.TemporaryDirectory()
    d = Path(tmp.name)
    merged = merge_and_save(run.path, d/"merged")
    quants = [q.strip() for q in a.quant.split(",") if q.strip()]
    ggufs = {q: export_gguf(run.path, d/f"gguf-{q}", quant=q)/"model.gguf" for q in quants}
    torch.set_num_threads(os.cpu_count())
    print(f"{len(examples)} test examples of {run.path}, task {task.kind}, greedy, at most {budget} new tokens, "
          f"{os.cpu_count()} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"llama-cpp-python {llama_cpp.__version__}: {llama_cpp.llama_print_system_info().decode().strip()}")
    sides = [("transformers", "merged fp32", lambda: answer_transformers(merged, convs, budget))]
    for q, g in ggufs.items():
        mib = g.stat().st_size / 2**20
        sides.append(("llama.cpp", f"GGUF {q} ({mib:.0f} MiB)", lambda g=g: answer_llamacpp(g, convs, budget)))
        sides.append(("llama.cpp, from scratch", f"GGUF {q}", lambda g=g: answer_llamacpp(g, convs, budget, False)))
    rows = []
    for name, weights, fn in sides:
        r = fn()
        m = score_answers(r["answers"], refs, task)
        rows.append((name, weights, m.get("accuracy", m["exact_match"]), r))
        print(f"  {name} ({weights}): {r['note']}; prompt tokens {r['prompt_tokens']}", flush=True)
    base_rate = rows[0][3]["tokens"] / rows[0][3]["seconds"]
    print("\n| runtime | weights | accuracy | same answers as transformers | generated tokens | seconds | "
          "ms per answer | tokens/s | vs transformers |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, weights, acc, r in rows:
        same = sum(x == y for x, y in zip(r["answers"], rows[0][3]["answers"])) / len(refs)
        rate = r["tokens"] / r["seconds"]
        print(f"| {name} | {weights} | {acc:.3f} | {same:.1%} | {r['tokens']} | {r['seconds']:.1f} | "
              f"{1000 * r['seconds'] / len(refs):.0f} | {rate:.1f} | {rate / base_rate:.2f}x |")
    tmp.cleanup()

if __name__ == "__main__":
    main()
