"A tiny trained run exported to GGUF: transformers' GGUF reader gets back the merged model, its tokenizer and template."
import json
import pytest, torch
from helpers import run_cli, train_tiny_run

pytestmark = pytest.mark.slow  # trains a run (12 steps: short answers, as a trained run gives) and loads the model four times

OFFLINE = {"HF_HUB_OFFLINE": "1"}
Q8_ATOL = 1.5  # largest logit difference q8_0 weights may make (measured 0.77 on the 8 test answers)
F16_ATOL = 0.1  # largest logit difference f16 weights may make (measured 0.04 on logits of magnitude ~40)

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("gguf"), tickets=24, max_steps=12, test_size=8)

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
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()

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
    tok = AutoTokenizer.from_pretrained(exported, gguf_file="model.gguf")
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

def test_q8_0_answers_the_test_split_like_the_merged_model(run, merged, exported):
    """Teacher-forced on the test split's answers: q8_0 logits stay within Q8_ATOL of the merged model's, and the greedy
    token is the same at 80% of the answer positions or more: a 12-step run leaves near ties, which a logit difference
    well inside Q8_ATOL flips (measured: 26 of 29 the same). Comparing generated text instead failed on one such tie
    ("balancing" vs "Billing"), after which every later token differs."""
    _, model, tok = merged
    q8 = _load(exported, "model.gguf")
    convs = [json.loads(l)["messages"] for l in (run/"data"/"test.jsonl").read_text().splitlines()]
    worst, same, positions = 0.0, 0, 0
    for conv in convs:
        ids = tok.apply_chat_template(conv, tokenize=True, return_tensors="pt", return_dict=True)
        n_prompt = len(tok.apply_chat_template(conv[:-1], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        with torch.no_grad():
            a, b = (m(**ids).logits[0, n_prompt - 1:-1] for m in (model, q8))  # the positions that predict the answer
        worst = max(worst, (a - b).abs().max().item())
        same += int((a.argmax(-1) == b.argmax(-1)).sum())
        positions += len(a)
    print(f"q8_0: largest logit difference {worst:.3f}; greedy token the same at {same} of {positions} answer positions")
    assert len(convs) == 8 and worst < Q8_ATOL and same >= 0.8 * positions

def test_export_errors_are_messages(run, exported):
    from finetune_kit.deploy import ExportError
    from finetune_kit.gguf_export import export_gguf
    with pytest.raises(ExportError, match="not empty"): export_gguf(run, exported)  # never overwritten
    r = run_cli("export", run, exported.parent/"new", "--quant", "q4_k_m", env=OFFLINE, timeout=300)
    assert r.returncode == 2 and "choose one of f32, f16" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
