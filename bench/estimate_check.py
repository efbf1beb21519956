#!/usr/bin/env python
"""How close is the pre-flight estimate to the real training time? For each data set: `data_check`'s estimate (the
same probe a time budget plans with), then an un-budgeted training run of the same settings, timed by the run itself
(`train_seconds` in summary.json, which counts the steps and the evaluations during training).

    PYTHONPATH=. python bench/estimate_check.py              # the sample tickets (1 epoch) and long multi-turn chats
    PYTHONPATH=. python bench/estimate_check.py --only chats

Issue 16's target: the estimate within ±25% of the real training time.
"""
import argparse, json, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import chat_examples  # ~175-token multi-turn support conversations


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="sample,chats")
    a = ap.parse_args()
    from finetune_kit.preflight import data_check
    from finetune_kit.sample_data import write_jsonl
    from finetune_kit.train import train
    from finetune_kit.workshop import cpu_class
    d = Path(tempfile.mkdtemp(prefix="estimate-"))
    sets = {"sample": "sample:support_tickets", "chats": str(write_jsonl(chat_examples(240, seed=7), d/"chats.jsonl"))}
    print(f"CPU: {cpu_class()}")
    rows = []
    for name in a.only.split(","):
        data = sets[name]
        t = time.perf_counter()
        status = data_check(data, out_dir=d/f"check-{name}", show=False, epochs=1, batch_size=8)
        check_s = time.perf_counter() - t
        est = json.loads((d/f"check-{name}"/"report.json").read_text())
        if status: sys.exit(f"{name}: data check failed ({status})")
        run = train(data=data, runs_dir=str(d/"runs"), run_name=name, epochs=1, batch_size=8)
        real = json.loads((run/"summary.json").read_text())["train_seconds"]
        rows.append((name, est["est_seconds"], est["eval_seconds"], real, check_s))
    print("\n| data | estimate | of which evaluation | real training | estimate / real | the check took |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, e, ev, r, c in rows:
        print(f"| {name} | {e:.0f} s | {ev:.0f} s | {r:.0f} s | {e / r:.2f} | {c:.0f} s |")


if __name__ == "__main__":
    main()
