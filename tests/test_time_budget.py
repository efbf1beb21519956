"""A time budget (issue 16): the probe times the real step and leaves no trace; the plan is applied and recorded; a resume
keeps the plan. Nothing here is timed: where a test needs a speed, it gives the probe's figures itself."""
import json

import pytest
import torch
from transformers import TrainerCallback

import finetune_kit.budget as B  # where a budgeted run calls the probe
from finetune_kit.config import FinetuneConfig, resolve_auto
from finetune_kit.data import tokenize_examples
from finetune_kit.model import load_model, setup_strategy
from finetune_kit.sample_data import make_support_tickets, write_jsonl
from finetune_kit.runs import read_metrics
from finetune_kit.budget import StepProbe, probe_training
from finetune_kit.train import resume_run, train

from helpers import tiny_models

pytestmark = pytest.mark.slow  # the whole file loads the model or trains (the tiny model: a plan is plumbing)
tiny = pytest.fixture(scope="module", autouse=True)(tiny_models)


def test_probe_puts_the_weights_back():
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m", "cpu")
    rows = make_support_tickets(24, seed=3)
    data = {"train": tokenize_examples(tok, rows[:16], 512, verbose=False),
            "validation": tokenize_examples(tok, rows[16:], 512, verbose=False)}
    rcfg, _ = resolve_auto(FinetuneConfig(batch_size=4, max_steps=4), 16)
    model = setup_strategy(model, rcfg)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    rng = torch.random.get_rng_state()
    p = probe_training(rcfg, model, tok, data, "cpu", "fp32", steps=1, eval_examples=4)
    assert p.step_s > 0 and p.tokens_per_s > 0 and p.eval_example_s > 0 and p.steps == 1
    after = dict(model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before), "the probe changed a weight"
    assert all(q.grad is None for q in model.parameters())
    assert torch.equal(rng, torch.random.get_rng_state())
    # one forward hook on the output layer: the probe's supervised head is gone
    head = model.get_base_model().get_output_embeddings()
    assert len(head._forward_pre_hooks) == 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("budget")
    return write_jsonl(make_support_tickets(80, seed=5), d/"tickets.jsonl"), d


def _cfg(data, name, **kw):
    path, d = data
    return FinetuneConfig(data=str(path), runs_dir=str(d/"runs"), run_name=name, batch_size=4, val_size=16, test_size=8,
                          logging_steps=1, device="cpu", seed=1, **kw)


def test_a_budget_that_fits_trains_exactly_the_unbudgeted_run(data):
    "The probe leaves no trace: the same training losses step for step, with and without a (generous) budget."
    plain = train(_cfg(data, "plain", max_steps=3, eval_steps=3))
    budget = train(_cfg(data, "budget", max_steps=3, eval_steps=3, time_budget="1h"))
    loss = lambda run: [(m["step"], m["loss"]) for m in read_metrics(run) if "loss" in m]
    assert loss(plain) == loss(budget) and len(loss(plain)) == 3
    hp = json.loads((budget/"hyperparameters.json").read_text())["time_budget"]
    assert hp["plan"]["steps"] == 3 and hp["probe"]["step_s"] > 0 and hp["budget_s"] == 3600


def test_a_tight_budget_trains_what_fits_and_caps_evaluation(data, monkeypatch):
    "With the probe's figures given (100 s a step, 2 s an example), a 22-minute budget fits 10 of the 56 steps (90% of it is planned)."
    monkeypatch.setattr(B, "probe_training", lambda *a, **k: StepProbe(100.0, 1.0, 2.0, 3, 1.0))
    run = train(_cfg(data, "tight", epochs=4, time_budget="22m", max_steps=-1))
    hp = json.loads((run/"hyperparameters.json").read_text())
    plan = hp["time_budget"]["plan"]
    assert hp["total_steps"] == plan["steps"] == 10 and plan["est_eval_s"] <= 0.1 * plan["est_train_s"]
    # 100 s of evaluation allowed: 3 passes over the 16 validation examples (96 s), at steps 4, 8 and the last
    assert (plan["evaluations"], plan["val_examples"], plan["eval_steps"]) == (3, 16, 4)
    steps = [m["step"] for m in read_metrics(run) if "loss" in m]
    assert max(steps) == 10
    evals = [m for m in read_metrics(run) if "eval_loss" in m]
    assert len(evals) == plan["evaluations"]


def test_a_resumed_budgeted_run_keeps_its_plan(data, monkeypatch):
    "A resume applies the recorded plan; it does not probe again (the probe is made to fail here)."
    monkeypatch.setattr(B, "probe_training", lambda *a, **k: StepProbe(100.0, 1.0, 2.0, 3, 1.0))
    cfg = _cfg(data, "resume", epochs=4, time_budget="22m", max_steps=-1)

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 8: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): train(cfg, callbacks=[Crash()])
    run = next((data[1]/"runs").glob("resume*"))
    monkeypatch.setattr(B, "probe_training", lambda *a, **k: pytest.fail("probed again on resume"))
    resume_run(run)
    assert max(m["step"] for m in read_metrics(run) if "loss" in m) == 10


def test_the_deadline_stops_a_run_that_runs_slower_than_planned(data, monkeypatch):
    "The probe says 0.5 s a step; the steps take 3 s (a callback sleeps): the run stops at the budget, weights saved."
    import time
    monkeypatch.setattr(B, "probe_training", lambda *a, **k: StepProbe(0.5, 1.0, 0.01, 3, 1.0))

    class Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kw): time.sleep(3)
    run = train(_cfg(data, "slow", epochs=4, time_budget="30s", max_steps=-1), callbacks=[Slow()])
    plan = json.loads((run/"hyperparameters.json").read_text())["time_budget"]["plan"]
    last = max(m["step"] for m in read_metrics(run) if "loss" in m)
    assert last < plan["steps"] and (run/"adapter"/"adapter_model.safetensors").is_file()
    assert json.loads((run/"summary.json").read_text())["train_seconds"] < 30


def test_without_a_budget_evaluation_is_held_to_its_share(data):
    """No budget, `eval_steps: auto` (issue 31): the plan `plan_evaluation` makes from the token counts is recorded and
    applied (its interval, its fixed subset), a resume plans the same, and the summary says what evaluation took."""
    from finetune_kit.config import eval_subset, plan_evaluation
    from finetune_kit.runs import RunDir
    from finetune_kit.data import load_examples
    run = train(_cfg(data, "share", epochs=2, max_steps=-1).replace(val_size=40))
    hp = json.loads((run/"hyperparameters.json").read_text())
    _, tok = load_model("smollm2-135m", "cpu")
    lens = lambda split: [len(x) for x in tokenize_examples(tok, load_examples(RunDir(run).split(split), verbose=False),
                                                          512, verbose=False)["input_ids"]]
    train_len, val_len = lens("train"), lens("validation")
    p = plan_evaluation(hp["total_steps"], sum(train_len) / len(train_len) * 4, val_len)
    assert p["est_share"] <= 0.1 or p["val_examples"] == 32, p
    assert (hp["eval_steps"]["value"], hp["eval_examples"]["value"]) == (p["eval_steps"], p["val_examples"])
    assert f"{p['evaluations']} evaluations on {p['val_examples']} of 40" in hp["eval_steps"]["rule"]
    evals = [m for m in read_metrics(run) if "eval_loss" in m]
    assert len(evals) == p["evaluations"] and evals[-1]["step"] == hp["total_steps"]
    # the same subset at every evaluation: the Trainer's per-pass sample count is the plan's
    assert all(round(m["eval_runtime"] * m["eval_samples_per_second"]) == p["val_examples"] for m in evals)
    assert eval_subset(40, p["val_examples"], 1) == eval_subset(40, p["val_examples"], 1)
    s = json.loads((run/"summary.json").read_text())
    assert s["eval_seconds"] == round(sum(m["eval_runtime"] for m in evals), 1) and 0 < s["eval_share_of_run"] < 1
