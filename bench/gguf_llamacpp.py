"""llama.cpp on a GGUF export against transformers on the merged folder: accuracy and tokens/s on a run's test split.
Not a test (it times things, and needs `llama-cpp-python`, which PyPI ships as source: it builds llama.cpp).

    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF" \\
        nice -n 19 flock /tmp/heavy.lock pip install llama-cpp-python
    HF_HUB_OFFLINE=1 flock /tmp/heavy.lock python bench/gguf_llamacpp.py RUN [--quant q8_0] [--max-new-tokens 8]

Both sides answer each test conversation greedily, one at a time (what a local chat does), with the same token budget;
llama.cpp applies the chat template embedded in the GGUF (`create_chat_completion`), transformers the tokenizer's.
"""
import argparse, json, os, tempfile, time
from pathlib import Path

import torch

def answer_llamacpp(gguf: Path, convs: list[list[dict]], max_new_tokens: int) -> tuple[list[str], int, float]:
    from llama_cpp import Llama
    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=os.cpu_count(), verbose=False)  # chat template: the file's
    out, n, t0 = [], 0, time.perf_counter()
    for c in convs:
        r = llm.create_chat_completion(messages=c, max_tokens=max_new_tokens, temperature=0.0)
        out.append(r["choices"][0]["message"]["content"])
        n += r["usage"]["completion_tokens"]
    return out, n, time.perf_counter() - t0

def answer_transformers(folder: Path, convs: list[list[dict]], max_new_tokens: int) -> tuple[list[str], int, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from finetune_kit.model import generate_replies
    model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    t0 = time.perf_counter()
    out = [generate_replies(model, tok, [c], max_new_tokens=max_new_tokens, batch_size=1)[0] for c in convs]
    seconds = time.perf_counter() - t0
    n = sum(len(tok(a, add_special_tokens=False).input_ids) + 1 for a in out)  # + the end-of-turn token
    return out, n, seconds

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="run folder")
    p.add_argument("--quant", default="q8_0", help="GGUF weight type (default: q8_0)")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--n", type=int, default=None, help="first N test examples (default: all)")
    a = p.parse_args()
    from finetune_kit.deploy import merge_and_save
    from finetune_kit.gguf_export import export_gguf
    run, d = Path(a.run), Path(tempfile.mkdtemp())
    rows = [json.loads(l) for l in (run/"data"/"test.jsonl").read_text().splitlines()][:a.n]
    convs = [r["messages"][:-1] for r in rows]
    refs = [r["messages"][-1]["content"] for r in rows]
    merged = merge_and_save(run, d/"merged")
    gguf = export_gguf(run, d/"gguf", quant=a.quant)/"model.gguf"
    torch.set_num_threads(os.cpu_count())
    print(f"{len(rows)} test examples of {run}, greedy, at most {a.max_new_tokens} new tokens, "
          f"{os.cpu_count()} threads")
    print("| runtime | weights | accuracy | tokens | seconds | tokens/s |\n|---|---|---:|---:|---:|---:|")
    answers = {}
    sides = (("transformers", "merged fp32", answer_transformers, merged),
             ("llama.cpp", f"GGUF {a.quant}", answer_llamacpp, gguf))
    for name, weights, fn, src in sides:
        out, n, s = fn(src, convs, a.max_new_tokens)
        answers[name] = out
        acc = sum(o.strip() == r for o, r in zip(out, refs)) / len(refs)
        print(f"| {name} | {weights} | {acc:.3f} | {n} | {s:.1f} | {n / s:.1f} |")
    same = sum(x.strip() == y.strip() for x, y in zip(*answers.values())) / len(refs)
    print(f"\nsame answer from both: {same:.1%}")

if __name__ == "__main__":
    main()
