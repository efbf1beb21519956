"""Speed of the data stage on 100,000 chat rows: validate + clean + exact-dedup (streaming, from a file),
and near-duplicate detection (MinHash LSH). Prints rows/s and the ratio to the targets of issue #3.

    PYTHONPATH=. python bench/data_speed.py [--rows 100000]
    PYTHONPATH=. python bench/data_speed.py --stream-mib 1024   # memory stays bounded on a 1 GiB file
"""
import argparse, json, random, resource, tempfile, time
from pathlib import Path

from finetune_kit.dedup import find_duplicates
from finetune_kit.data import load_examples, prepare_data
from finetune_kit.sample_data import TEAMS, make_ticket

TARGET_PREPARE_S, TARGET_NEAR_S = 60.0, 300.0  # for 100,000 rows on a 2-core CPU

def make_rows(n: int, seed: int = 0) -> list[dict]:
    "Ticket conversations, multi-turn one time in four, with a unique suffix so that most rows are distinct."
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        e = make_ticket(rng, rng.choice(TEAMS))
        e["messages"][1]["content"] += f" (customer {rng.randint(0, 10**9)}, ref {i})"
        if i % 4 == 0: e["messages"] += [{"role": "user", "content": "Are you sure? Please double-check."}, {"role": "assistant", "content": e["messages"][2]["content"]}]
        rows.append(e)
    for i in range(1, n, 50): rows[i] = rows[i - 1]  # 2% exact duplicates
    for i in range(2, n, 50):  # and 2% near duplicates: a copy with a word added
        rows[i] = json.loads(json.dumps(rows[i - 2]))
        rows[i]["messages"][1]["content"] += " Thanks."
    return rows

def rss_mb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def stream(mib: int):
    "Peak memory of prepare_data on a file of `mib` MiB, written without holding it in memory."
    with tempfile.TemporaryDirectory() as d:
        src, rows, n = Path(d)/"big.jsonl", make_rows(10_000), 0
        with open(src, "w") as f:
            while f.tell() < mib * 2**20:
                for r in rows: f.write(json.dumps(r | {"id": n}) + "\n"); n += 1
        base = rss_mb()
        t = time.perf_counter()
        stats = prepare_data(src, Path(d)/"clean.jsonl", dedup=False)
        secs = time.perf_counter() - t
        print(f"streaming {src.stat().st_size / 2**20:,.0f} MiB ({n:,} rows) in {secs:.0f} s = {n / secs:,.0f} rows/s: "
              f"peak memory grew by {rss_mb() - base:,.0f} MiB (from {base:,.0f} MiB); {stats.written:,} rows written")

def main(n: int):
    rows = make_rows(n)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d)/"rows.jsonl"
        with open(src, "w") as f:
            for r in rows: f.write(json.dumps(r) + "\n")
        size = src.stat().st_size / 2**20
        t = time.perf_counter()
        stats = prepare_data(src, Path(d)/"clean.jsonl")
        prep = time.perf_counter() - t
        print(f"validate+clean+exact-dedup: {n:,} rows ({size:.0f} MiB) in {prep:.1f} s = {n / prep:,.0f} rows/s; "
              f"{stats.exact_duplicates:,} exact duplicates; target {TARGET_PREPARE_S:.0f} s -> {TARGET_PREPARE_S / prep:.1f}x faster than needed")
        examples = load_examples(Path(d)/"clean.jsonl", verbose=False)
    t = time.perf_counter()
    dups = find_duplicates(examples)
    near = time.perf_counter() - t
    print(f"near-duplicates (MinHash LSH, 128 perms, threshold 0.8): {len(examples):,} rows in {near:.1f} s = {len(examples) / near:,.0f} rows/s; "
          f"{dups!r}; target {TARGET_NEAR_S:.0f} s -> {TARGET_NEAR_S / near:.1f}x faster than needed")
    print(f"peak memory of this process: {rss_mb():,.0f} MiB")

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--stream-mib", type=int, default=0, help="instead: peak memory of streaming a file this large")
    a = p.parse_args()
    stream(a.stream_mib) if a.stream_mib else main(a.rows)
