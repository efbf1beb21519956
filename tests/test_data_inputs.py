"Bad inputs of every kind give located errors, never a traceback; planted duplicates are found and never split."
import json, random, subprocess, sys
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from finetune_kit.dedup import check_leakage, find_duplicates
from finetune_kit.data import load_examples, prepare_data
from finetune_kit.splits import split_examples
from finetune_kit.formats import DataError
from finetune_kit.sample_data import make_ticket, TEAMS
from helpers import TINY, run_cli

GOOD = {"messages": [{"role": "system", "content": "Route it."}, {"role": "user", "content": "My order is late"},
                     {"role": "assistant", "content": "shipping", "weight": 1}]}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

def load_or_error(path, **kw):
    "The examples, or the DataError: anything else (a traceback) fails the test."
    try: return load_examples(path, verbose=False, **kw)
    except DataError as e:
        assert e.problems, "a DataError must carry its problems"
        for p in e.problems: assert p.line >= 0 and p.field and p.reason and p.file
        return e

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)

def paths(obj, at=()):
    "Every position in a nested JSON value."
    yield at
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items: yield from paths(v, at + (k,))

def replace(obj, at, new):
    if not at: return new
    obj = json.loads(json.dumps(obj))
    parent = obj
    for k in at[:-1]: parent = parent[k]
    parent[at[-1]] = new
    return obj

@SETTINGS
@given(data=st.data())
def test_wrong_types_at_every_level_are_located(tmp_path, data):
    at = data.draw(st.sampled_from(list(paths(GOOD))))
    bad = replace(GOOD, at, data.draw(json_values))
    f = tmp_path/"x.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps(bad) + "\n")
    r = load_or_error(f)
    if isinstance(r, DataError): assert {p.line for p in r.problems if p.severity == "error"} == {2}, str(r)
    lenient = load_or_error(f, strict=False)
    assert isinstance(lenient, list) and lenient[0]["messages"][1]["content"] == "My order is late"

@SETTINGS
@given(lines=st.lists(st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode()), min_size=1, max_size=6))
def test_arbitrary_lines_never_traceback(tmp_path, lines):
    f = tmp_path/"x.jsonl"
    f.write_bytes(b"\n".join(l.replace(b"\n", b" ") for l in lines))
    load_or_error(f); load_or_error(f, strict=False)

@SETTINGS
@given(cut=st.integers(1, 400))
def test_truncated_file_points_at_the_last_line(tmp_path, cut):
    text = (json.dumps(GOOD) + "\n") * 3
    f = tmp_path/"x.jsonl"
    f.write_bytes(text.encode()[:len(text) - cut])
    r = load_or_error(f)
    if isinstance(r, DataError):
        last = f.read_bytes().count(b"\n") + 1
        assert any(p.line == last and "invalid JSON" in p.reason for p in r.problems), str(r)

@pytest.mark.parametrize("enc", ["latin-1", "utf-16", "cp1252"])
def test_mixed_encodings_are_located(tmp_path, enc):
    odd = json.dumps({"messages": [{"role": "user", "content": "café crème"}, {"role": "assistant", "content": "billing"}]}, ensure_ascii=False)
    f = tmp_path/"x.jsonl"
    f.write_bytes(json.dumps(GOOD).encode() + b"\n" + odd.encode(enc) + b"\n" + json.dumps(GOOD).encode() + b"\n")
    e = load_or_error(f)
    assert isinstance(e, DataError) and any(p.line == 2 for p in e.problems), str(e)
    assert "invalid UTF-8" in str(e) or "invalid JSON" in str(e)
    assert len(load_examples(f, strict=False, verbose=False)) == 2

def test_huge_line_is_located_and_skipped(tmp_path):
    f = tmp_path/"x.jsonl"
    with open(f, "w") as out:
        out.write(json.dumps(GOOD) + "\n")
        out.write('{"messages": [{"role": "user", "content": "' + "x" * (9 * 2**20) + '"}]}\n')
        out.write(json.dumps(GOOD) + "\n")
    e = load_or_error(f)
    assert isinstance(e, DataError) and [(p.line, p.kind) for p in e.problems] == [(2, "over-long line")]
    assert len(load_examples(f, strict=False, verbose=False)) == 2

def test_report_groups_counts_and_locations(tmp_path):
    f = tmp_path/"x.jsonl"
    f.write_text("".join("oops\n" if i % 2 else json.dumps(GOOD) + "\n" for i in range(100)))
    e = load_or_error(f)
    msg = str(e)
    assert "50 x error: invalid JSON" in msg and "first 5 of 50" in msg and msg.count(":2: (line): invalid JSON") == 1

def test_offline_hub_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="Hub unreachable"): load_examples("hub:someone/some-data")

def planted(n=300, seed=0):
    "Distinct tickets plus planted exact copies (different case/space) and near copies (one word changed)."
    rng = random.Random(seed)
    base, seen = [], set()
    while len(base) < n:
        e = make_ticket(rng, rng.choice(TEAMS))
        e["messages"][1]["content"] += f" Ticket {len(base)} from customer {rng.randint(0, 10**9)} about a long story."
        base.append(e)
    exact = [json.loads(json.dumps(base[i]).replace("Ticket", "TICKET  ")) for i in range(0, 30, 3)]
    near = [json.loads(json.dumps(base[i]).replace("long story", "long tale")) for i in range(1, 30, 3)]
    return base + exact + near, [(i, n + k) for k, i in enumerate(range(0, 30, 3))], [(i, n + 10 + k) for k, i in enumerate(range(1, 30, 3))]

def test_planted_duplicates_are_found():
    rows, exact, near = planted()
    d = find_duplicates(rows, threshold=0.7)
    for a, b in exact + near: assert d.group[a] == d.group[b], (a, b)
    assert d.n_exact >= 10 and d.n_exact + d.n_near >= 20
    assert all(i not in d.keep for _, i in exact + near)

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), val=st.floats(0.05, 0.3), test=st.floats(0.05, 0.3))
def test_no_cluster_is_split(seed, val, test):
    rows, exact, near = planted(120, seed % 7)
    s = split_examples(rows, val, test, seed=seed, threshold=0.7)
    where = {id(e): k for k, v in s.items() for e in v}
    assert sorted(map(id, rows)) == sorted(where)  # nothing lost or repeated
    for a, b in exact + near: assert where[id(rows[a])] == where[id(rows[b])]
    assert check_leakage(s["train"], s["test"], threshold=0.7).leaked == set()

def test_prepare_streams_and_never_overwrites(tmp_path):
    src, out = tmp_path/"in.jsonl", tmp_path/"out.jsonl"
    src.write_text((json.dumps(GOOD) + "\n") * 3 + "not json\n")
    before = src.read_bytes()
    st_ = prepare_data(src, out)
    assert (st_.written, st_.exact_duplicates, st_.bad) == (1, 2, 1) and src.read_bytes() == before
    with pytest.raises(DataError, match="output exists"): prepare_data(src, out)

def run_check(path, out_dir, probe=True, strict=True, mapping=None, **kw):
    "`finetune-kit data check PATH --out OUT_DIR ...` as a user types it (keyword arguments as `data_check`'s)."
    flags = [*(["--no-probe"] if not probe else []), *(["--lenient"] if not strict else []),
             *(["--map", ",".join(f"{k}={v}" for k, v in mapping.items())] if mapping else []),
             *[a for k, v in kw.items() for a in (f"--{k.replace('_', '-')}", str(v))]]
    return run_cli("data", "check", path, "--out", out_dir, *flags, env={"HF_HUB_OFFLINE": "1", **TINY}, timeout=900)

@pytest.mark.slow
def test_data_check_exit_status_and_report(tmp_path):
    bad = tmp_path/"bad.jsonl"
    bad.write_text((json.dumps(GOOD) + "\n") * 30 + '{"messages": [}\n' + '{"messages": [{"role": "user", "content": "hi"}]}\n')
    r = run_check(str(bad), out_dir=str(tmp_path/"strict"), probe=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"{bad}:31: (line): invalid JSON" in r.stdout and f"{bad}:32: messages: no assistant turn" in r.stdout
    assert (tmp_path/"strict"/"report.md").is_file() and (tmp_path/"strict"/"tokens.png").is_file()
    r = run_check(str(bad), out_dir=str(tmp_path/"lenient"), strict=False, probe=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = run_check("hub:nobody/nothing", out_dir=str(tmp_path/"hub"), probe=False)
    assert r.returncode == 2 and "Hub unreachable" in r.stdout and "Traceback" not in r.stderr

@pytest.mark.slow
def test_data_check_with_probe_estimates_time(tmp_path):
    r = run_check("sample:support_tickets", out_dir=str(tmp_path/"r"), batch_size=2, probe_steps=1)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads((tmp_path/"r"/"report.json").read_text())
    assert summary["tokens_per_s"] > 0 and summary["est_seconds"] > 0 and summary["splits"]["test"] == 64

@pytest.mark.slow
def test_streaming_memory_is_bounded(tmp_path):
    "prepare_data on a ~60 MiB file: peak memory grows by far less than the file (it is never held whole)."
    src = tmp_path/"big.jsonl"
    rows = [json.dumps(make_ticket(random.Random(i), TEAMS[i % 5]) | {"id": i}) + "\n" for i in range(2000)]
    with open(src, "w") as f:
        while f.tell() < 60 * 2**20: f.writelines(rows)
    code = ("import resource, sys; from finetune_kit.data import prepare_data; "
            "kb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; base = kb(); "
            f"st = prepare_data({str(src)!r}, {str(tmp_path/'out.jsonl')!r}); print(st.read, st.written, (kb() - base) // 1024)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    read, written, grew_mib = map(int, r.stdout.split())
    assert read > 100_000 and written <= 2000 and grew_mib < 30, r.stdout + r.stderr[-2000:]

@pytest.mark.slow
def test_data_check_reads_a_csv_with_a_column_mapping(tmp_path):
    import pandas as pd
    rows = [make_ticket(random.Random(i), TEAMS[i % 5])["messages"] for i in range(100)]
    pd.DataFrame({"question": [m[1]["content"] for m in rows], "team": [m[2]["content"] for m in rows]}).to_csv(tmp_path/"t.csv", index=False)
    r = run_check(str(tmp_path/"t.csv"), out_dir=str(tmp_path/"r"), mapping={"prompt": "question", "completion": "team", "label": "team"},
                  probe=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "| billing | 16 |" in (tmp_path/"r"/"report.md").read_text()
    r = run_check(str(tmp_path/"t.csv"), out_dir=str(tmp_path/"r2"), probe=False)  # no mapping: located error
    assert r.returncode == 2 and "t.csv:1: (record): missing key" in r.stdout and "Traceback" not in r.stderr

@pytest.mark.parametrize("name,content", [("e.csv", b""), ("h.csv", b"prompt,completion\n"), ("q.csv", b'prompt,completion\n"unclosed,x\n'),
                                          ("l.csv", "prompt,completion\ncaf\u00e9,x\n".encode("latin-1")), ("g.parquet", b"PAR1 not parquet"),
                                          ("t.parquet", None), ("e.jsonl", b""), ("a.json", b"[1, {\"x\": 2}"), ("u.txt", b"\xff\xfe bad")])
def test_damaged_tables_and_files_are_located(tmp_path, name, content):
    f = tmp_path/name
    if content is None:  # a real Parquet file cut in half
        import pandas as pd
        pd.DataFrame({"prompt": ["a"] * 500, "completion": ["b"] * 500}).to_parquet(f)
        content = f.read_bytes()[: f.stat().st_size // 2]
    f.write_bytes(content)
    r = load_or_error(f)
    assert isinstance(r, DataError), r
    assert load_or_error(f, strict=False) is not None
