"""A run of the tiny model: `finetune-kit merge` makes a self-contained folder equal to base + adapter, served alike; a
changed base is refused. (What needs the real weights, test_real_model.py tests on its trained run.)"""
import json
import pytest, torch
from helpers import run_cli, tiny_models, train_tiny_run

pytestmark = pytest.mark.slow  # the whole file trains, merges and serves (the tiny model)
tiny = pytest.fixture(scope="module", autouse=True)(tiny_models)

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
    for part in ("A fine-tune of `a tiny random-weight model (a smoke run)`", "## Data", "| train | 12 |", "| lora_r | 16 |", "## Training", "## Evaluation"):
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

def test_served_merged_folder_answers_like_the_run(run, merged):
    from fastapi.testclient import TestClient
    from finetune_kit.registry import ModelRegistry, parse_sources
    from finetune_kit.server import create_app
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
