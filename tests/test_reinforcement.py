"""Reinforcement fine-tuning (GRPO): the loss equals TRL's `GRPOTrainer` loss on the same batch; a tiny run trains,
logs its reward metrics, resumes and is scored; a python grader that loops forever stops the run with a clear error."""
import json, shutil
import pytest, torch
from helpers import TINY

pytestmark = pytest.mark.slow  # loads a model and trains

@pytest.fixture(scope="module")
def tok():
    from finetune_kit.model import load_tokenizer
    from finetune_kit.model_sources import resolve_model
    return load_tokenizer(str(resolve_model("smollm2-135m")))

@pytest.mark.parametrize("loss_type,beta", [("dapo", 0.0), ("dapo", 0.04), ("grpo", 0.04)])
def test_loss_matches_trl(tok, tmp_path, monkeypatch, loss_type, beta):
    """On a tiny random model and a fixed batch (prompts, completions cut at their end-of-turn token by position, old
    and reference log-probabilities moved away from the policy so that the clip is active, advantages from rewards):
    given the same per-token log-probabilities, TRL's `GRPOTrainer._compute_loss` and `grpo_loss` agree to 1e-6, loss
    and gradients. TRL's own log-probabilities come from its chunked fused LM head, which differs from the plain
    forward pass (ours, exactly) by about 1e-3 per token, so end to end (TRL's log-probabilities in its loss, ours in
    ours) the losses agree to 1e-3."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import LlamaConfig, LlamaForCausalLM
    from finetune_kit.reinforcement import Rollout, completion_logps, completion_mask, group_advantages, grpo_loss
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id))
    G, N, P, T = 4, 8, 6, 7
    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=N, num_generations=G,
                          max_completion_length=T, report_to=[], use_cpu=True, beta=beta, epsilon=0.2,
                          loss_type=loss_type, temperature=1.0)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                              train_dataset=Dataset.from_list([{"prompt": "hi"}] * N), processing_class=tok,
                              peft_config=LoraConfig(r=4, target_modules="all-linear"))  # TRL's reference: adapter off
    model = trainer.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name: p.normal_(0, 0.5)  # a moved policy: every adapter weight gets a gradient
    end = tok.convert_tokens_to_ids(tok.eos_token)
    prompt_ids = torch.randint(10, 1000, (N, P))  # equal lengths: TRL counts positions from 0, as we do then
    completion_ids = torch.randint(10, 1000, (N, T))
    completion_ids[0, 2] = completion_ids[3, 5] = end  # two answers end early; the rest of their row is padding
    completion_ids[0, 3:] = end
    mask = completion_mask(completion_ids, end)
    assert mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0] and mask[3].sum() == 6 and mask[1].sum() == T
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 1.0, 1.0, 0.0, 0.25])
    advantages, _ = group_advantages(rewards, G)
    ro = Rollout(prompt_ids, torch.ones_like(prompt_ids), completion_ids, mask, [""] * N)
    with torch.no_grad(): policy = completion_logps(model, ro)
    old = (policy + 0.3 * torch.randn(N, T)) * mask  # as if sampled by an older policy: ratios far from 1
    ref = (policy + 0.5 * torch.randn(N, T)) * mask
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
              "completion_mask": mask, "advantages": advantages, "old_per_token_logps": old,
              "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    model.eval()  # TRL's eval mode: no gradient-accumulation scaling of its loss

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    end_to_end = trainer._compute_loss(model, inputs)  # TRL's own log-probabilities
    ours, stats = grpo_loss(completion_logps(model, ro), old, advantages, mask, ref, beta=beta, epsilon=0.2,
                            loss_type=loss_type)
    our_grads = grads(ours)
    assert stats["clip_ratio"] > 0  # the clip is active on this batch
    assert abs(float(end_to_end) - float(ours)) < 1e-3  # measured: 2.6e-4 (dapo, beta 0)
    # the same log-probabilities into TRL's loss
    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies",
                        lambda *a, **kw: (completion_logps(model, ro), torch.zeros(N, T), None))
    theirs = trainer._compute_loss(model, inputs)
    torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-6, rtol=1e-5)
    for a, b in zip(grads(theirs), our_grads): torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    if beta: assert abs(stats["kl"] - trainer._metrics["eval"]["kl"][-1]) < 1e-6

@pytest.fixture(scope="module")
def rft_file(tmp_path_factory):
    from finetune_kit.sample_data import make_support_tickets, write_jsonl
    rows = [{"messages": e["messages"][:-1], "team": e["messages"][-1]["content"]} for e in make_support_tickets(16)]
    return write_jsonl(rows, tmp_path_factory.mktemp("rft")/"rft.jsonl")

TEAM = {"type": "string_check", "name": "team", "input": "{{sample.output_text}}", "reference": "{{item.team}}",
        "operation": "eq"}

def test_train_resume_and_score(rft_file, tmp_path, monkeypatch):
    "The plumbing of a GRPO run, on the tiny model: its folder, reward metrics, held-out reward; a resume; the scores."
    monkeypatch.setenv(*next(iter(TINY.items())))
    from finetune_kit.config import FinetuneConfig
    from finetune_kit.reinforcement import ReinforceSettings, evaluate_reinforcement, resume_reinforcement, \
        train_reinforcement
    from finetune_kit.runs import RunDir, read_metrics
    cfg = FinetuneConfig(data=str(rft_file), runs_dir=str(tmp_path), run_name="rl", max_steps=2, batch_size=2,
                         val_size=2, test_size=2, eval_steps=1, save_steps=1, logging_steps=1, lora_layers=2,
                         max_new_tokens=6, device="cpu")
    settings = ReinforceSettings(group_size=2, beta=0.04, eval_samples=2)
    run = RunDir(train_reinforcement(cfg, TEAM, settings))
    hp = json.loads(run.hyperparameters.read_text())
    assert hp["method"] == "reinforcement" and hp["reinforcement"]["group_size"] == 2
    assert json.loads((run.path/"grader.json").read_text()) == TEAM
    logs = read_metrics(run.path)
    steps = [r for r in logs if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for k in ("reward", "reward_std", "kl", "completion_length", "clip_ratio", "time/generate", "time/grade"):
        assert k in steps[0], k
    assert 1 <= steps[0]["completion_length"] <= 6 and steps[0]["kl"] >= 0
    assert [r["step"] for r in logs if "eval_reward" in r] == [0, 1, 2]  # before training, then every step
    assert (run.adapter/"adapter_config.json").is_file()
    summary = json.loads(run.summary.read_text())
    assert summary["method"] == "reinforcement" and summary["base_eval_reward"] is not None
    # resume: drop the end of the run, continue from the step-1 checkpoint
    run.summary.unlink()
    shutil.rmtree(run.checkpoints/"checkpoint-2")
    assert RunDir(resume_reinforcement(run.path)).summary.is_file()
    assert json.loads(run.summary.read_text())["resumed_from"].endswith("checkpoint-1")
    assert [r["step"] for r in read_metrics(run.path) if "loss" in r] == [1, 2]
    scores = evaluate_reinforcement(run.path)
    assert scores["prompts"] == 2 and {"reward", "base_reward"} <= scores.keys()

def test_a_grader_that_loops_stops_the_run(rft_file, tmp_path, monkeypatch):
    "A python grader that never returns is stopped at its time limit, and the run stops with a clear error."
    monkeypatch.setenv(*next(iter(TINY.items())))
    from finetune_kit.config import FinetuneConfig
    from finetune_kit.graders import GraderError, PythonLimits
    from finetune_kit.reinforcement import ReinforceSettings, train_reinforcement
    cfg = FinetuneConfig(data=str(rft_file), runs_dir=str(tmp_path), run_name="loop", max_steps=1, batch_size=2,
                         val_size=0, test_size=0, logging_steps=1, max_new_tokens=4, device="cpu")
    loops = {"type": "python", "name": "loops", "source": "def grade(sample, item):\n    while True: pass\n"}
    with pytest.raises(GraderError, match="ran past its time limit of 0.5 s"):
        train_reinforcement(cfg, loops, ReinforceSettings(group_size=2), python_limits=PythonLimits(seconds=0.5))

def test_bad_inputs_fail_before_training(rft_file, tmp_path):
    from finetune_kit.config import ConfigError, FinetuneConfig
    from finetune_kit.formats import DataError
    from finetune_kit.reinforcement import ReinforceSettings, train_reinforcement
    cfg = FinetuneConfig(data=str(rft_file), runs_dir=str(tmp_path), device="cpu")
    with pytest.raises(ConfigError, match="group_size"): train_reinforcement(cfg, TEAM, ReinforceSettings(group_size=1))
    judge = {"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "rate"}]}
    with pytest.raises(ConfigError, match="pass judge="): train_reinforcement(cfg, judge)
    with pytest.raises(DataError, match="the grader reads"):
        train_reinforcement(cfg, {**TEAM, "reference": "{{item.department}}"})
