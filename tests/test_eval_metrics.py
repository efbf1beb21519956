"The evaluation metrics: parity with the libraries that define them, label parsing, task inference, offline use."
import math, os, subprocess, sys
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score
from finetune_kit.eval_report import EvalError
from finetune_kit.eval_report import diagnose_fit
from finetune_kit.metrics import INVALID, Task, infer_task, load_metric, parse_label, score_answers

REFS = ["The cat sat on the mat.", "Please restart the router and try again.", "Your refund was issued today.",
        "We updated the delivery address on your order."]
PREDS = ["The cat is on the mat.", "Restart the router, then try again.", "Your refund was issued today.",
         "The address has been changed."]
TEAMS = ["billing", "shipping", "technical", "account", "returns"]

def test_bleu_matches_sacrebleu():
    out = load_metric("bleu").compute(predictions=PREDS, references=REFS)
    ref = sacrebleu.metrics.BLEU()
    s = ref.corpus_score(PREDS, [REFS])
    assert out["bleu"] == pytest.approx(s.score, abs=1e-12) and out["precisions"] == pytest.approx(s.precisions)
    assert out["signature"] == str(ref.get_signature()) and "tok:13a" in out["signature"]
    # several references per prediction: sacrebleu takes them transposed, one stream per reference position
    alt = [r.lower() for r in REFS]
    multi = load_metric("bleu").compute(predictions=PREDS, references=[[a, b] for a, b in zip(REFS, alt)])
    assert multi["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS, alt]).score, abs=1e-12)

def test_bleu_streams_like_one_call():
    m = load_metric("bleu")
    m.add_batch(predictions=PREDS[:2], references=REFS[:2]); m.add_batch(predictions=PREDS[2:], references=REFS[2:])
    assert m.compute()["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-12)

def test_rouge_matches_rouge_score():
    out = load_metric("rouge").compute(predictions=PREDS, references=REFS)
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for t in ("rouge1", "rouge2", "rougeL"):
        assert out[t] == pytest.approx(sum(sc.score(r, p)[t].fmeasure for p, r in zip(PREDS, REFS)) / len(REFS), abs=1e-12)

def test_label_scores_match_sklearn_with_an_invalid_bucket():
    preds = ["billing", "Shipping.", "I am not sure", "billing", "returns, I think", "account"]
    refs = ["billing", "shipping", "returns", "returns", "returns", "technical"]
    parsed = ["billing", "shipping", INVALID, "billing", "returns", "account"]
    out = load_metric("labels").compute(predictions=preds, references=refs, labels=TEAMS)
    assert out["accuracy"] == pytest.approx(accuracy_score(refs, parsed)) == pytest.approx(0.5)
    for avg in ("macro", "micro"):
        assert out[f"{avg}_f1"] == pytest.approx(f1_score(refs, parsed, labels=TEAMS, average=avg, zero_division=0))
    assert out["invalid_rate"] == pytest.approx(1 / 6)
    # the invalid answer is wrong but is not a class of its own: micro-F1 is not accuracy here
    assert out["micro_f1"] > out["accuracy"]

def test_exact_match_perplexity_and_token_accuracy():
    assert load_metric("exact_match").compute(predictions=["Paris.", "4 ", "Ada"], references=["paris", "4", "Ada Lovelace"])["exact_match"] == pytest.approx(2 / 3)
    p = load_metric("perplexity").compute(nll=[3.0, 1.0, 2.0], tokens=[2, 1, 3])
    assert p["perplexity"] == pytest.approx(math.exp(1.0)) and p["tokens"] == 6
    assert load_metric("token_accuracy").compute(predictions=[5, 6, 7, 8], references=[5, -100, 0, 8])["token_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(EvalError, match="no supervised token"): load_metric("perplexity").compute(nll=[0.0], tokens=[0])

@pytest.mark.parametrize("answer,label", [
    ("billing", "billing"), ("BILLING", "billing"), ("Billing.", "billing"), ("  shipping!\n", "shipping"),
    ("'returns'", "returns"), ("Returns, I think.", "returns"), ("This ticket is for the technical team", "technical"),
    ("Team: account", "account"), ("billing or shipping", None), ("billings", None), ("bill", None),
    ("", None), ("I'm sorry, I cannot help.", None), ("You route customer support tickets: billing, shipping, technical", None)])
def test_parse_label(answer, label):
    assert parse_label(answer, TEAMS) == label

def test_parse_label_multi_word_labels():
    labels = ["card", "gift card", "credit card"]
    assert parse_label("A Gift-Card problem", ["gift-card", "card"]) == "gift-card"
    assert parse_label("my gift card", labels) == "gift card"
    assert parse_label("gift card or credit card", labels) is None

def test_infer_task():
    assert infer_task(["billing", "Billing", "shipping", "returns"] * 5) == Task("label", ["billing", "returns", "shipping"])
    assert infer_task(["Paris", "4", "Ada Lovelace", "1969"]).kind == "exact"
    assert infer_task(REFS).kind == "text"
    assert infer_task(REFS, labels=["a", "b"]) == Task("label", ["a", "b"])
    with pytest.raises(EvalError, match="task='texts'"): infer_task(REFS, task="texts")
    with pytest.raises(EvalError, match="labels= is empty"): infer_task(REFS, labels=[])

def test_score_answers_picks_the_metrics_of_the_task():
    assert {"bleu", "rouge1", "rougeL", "exact_match"} <= set(score_answers(PREDS, REFS, Task("text")))
    assert set(score_answers(["billing"], ["billing"], Task("label", TEAMS))) == {"exact_match", "accuracy", "macro_f1", "micro_f1", "invalid_rate"}
    assert set(score_answers(["4"], ["4"], Task("exact"))) == {"exact_match"}

def test_diagnose_fit_warns_when_validation_loss_rises():
    curve = [{"step": s, "loss": 1 / s} for s in range(1, 21)] + [{"step": s, "eval_loss": v} for s, v in [(5, 0.6), (10, 0.5), (15, 0.55), (20, 0.7)]]
    w = diagnose_fit(curve, {"train": 0.3, "validation": 0.5})["warnings"]
    assert len(w) == 1 and w[0].startswith("overfitting: validation loss rose from 0.5 (step 10) to 0.7 (step 20)")
    falling = [r for r in curve if r.get("step", 0) <= 10]
    assert diagnose_fit(falling, {"train": 0.3, "validation": 0.5})["warnings"] == []
    assert diagnose_fit([], {"train": 0.01, "validation": 0.9})["warnings"][0].startswith("overfitting: held-out loss")
    assert diagnose_fit([], {"train": 2.0, "test": 2.5}, base_loss=2.6)["warnings"][0].startswith("underfitting")

OFFLINE_CODE = """
import socket
def no_network(*a, **k): raise OSError("network use in an offline test")
socket.socket.connect = no_network
socket.create_connection = no_network
import evaluate
from finetune_kit.metrics import METRICS, load_metric
out = load_metric("bleu").compute(predictions=["a b c d"], references=["a b c d"])
assert round(out["bleu"], 6) == 100, out
assert load_metric("rouge").compute(predictions=["a b"], references=["a b"])["rougeL"] == 1
assert load_metric("labels").compute(predictions=["x"], references=["x"], labels=["x", "y"])["accuracy"] == 1
assert load_metric("exact_match").compute(predictions=["x"], references=["x"])["exact_match"] == 1
assert load_metric("perplexity").compute(nll=[0.0], tokens=[1])["perplexity"] == 1
assert load_metric("token_accuracy").compute(predictions=[1], references=[1])["token_accuracy"] == 1
try: evaluate.load("bleu"); hub = "loaded"
except Exception as e: hub = "failed"
print("ok", hub)
"""

@pytest.mark.slow
def test_metrics_work_offline_with_an_empty_cache(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path/"hf"), "XDG_CACHE_HOME": str(tmp_path/"cache")}
    r = subprocess.run([sys.executable, "-c", OFFLINE_CODE], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # the Hub's module cannot load here, which is why the modules ship with finetune_kit
    assert r.stdout.split() == ["ok", "failed"], r.stdout
    assert not (tmp_path/"hf").exists() or not any((tmp_path/"hf").rglob("*.arrow")), "metrics must not write cache files"

def test_underfitting_says_whether_the_loss_went_down_at_all():
    above = diagnose_fit([], {"test": 4.8}, base_loss=4.6, split="test")["warnings"]
    assert above == ["underfitting: the test loss 4.8 is not below the base model's 4.6; "
                     "train longer (epochs) or with a higher learning_rate"], above
    assert "is barely below the base model's 4.6" in diagnose_fit([], {"test": 4.55}, base_loss=4.6, split="test")["warnings"][0]
