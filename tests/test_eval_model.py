"Evaluation with the real default model, offline: batch-size invariance, batched generation, a run evaluated end to end."
import json, re
from pathlib import Path
import pytest
from helpers import run_cli
from finetune_kit.config import FinetuneConfig, save_config
from finetune_kit.data import load_examples
from finetune_kit.splits import split_examples
from finetune_kit.eval_report import EvalError
from finetune_kit.metrics import text_perplexity
from finetune_kit.evaluate import answer_loss, evaluate_run, generate_answers
from finetune_kit.model import add_lora, load_model
from finetune_kit.sample_data import write_jsonl
from finetune_kit.runs import RunError

pytestmark = pytest.mark.slow  # the whole file loads the model, trains or serves

VERDICT = r"accuracy ([\d.]+)% vs ([\d.]+)% for the base model on (\d+) test examples"

@pytest.fixture(scope="module")
def base():
    model, tok = load_model("smollm2-135m", device="cpu")
    return model.eval(), tok

@pytest.fixture(scope="module")
def examples():
    # prompts of different lengths, so batches need real padding
    ex = load_examples("sample:support_tickets", verbose=False)
    return sorted(ex[:40], key=lambda e: len(e["messages"][-2]["content"]))[::8][:5]

@pytest.fixture(scope="module")
def run(tmp_path_factory, base):
    "A run folder as train() leaves it, with an untrained adapter (LoRA starts as the identity): no training needed."
    d = tmp_path_factory.mktemp("runs")/"untrained"
    cfg = FinetuneConfig(runs_dir=str(d.parent), run_name=d.name, max_new_tokens=6)
    save_config(cfg, d/"config.yaml")
    for k, rows in split_examples(load_examples(cfg.data, verbose=False), cfg.val_size, cfg.test_size, cfg.seed).items():
        write_jsonl(rows, d/"data"/f"{k}.jsonl")
    model, tok = load_model(cfg.model, device="cpu")
    add_lora(model, cfg).save_pretrained(d/"adapter"); tok.save_pretrained(d/"adapter")
    return d

def test_loss_is_the_same_for_any_batch_size(base, examples):
    model, tok = base
    losses = [answer_loss(model, tok, examples, batch_size=b) for b in (1, 2, 5)]
    for m in losses[1:]:
        assert m["loss"] == pytest.approx(losses[0]["loss"], rel=1e-4) and m["tokens"] == losses[0]["tokens"]
        assert m["token_accuracy"] == pytest.approx(losses[0]["token_accuracy"])

def test_batched_generation_equals_unbatched(base, examples):
    model, tok = base
    one, _ = generate_answers(model, tok, examples, max_new_tokens=16, batch_size=1, progress=False)
    batched, speed = generate_answers(model, tok, examples, max_new_tokens=16, batch_size=5, progress=False)
    assert one == batched and speed > 0
    assert len({len(a) for a in one}) > 1, "the base model's answers should vary in length"

def test_text_perplexity_scores_every_token_once(base, examples):
    model, tok = base
    text = " ".join(e["messages"][-2]["content"] for e in examples)
    n = len(tok(text, add_special_tokens=False).input_ids)
    full = text_perplexity(model, tok, [text], window=4096, stride=4096)
    for window, stride in [(32, 16), (48, 8)]:
        slid = text_perplexity(model, tok, [text], window=window, stride=stride)
        assert slid["tokens"] == full["tokens"] == n - 1
    # less context per token can only make the text more surprising on average, by a little here
    assert full["perplexity"] <= text_perplexity(model, tok, [text], window=32, stride=32)["perplexity"]
    with pytest.raises(EvalError, match="stride <= window"): text_perplexity(model, tok, [text], window=8, stride=9)

def test_user_mistakes_fail_before_the_model_loads(run, tmp_path):
    with pytest.raises(RunError, match="not a run folder"): evaluate_run(tmp_path)
    with pytest.raises(RunError, match="no nope split"): evaluate_run(run, split="nope")
    with pytest.raises(EvalError, match="max_examples=0"): evaluate_run(run, max_examples=0)
    with pytest.raises(EvalError, match=r"name none of the labels \['yes', 'no'\]"): evaluate_run(run, labels=["yes", "no"])
    with pytest.raises(EvalError, match="choose auto, label, exact, text"): evaluate_run(run, task="classification")

def test_evaluate_run_writes_the_report(run):
    r = evaluate_run(run, max_examples=4, progress=False, batch_size=4)
    assert (r.n, r.task, r.labels) == (4, "label", ["account", "billing", "returns", "shipping", "technical"])
    assert re.search(VERDICT, r.verdict()), r.verdict()
    # an untrained adapter is the base model: the same numbers
    for k in ("accuracy", "macro_f1", "loss"): assert r.finetuned[k] == pytest.approx(r.base[k], abs=1e-4)
    assert "fine-tuned is no different" in r.verdict()
    for k in ("accuracy", "macro_f1", "micro_f1", "invalid_rate", "loss", "perplexity", "token_accuracy"): assert f"| {k} |" in r.table()
    saved = json.loads((run/"eval_test.json").read_text())
    assert saved["n"] == 4 and len(saved["samples"]) == 4 and set(saved["fit"]["losses"]) == {"train", "validation", "test"}
    assert (run/"eval_test.png").stat().st_size > 1000 and "## Examples" in (run/"eval_test.md").read_text()
    assert "<table" in r._repr_html_()

def test_fit_diagnosis_scores_at_most_fit_examples(run, base, monkeypatch):
    "The train and validation losses come from their first FIT_EXAMPLES examples, and the report says so."
    import finetune_kit.evaluate as ev
    monkeypatch.setattr(ev, "FIT_EXAMPLES", 2)
    r = evaluate_run(run, max_examples=4, progress=False, batch_size=4)
    assert "losses of 2 train, 2 validation, 4 test examples" in r.fit["notes"], r.fit
    first = load_examples(run/"data"/"train.jsonl", verbose=False)[:2]  # an untrained adapter: the base model's loss
    assert r.fit["losses"]["train"] == pytest.approx(answer_loss(*base, first)["loss"], rel=1e-4)

def test_cli_eval_prints_the_table_and_verdict(run):
    r = run_cli("eval", run, "--max-examples", "3", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(VERDICT, r.stdout)
    assert m and int(m[3]) == 3, r.stdout
    assert "| macro_f1 |" in r.stdout and "examples/s" in r.stderr

def test_one_prefill_gives_the_same_loss_and_answers(base, examples):
    "score_examples (prefill + continuation on the cache, LM head at scored tokens, sorted batches) vs the plain path."
    from finetune_kit.evaluate import answer_loss_full, few_shot, scored_metrics
    from finetune_kit.scoring import score_examples
    model, tok = base
    rows = examples + few_shot(examples[:3], examples[3:])  # multi-turn: earlier assistant turns are supervised
    full = answer_loss_full(model, tok, rows, batch_size=4)
    answers, _ = generate_answers(model, tok, rows, max_new_tokens=8, batch_size=4, progress=False)
    from finetune_kit.scoring import _batch_prefix, _encode_prompts
    from finetune_kit.speed import MIN_SHARED_PREFIX
    enc = _encode_prompts(tok, [r["messages"][:-1] for r in rows])
    prompts = [x[m.bool()].tolist() for x, m in zip(enc["input_ids"], enc["attention_mask"])]
    assert _batch_prefix(prompts) >= MIN_SHARED_PREFIX  # batches of 3 read the system prompt once; of 1, not
    for b, g in ((1, 64), (3, 64), (3, 3)):  # prefill caches joined to generate together (up to 64 rows), or not
        s = score_examples(model, tok, rows, batch_size=b, max_new_tokens=8, generate_batch=g)
        m, got = scored_metrics(s), s.answers
        assert got == answers and m["tokens"] == full["tokens"] and m["token_accuracy"] == full["token_accuracy"]
        # the cache and the smaller products add in another order: 2e-5 relative measured, in fp32
        assert m["loss"] == pytest.approx(full["loss"], rel=1e-4) and m["perplexity"] == pytest.approx(full["perplexity"], rel=3e-4)
    truncated = scored_metrics(score_examples(model, tok, rows, max_seq_len=120))  # few-shot rows cut inside the prompt: earlier turns still scored
    assert truncated["tokens"] == answer_loss_full(model, tok, rows, max_seq_len=120)["tokens"]
