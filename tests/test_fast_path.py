"The fast training path computes the same loss and gradients as the plain Trainer path (issue #5); nothing here is timed."
import json

import pytest
import torch

from finetune_kit.config import FinetuneConfig, resolve_auto
from finetune_kit.data import ChatCollator, tokenize_examples
from finetune_kit.model import load_model, setup_strategy
from finetune_kit.sample_data import make_support_tickets, write_jsonl
from finetune_kit.runs import read_metrics
from finetune_kit.trainer import make_trainer
from finetune_kit.train import train

pytestmark = pytest.mark.slow  # the whole file loads the model, trains or serves


def _trainer(strategy: str, fast: bool, precision: str, tmp_path):
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m", "cpu")
    cfg = FinetuneConfig(strategy=strategy, fast=fast, precision=precision, batch_size=4, max_steps=1, eval_steps=1, save_steps=1,
                         train_last_layers=2)
    rows = make_support_tickets(8, seed=11)
    data = {"train": tokenize_examples(tok, rows, 512, verbose=False)}
    rcfg, _ = resolve_auto(cfg, len(rows))
    model = setup_strategy(model, rcfg)
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter matter so its gradients are a real check
        for n, p in model.named_parameters():
            if "lora_B" in n: p.normal_(0, 0.02)
    trainer, plan = make_trainer(rcfg, model, tok, data, tmp_path/f"{strategy}-{fast}-{precision}", "cpu", precision)
    batch = ChatCollator(tok.pad_token_id)([data["train"][i] for i in range(4)])
    return trainer, plan, batch


def _loss_grads(strategy, fast, precision, tmp_path):
    trainer, plan, batch = _trainer(strategy, fast, precision, tmp_path)
    model = trainer.model
    model.train()
    n_items = (batch["labels"][:, 1:] != -100).sum()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" and (plan is None or plan["autocast"]) else torch.autocast("cpu", enabled=False)
    with ctx:
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
    loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.item(), grads, plan


@pytest.mark.parametrize("strategy", ["lora", "freeze", "full"])
def test_fast_equals_plain_fp32(strategy, tmp_path):
    ref_loss, ref_grads, _ = _loss_grads(strategy, False, "fp32", tmp_path)
    loss, grads, plan = _loss_grads(strategy, True, "fp32", tmp_path)
    assert plan["supervised_head"]
    assert abs(loss - ref_loss) < 1e-4 * max(1, ref_loss)
    assert grads.keys() == ref_grads.keys() and grads
    for n in ref_grads:  # relative error of each gradient tensor (summation order differs between the attention kernels)
        err = (grads[n] - ref_grads[n]).norm() / ref_grads[n].norm().clamp_min(1e-12)
        assert err < 1e-3, f"{strategy} {n}: relative gradient error {err:.2e}"


def test_fast_bf16_tracks_fp32(tmp_path):
    ref_loss, ref_grads, _ = _loss_grads("lora", False, "fp32", tmp_path)
    loss, grads, plan = _loss_grads("lora", True, "bf16", tmp_path)
    assert plan["autocast"] is False and plan["fast_lora_layers"] == 210 and plan["bf16_frozen_weights"] > 0
    assert abs(loss - ref_loss) < 0.02 * ref_loss
    a = torch.cat([grads[n].flatten() for n in ref_grads]); b = torch.cat([ref_grads[n].flatten() for n in ref_grads])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99


def test_fast_run_logs_training_token_accuracy(tmp_path):
    write_jsonl(make_support_tickets(40, seed=4), tmp_path/"d.jsonl")
    run = train(None, data=str(tmp_path/"d.jsonl"), runs_dir=str(tmp_path/"runs"), run_name="r", max_steps=2, batch_size=4,
                logging_steps=1, eval_steps=2, val_size=8, test_size=4)
    rows = read_metrics(run)
    acc = [r["token_accuracy"] for r in rows if "loss" in r]
    assert acc and all(0 <= a <= 1 for a in acc)
    assert any("eval_token_accuracy" in r for r in rows)
    summary = json.loads((run/"summary.json").read_text())
    assert summary["fast_path"]["supervised_head"] is True


def _packed_loss_grads(packed: bool, attention: str, tmp_path):
    trainer, plan, batch = _trainer("lora", True, "fp32", tmp_path)
    model = trainer.model
    model.get_base_model().set_attn_implementation(attention)
    if packed:
        rows = [{"input_ids": r[m.bool()].tolist(), "labels": l[m.bool()].tolist()}
                for r, l, m in zip(batch["input_ids"], batch["labels"], batch["attention_mask"])]
        batch = ChatCollator(0, packed=True)(rows)
        assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    model.train()
    n_items = (batch["labels"][:, 1:] != -100).sum()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_batch_gives_the_padded_loss_and_gradients(attention, tmp_path):
    "Packed rows (no padding, positions from 0 per example: what varlen flash attention runs on a GPU) change nothing."
    ref_loss, ref_grads = _packed_loss_grads(False, attention, tmp_path)
    loss, grads = _packed_loss_grads(True, attention, tmp_path)
    assert abs(loss - ref_loss) < 1e-4 * max(1, ref_loss)
    for n in ref_grads:
        err = (grads[n] - ref_grads[n]).norm() / ref_grads[n].norm().clamp_min(1e-12)
        assert err < 1e-3, f"{attention} {n}: relative gradient error {err:.2e}"


def test_packed_trainer_evaluates_like_padded(tmp_path):
    "make_trainer(packed=True) packs training and validation batches; the evaluation's loss and token accuracy agree."
    model, tok = load_model("smollm2-135m", "cpu")
    rows = make_support_tickets(12, seed=5)
    data = {"train": tokenize_examples(tok, rows[:8], 512, verbose=False),
            "validation": tokenize_examples(tok, rows[8:], 512, verbose=False)}
    cfg = FinetuneConfig(batch_size=4, max_steps=1, eval_steps=1, save_steps=1)
    rcfg, _ = resolve_auto(cfg, 8)
    model = setup_strategy(model, rcfg)
    results = {}
    for packed in (False, True):
        trainer, plan = make_trainer(rcfg, model, tok, data, tmp_path/str(packed), "cpu", "fp32", packed=packed)
        assert plan["packed"] is packed and trainer.data_collator.packed is packed
        results[packed] = trainer.evaluate()
    assert abs(results[True]["eval_loss"] - results[False]["eval_loss"]) < 1e-4 * results[False]["eval_loss"]
    assert results[True]["eval_token_accuracy"] == results[False]["eval_token_accuracy"]
