"A tiny trained run: `finetune-kit merge` makes a self-contained folder equal to base + adapter; runs share their base when served."
import json, os, subprocess, sys
import pytest, torch
from helpers import run_cli, train_tiny_run

pytestmark = pytest.mark.slow  # the whole file loads the model, trains or serves

OFFLINE = {"HF_HUB_OFFLINE": "1"}

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("export"))

@pytest.fixture(scope="module")
def merged(run):
    out = run.parent.parent/"merged"
    r = run_cli("merge", run, out, env=OFFLINE, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out

def test_folder_is_self_contained(run, merged):
    files = {p.name for p in merged.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "README.md"} <= files
    assert not any(f.startswith("adapter") for f in files)
    assert (merged/"chat_template.jinja").read_text() == (run/"adapter"/"chat_template.jinja").read_text()  # the template trained on
    card = (merged/"README.md").read_text()
    for part in ("base_model: HuggingFaceTB/SmolLM2-135M-Instruct", "## Data", "| train | 12 |", "| lora_r | 16 |", "## Training", "## Evaluation"):
        assert part in card, part

def test_merged_logits_equal_base_plus_adapter(run, merged):
    from transformers import AutoModelForCausalLM
    from finetune_kit.train import load_run
    _, peft_model, tok = load_run(run, device="cpu")
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": "My card was charged twice."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad(): a, b = plain(**ids).logits, peft_model(**ids).logits
    torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)
    with torch.no_grad(), peft_model.disable_adapter(): base = peft_model(**ids).logits
    assert (a - base).abs().max() > 1e-2  # the adapter is in there: not just the base model

def test_plain_transformers_generation_stops_by_itself(merged):
    "A fresh interpreter with nothing but transformers: the reply ends at <|im_end|>, long before the token budget."
    code = ("import sys; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
            "ids = t.apply_chat_template([{'role': 'user', 'content': 'Where is my parcel?'}], add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
            "out = m.generate(**ids, max_new_tokens=300, do_sample=False)[0, ids['input_ids'].shape[1]:]\n"
            "print(len(out), t.convert_ids_to_tokens(int(out[-1])), 'finetune_kit' in sys.modules)")
    env = {**os.environ, **OFFLINE, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code, str(merged)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    n, last, imported = r.stdout.split()
    assert int(n) < 300 and last == "<|im_end|>" and imported == "False"

def test_served_merged_folder_answers_like_the_run(run, merged):
    from fastapi.testclient import TestClient
    from finetune_kit.server import ModelRegistry, create_app, parse_sources
    reg = ModelRegistry("cpu")
    for name, src in parse_sources([str(run), str(merged)]).items(): reg.add(name, src)
    assert reg.names() == ["merged", "tiny"]
    c = TestClient(create_app(reg), base_url="http://127.0.0.1")
    ask = {"messages": [{"role": "user", "content": "I was charged twice for my order."}], "temperature": 0, "max_tokens": 12}
    replies = [c.post("/v1/chat/completions", json={"model": m, **ask}).json()["choices"][0]["message"]["content"] for m in ("tiny", "merged")]
    assert replies[0] == replies[1]

def test_merge_refuses_a_full_folder(run, merged):
    r = run_cli("merge", run, merged, env=OFFLINE, timeout=300)
    assert r.returncode == 2 and "not empty" in r.stderr and "Traceback" not in r.stderr

def _fake_hub_cache(root, src):
    "A Hugging Face cache holding SmolLM2-135M-Instruct with weights other than `src`'s (as a real download would be)."
    from safetensors.torch import load_file, save_file
    snap = root/"hub"/"models--HuggingFaceTB--SmolLM2-135M-Instruct"/"snapshots"/("a" * 40)
    snap.mkdir(parents=True)
    (snap.parents[1]/"refs").mkdir()
    (snap.parents[1]/"refs"/"main").write_text("a" * 40)
    for f in src.iterdir():
        if f.name != "model.safetensors": (snap/f.name).write_bytes(f.read_bytes())
    w = load_file(src/"model.safetensors")
    save_file({k: v * 1.05 for k, v in w.items()}, snap/"model.safetensors", metadata={"format": "pt"})
    return root/"hub"

LOGITS = ("import sys, torch; from finetune_kit.train import load_run, run_base_model; from finetune_kit.model import resolve_model\n"
          "_, m, tok = load_run(sys.argv[1], device='cpu')\n"
          "ids = tok('My card was charged twice.', return_tensors='pt').input_ids\n"
          "with torch.no_grad(), m.disable_adapter(): torch.save(m(ids).logits[0, -1], sys.argv[2])\n"
          "print(resolve_model('smollm2-135m')); print(run_base_model(sys.argv[1]))")

def test_same_base_with_a_hub_cache_present(run, tmp_path):
    "Trained offline on the de-quantized GGUF; loaded later with a Hugging Face cache holding other weights: same base."
    rec = json.loads((run/"base_model.json").read_text())
    assert rec["kind"] == "gguf" and rec["quantization"] == "Q4_1", rec
    assert "de-quantized from the Q4_1 GGUF" in json.loads((run/"summary.json").read_text())["base_model"]
    hub = _fake_hub_cache(tmp_path, __import__("pathlib").Path(rec["path"]))
    outs = {}
    for name, extra in (("no cache", {}), ("hub cache", {"HF_HUB_CACHE": str(hub)})):
        r = subprocess.run([sys.executable, "-c", LOGITS, str(run), str(tmp_path/f"{len(outs)}.pt")], capture_output=True,
                           text=True, env={**os.environ, **OFFLINE, **extra}, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[name] = r.stdout.split()
    assert outs["hub cache"][0].startswith(str(hub)), "the name alone now resolves to the cache: the trap this guards"
    assert outs["hub cache"][1] == outs["no cache"][1] == rec["path"]
    assert torch.equal(torch.load(tmp_path/"0.pt"), torch.load(tmp_path/"1.pt")), "the base weights differ"

def test_changed_base_is_refused(run, tmp_path):
    "A run whose recorded base folder now holds other weights refuses to load, saying so."
    import shutil
    rec = json.loads((run/"base_model.json").read_text())
    fake = tmp_path/"base"
    shutil.copytree(rec["path"], fake)
    copy = tmp_path/"run"
    shutil.copytree(run, copy)
    (copy/"base_model.json").write_text(json.dumps({**rec, "kind": "folder", "path": str(fake)}))
    with open(fake/"model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x01\x02\x03\x04")
    r = run_cli("eval", copy, "--max-examples", "1", env=OFFLINE)
    assert r.returncode == 2 and "its weights changed" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]

def test_moved_cache_finds_the_same_base(run, tmp_path):
    "A run whose recorded conversion folder is gone (a moved cache, another user's home): the same GGUF, found again."
    import shutil
    from finetune_kit.train import run_base_model
    rec = json.loads((run/"base_model.json").read_text())
    copy = tmp_path/"run"
    shutil.copytree(run, copy)
    (copy/"base_model.json").write_text(json.dumps({**rec, "path": str(tmp_path/"gone"/"smollm2-135m")}))
    assert str(run_base_model(copy)) == rec["path"]  # this machine's conversion, its fingerprint checked

SHARED = """
import json, shutil, sys, psutil
from pathlib import Path
from finetune_kit.server import ModelRegistry, generate_reply
from finetune_kit.train import load_run
run, d = Path(sys.argv[1]), Path(sys.argv[2])
def rss():  # MiB, as `ps` shows it; and the anonymous part (not backed by a file the kernel can drop)
    m = psutil.Process().memory_info()
    return round(m.rss / 2**20), round((m.rss - m.shared) / 2**20)
ask = [{"role": "user", "content": "My card was charged twice."}]
reg, out = ModelRegistry("cpu"), {}
reg.add("base", "smollm2-135m")
with reg.use("base") as (m, t): before = generate_reply(m, t, ask, max_tokens=8, temperature=0)["text"]
out["base"] = rss()
for i in range(3):  # three fine-tunes of one base (copies of one run: three adapters all the same)
    shutil.copytree(run, d/f"ft{i}")
    reg.add(f"ft{i}", str(d/f"ft{i}"))
    with reg.use(f"ft{i}") as (m, t): generate_reply(m, t, ask, max_tokens=8, temperature=0)
    out[f"ft{i}"] = rss()
with reg.use("base") as (m, t): out["base unchanged"] = generate_reply(m, t, ask, max_tokens=8, temperature=0)["text"] == before
out["loaded"] = reg.loaded()
tok = load_run(d/"ft0", "cpu")[2]
separate = [load_run(d/f"ft{i}", "cpu")[1] for i in range(3)]  # each with its own base, as one server per model holds
for m in separate: generate_reply(m, tok, ask, max_tokens=8, temperature=0)
out["three separate loads"] = rss()
print(json.dumps(out))
"""

def test_three_fine_tunes_share_one_base(run, tmp_path):
    "Three fine-tunes of one base and the base itself, served together: one base in memory, the base's answers unchanged."
    r = subprocess.run([sys.executable, "-c", SHARED, str(run), str(tmp_path)], capture_output=True, text=True,
                       env={**os.environ, **OFFLINE}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    print({k: v for k, v in out.items() if k != "loaded"})
    assert [len(names) for names in out["loaded"].values()] == [3] and out["base unchanged"]
    adapters = out["ft2"][0] - out["base"][0]  # three adapters of 19.5 MB on the one base
    separate = out["three separate loads"][0] - out["ft2"][0]  # three bases of 540 MB (fp32) more
    assert adapters < 150 and separate > 1200, out
