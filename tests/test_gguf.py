"""A run of the tiny model exported to GGUF: transformers' GGUF reader gets back the merged model, its tokenizer and
template. (That a q8_0 file answers like the merged model, test_real_model.py checks on the real model's run.)"""
import json
import pytest, torch
from helpers import run_cli, tiny_models, train_tiny_run

pytestmark = pytest.mark.slow  # trains a run, merges and exports it (the tiny model)
tiny = pytest.fixture(scope="module", autouse=True)(tiny_models)

OFFLINE = {"HF_HUB_OFFLINE": "1"}
F16_ATOL = 0.1  # largest logit difference f16 weights may make (measured 0.04 on logits of magnitude ~40, real model)

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("gguf"), tickets=24, max_steps=2, test_size=8)

@pytest.fixture(scope="module")
def merged(run):
    from finetune_kit.deploy import merge_and_save
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out = merge_and_save(run, run.parent.parent/"merged")
    return out, AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)

@pytest.fixture(scope="module")
def exported(run):
    "`finetune-kit export RUN OUT --format gguf --quant q8_0`, as a user types it."
    out = run.parent.parent/"q8"
    r = run_cli("export", run, out, "--format", "gguf", "--quant", "q8_0", env=OFFLINE, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out

def _load(folder, name):
    from finetune_kit.gguf_export import load_gguf
    return load_gguf(folder/name)

def test_export_folder(run, exported):
    from finetune_kit.sample_data import SYSTEM_PROMPT
    test_names = {p.name for p in exported.iterdir()}
    assert test_names == {"model.gguf", "Modelfile", "README.md"}, test_names
    mf = (exported/"Modelfile").read_text()
    assert mf.startswith("FROM ./model.gguf\n") and f'SYSTEM """{SYSTEM_PROMPT}"""' in mf and 'PARAMETER stop "<|im_end|>"' in mf
    card = (exported/"README.md").read_text()
    for part in ("library_name: gguf", "ollama create q8 -f Modelfile", "llama-cli -m model.gguf --jinja", "lms import model.gguf"):
        assert part in card, part

def test_tokenizer_and_template_from_the_file(run, merged, exported):
    from transformers import AutoTokenizer
    from finetune_kit.model_sources import gguf_reading
    with gguf_reading(): tok = AutoTokenizer.from_pretrained(exported, gguf_file="model.gguf")
    assert tok.chat_template == (run/"adapter"/"chat_template.jinja").read_text()  # the template trained on
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")  # pad == end of turn
    conv = [json.loads(l)["messages"] for l in (run/"data"/"test.jsonl").read_text().splitlines()][0]
    ours = merged[2].apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
    assert tok.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"] == ours

def test_f16_logits_match_the_merged_model(merged):
    from finetune_kit.gguf_export import write_gguf
    folder, model, tok = merged
    f16 = write_gguf(folder, folder.parent/"f16.gguf", "f16", base="HuggingFaceTB/SmolLM2-135M-Instruct")
    ids = tok.apply_chat_template([{"role": "user", "content": "My card was charged twice."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad(): a, b = model(**ids).logits, _load(f16.parent, f16.name)(**ids).logits
    torch.testing.assert_close(b, a, atol=F16_ATOL, rtol=0)

def test_export_errors_are_messages(run, exported):
    from finetune_kit.deploy import ExportError
    from finetune_kit.gguf_export import export_gguf
    with pytest.raises(ExportError, match="not empty"): export_gguf(run, exported)  # never overwritten
    r = run_cli("export", run, exported.parent/"new", "--quant", "q4_k_m", env=OFFLINE, timeout=300)
    assert r.returncode == 2 and "choose one of f32, f16" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
