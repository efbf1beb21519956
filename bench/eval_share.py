#!/usr/bin/env python
"""How much of a training run evaluation takes, before and after `eval_share` (issue 31 goal 1), on a set of long
examples: 320 news-like articles of ~190 tokens to sort into five topics, 100 validation and 100 test articles (made
here, seeded). It runs the same command a user types, twice:

    finetune-kit train --data train.jsonl --validation-data val.jsonl --test-data test.jsonl --epochs 1

once with `--eval-steps N`, N the interval the old `auto` rule chose (about 10 evaluations of the whole validation
split: what every run without a time budget did before), once with the defaults (evaluation held to a tenth of the
training, `plan_evaluation`). For each: the wall time of the command, the evaluations' seconds and share (the
Trainer's `eval_runtime`), and the fine-tuned model's accuracy on the test split. Then:

- the measured cost of a training token in validation tokens (the `TRAIN_TOKEN_COST` the plan counts with), from the
  first run: seconds per training token (evaluation excluded) over seconds per validation token;
- the noise of a subset: per-example validation losses of the first run's last two checkpoints, paired; the mean
  difference and its standard error on the whole split and on subsets the size the plan picks. On this easy task
  both are near zero; `--noise-run nbs/runs/titles` measures it on the titles run of lesson 04 instead (a free-text
  task whose last two checkpoints differ by 0.008 in validation loss).

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 HF_HUB_OFFLINE=1 \\
        python bench/eval_share.py [--epochs 1] [--keep DIR]
    HF_HUB_OFFLINE=1 python bench/eval_share.py --noise-run nbs/runs/titles
"""
import argparse, json, math, os, random, statistics, subprocess, sys, tempfile, time
from pathlib import Path

TOPICS = {
    "sports": ["The striker scored twice in the second half to seal the win.", "Fans packed the stadium for the season opener.",
               "The coach praised the defence after a narrow victory.", "The team signed a new goalkeeper before the deadline.",
               "The marathon route was changed because of the heat.", "The tennis final went to a fifth set."],
    "business": ["Shares rose after the company reported higher quarterly profits.", "The central bank kept interest rates unchanged.",
                 "The merger was approved by regulators on Tuesday.", "Retail sales fell for the third month in a row.",
                 "The start-up raised new funding from investors.", "Oil prices dropped as supply increased."],
    "science": ["Researchers observed a distant galaxy with the new telescope.", "The study found a new species of frog in the rainforest.",
                "Physicists measured the particle's mass with greater precision.", "The probe sent back images of the moon's surface.",
                "A vaccine trial showed strong results in early tests.", "Geologists mapped the fault line after the earthquake."],
    "politics": ["The parliament passed the budget after a long debate.", "The minister resigned amid criticism of the plan.",
                 "Voters went to the polls in the regional election.", "The two leaders met to discuss the trade agreement.",
                 "The opposition called for an inquiry into the contract.", "The senate delayed the vote on the new law."],
    "culture": ["The film premiered at the festival to warm reviews.", "The museum opened an exhibition of modern sculpture.",
                "The band announced a world tour for next year.", "The novelist won the prize for her third book.",
                "The theatre revived a classic play with a new cast.", "The orchestra performed a new symphony on Friday."],
}
FILLER = ["Officials said more details would be released later this week.", "The announcement came after months of speculation.",
          "Reporters gathered outside the building early in the morning.", "Many people shared their reactions online within hours.",
          "Analysts expect the situation to develop over the coming days.", "The news was first reported by a local newspaper.",
          "Several witnesses described the scene in detail to journalists.", "A spokesperson declined to comment on the matter.",
          "The event drew attention from across the country.", "Observers noted that this was not the first time it had happened.",
          "Further updates are expected as the story unfolds.", "The weather in the city was cold and grey that day."]
SYSTEM = "Classify the news article into one topic: sports, business, science, politics or culture. Answer with the topic only."

def write_split(path: Path, n: int, seed: int):
    "`n` articles, the topics in turn: two sentences of the topic among twelve of filler."
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            topic = list(TOPICS)[i % 5]
            sents = rng.sample(TOPICS[topic], 2) + rng.sample(FILLER, 11) + [rng.choice(FILLER)]
            rng.shuffle(sents)
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": " ".join(sents)},
                    {"role": "assistant", "content": topic}]
            f.write(json.dumps({"messages": msgs}) + "\n")

def run_cli(work: Path, name: str, epochs: int, extra: list[str]) -> float:
    "Wall seconds of the user's command in `work`."
    cmd = ["finetune-kit", "train", "--data", "train.jsonl", "--validation-data", "val.jsonl", "--test-data",
           "test.jsonl", "--epochs", str(epochs), "--run-name", name, *extra]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=work, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t

def facts(work: Path, name: str, wall: float) -> dict:
    from finetune_kit.evaluate import evaluate_run
    run = work/"runs"/name
    s = json.loads((run/"summary.json").read_text())
    hp = json.loads((run/"hyperparameters.json").read_text())
    evals = [json.loads(l) for l in (run/"metrics.jsonl").read_text().splitlines() if '"eval_loss"' in l]
    acc = evaluate_run(run, progress=False).finetuned["accuracy"]
    return dict(run=name, wall_s=round(wall), train_s=s["train_seconds"], evaluations=len(evals),
                val_examples=hp.get("eval_examples", {}).get("value", 100), eval_s=s.get("eval_seconds", 0.0),
                eval_share_of_run=round(s.get("eval_seconds", 0.0) / s["train_seconds"], 3), best_step=s["best_step"],
                test_accuracy=acc)

def token_cost(work: Path, name: str) -> float:
    "Seconds per training token (evaluation excluded) over seconds per validation token, from run `name`."
    from transformers import AutoTokenizer
    run = work/"runs"/name
    s = json.loads((run/"summary.json").read_text())
    tok = AutoTokenizer.from_pretrained(run/"adapter")
    n = lambda f: sum(len(tok.apply_chat_template(json.loads(l)["messages"], tokenize=True, return_dict=True)["input_ids"])
                      for l in (work/f).read_text().splitlines())
    evals = [json.loads(l) for l in (run/"metrics.jsonl").read_text().splitlines() if '"eval_loss"' in l]
    epochs = json.loads((run/"hyperparameters.json").read_text()).get("epochs", {}).get("value", 1)
    per_train = (s["train_seconds"] - s["eval_seconds"]) / (n("train.jsonl") * float(epochs))
    per_val = s["eval_seconds"] / (len(evals) * n("val.jsonl"))
    return per_train / per_val

def paired_noise(run: Path, sizes: list[int]) -> dict:
    """Per-example validation losses (the run's own validation split) of the run's last two checkpoints: the mean
    change and its standard error, paired (the same examples twice) and, for comparison, unpaired."""
    from peft import PeftModel
    from finetune_kit.data import load_examples
    from finetune_kit.model import load_model
    from finetune_kit.scoring import score_examples
    from finetune_kit.runs import run_base_model
    ckpts = sorted((run/"checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-2:]
    val = load_examples(str(run/"data"/"validation.jsonl"), verbose=False)
    losses = []
    for c in ckpts:
        base, tok = load_model(str(run_base_model(run)), "cpu")
        m = PeftModel.from_pretrained(base, c).eval()
        sc = score_examples(m, tok, val)
        losses.append([a / b for a, b in zip(sc.nll, sc.tokens)])
    d = [b - a for a, b in zip(*losses)]
    sd = statistics.stdev(d)
    out = {"checkpoints": [c.name for c in ckpts], "mean_loss": [round(statistics.mean(x), 4) for x in losses],
           "mean_change": round(statistics.mean(d), 4), "sd_change": round(sd, 4),
           "sd_loss": round(statistics.stdev(losses[0]), 4)}
    for m in [len(d), *sizes]:
        out[f"se_paired_{m}"] = round(sd / math.sqrt(m), 4)
        out[f"se_unpaired_{m}"] = round(statistics.stdev(losses[0]) * math.sqrt(2 / m), 4)
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--keep", help="work in this folder (kept) instead of a temporary one")
    ap.add_argument("--noise-run", help="only the paired noise, of this run folder's last two checkpoints")
    a = ap.parse_args()
    work = Path(a.keep or tempfile.mkdtemp(prefix="eval-share-"))
    work.mkdir(parents=True, exist_ok=True)
    for f, n, seed in (("train.jsonl", 320, 1), ("val.jsonl", 100, 2), ("test.jsonl", 100, 3)): write_split(work/f, n, seed)
    if a.noise_run:
        print(f"paired noise, last two checkpoints of {a.noise_run}:", json.dumps(paired_noise(Path(a.noise_run), [32])))
        return
    from finetune_kit.config import FinetuneConfig, resolve_auto
    old_every = resolve_auto(FinetuneConfig(epochs=a.epochs), 320)[1]["eval_steps"]["value"]  # as `auto` chose before
    isa = "AVX2 (emulated)" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else "native"
    print(f"work folder {work}; CPU {isa}; the old auto rule's interval: every {old_every} steps, whole validation split")
    rows = []
    for name, extra in (("before", ["--eval-steps", str(old_every)]), ("after", [])):
        rows.append(facts(work, name, run_cli(work, name, a.epochs, extra)))
        print(json.dumps(rows[-1]), flush=True)
    b, f = rows
    print(f"\nwall time: before {b['wall_s']} s, after {f['wall_s']} s ({b['wall_s'] / f['wall_s']:.2f}x); evaluation "
          f"{b['eval_share_of_run']:.0%} -> {f['eval_share_of_run']:.0%} of the run; test accuracy {b['test_accuracy']:.2f} -> "
          f"{f['test_accuracy']:.2f}")
    print(f"a training token costs {token_cost(work, 'before'):.2f} validation tokens (run 'before')")
    print("paired noise, last two checkpoints of 'before':", json.dumps(paired_noise(work/"runs"/"before", [f["val_examples"]])))

if __name__ == "__main__":
    main()
