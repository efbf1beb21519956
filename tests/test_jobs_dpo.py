"""DPO through the jobs API with the official `openai` client against `finetune-kit serve`: OpenAI's recipe (a
supervised job, then a DPO job on its `ft:` model), and the 400s a wrong file or value gets."""
import json, os, signal

import openai, pytest

from finetune_kit.config import FinetuneConfig
from finetune_kit.formats import DataError
from finetune_kit.sample_data import make_support_tickets, make_ticket_preferences, write_jsonl
from finetune_kit.train import train
from helpers import start_server, tiny_models, wait_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
tiny = pytest.fixture(scope="module", autouse=True)(tiny_models)  # the jobs train the tiny model: this is plumbing


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "Small files: 16 tickets for the SFT job, 16 + 4 preference pairs for the DPO job, and broken variants."
    d = tmp_path_factory.mktemp("dpo-data")
    write_jsonl(make_support_tickets(16, seed=5), d/"sft.jsonl")
    pairs = make_ticket_preferences(20, seed=7)
    write_jsonl(pairs[:16], d/"pairs.jsonl")
    write_jsonl(pairs[16:], d/"pairs_valid.jsonl")
    bad = [json.dumps(p) for p in pairs[:4]]
    same = dict(pairs[1], non_preferred_output=pairs[1]["preferred_output"])
    bad[1] = json.dumps(same)
    bad[3] = json.dumps({k: v for k, v in pairs[3].items() if k != "non_preferred_output"} | {"rejected": "x"})
    (d/"bad_pairs.jsonl").write_text("\n".join(bad) + "\n")
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "`finetune-kit serve --jobs-dir` as a user starts it; the official client on it."
    d = tmp_path_factory.mktemp("dpo-serve")
    p, client, _ = start_server(d/"state", d/"server.log")
    yield client
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(60)


def test_sft_train_on_a_preference_file_says_dpo(tmp_path):
    "`train` on pairs stops before any model loads, with every line located and the way to DPO named."
    with pytest.raises(DataError) as e:
        train(FinetuneConfig(data="sample:ticket_preferences", runs_dir=str(tmp_path), device="cpu"))
    msg = str(e.value)
    assert "ticket_preferences.jsonl:1: (record): preference pair:" in msg and "method dpo" in msg, msg
    assert "train_preference" in msg and not any(tmp_path.iterdir())  # no run folder begun


@pytest.mark.slow
def test_wrong_files_and_values_get_400s(server, data):
    client = server
    sft = client.files.create(file=open(data/"sft.jsonl", "rb"), purpose="fine-tune")
    pairs = client.files.create(file=open(data/"pairs.jsonl", "rb"), purpose="fine-tune")
    assert pairs.status == "processed" and pairs.bytes == (data/"pairs.jsonl").stat().st_size
    with pytest.raises(openai.BadRequestError) as e:  # a bad preference file: every problem by file, line and field
        client.files.create(file=open(data/"bad_pairs.jsonl", "rb"), purpose="fine-tune")
    msg = e.value.body["message"]
    assert "bad_pairs.jsonl:2: non_preferred_output: identical answers" in msg, msg
    assert "bad_pairs.jsonl:4: (record): missing key: non_preferred_output" in msg, msg
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}
    with pytest.raises(openai.BadRequestError) as e:  # examples given to a DPO job
        client.fine_tuning.jobs.create(model="smollm2-135m", training_file=sft.id, method=dpo)
    assert e.value.body["param"] == "training_file" and "not preference pairs" in e.value.body["message"]
    assert "sft.jsonl" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:  # pairs given to a supervised job
        client.fine_tuning.jobs.create(model="smollm2-135m", training_file=pairs.id)
    assert e.value.body["param"] == "training_file" and "method {'type': 'dpo'}" in e.value.body["message"]
    for method, param in [({"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}}, "method.dpo.hyperparameters.beta"),
                          ({"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 0}}},
                           "method.dpo.hyperparameters.n_epochs"),
                          ({"type": "reinforcement"}, "method.type")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.fine_tuning.jobs.create(model="smollm2-135m", training_file=pairs.id, method=method)
        assert e.value.body["param"] == param, e.value.body
    with pytest.raises(openai.BadRequestError) as e:  # only this server's fine-tuned models can be started from
        client.fine_tuning.jobs.create(model="ft:smollm2-135m::0123abcd", training_file=pairs.id, method=dpo)
    assert e.value.body["param"] == "model"
    assert client.fine_tuning.jobs.list().data == []  # no refused request left a job behind


@pytest.mark.slow
def test_sft_then_dpo_on_its_model(server, data):
    "OpenAI's recipe with the official client: SFT, then DPO with the SFT job's `ft:` model as `model`; chat with it."
    client = server
    sft_file = client.files.create(file=open(data/"sft.jsonl", "rb"), purpose="fine-tune")
    sft = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=sft_file.id, suffix="sft",
                                         method={"type": "supervised", "supervised": {"hyperparameters": {
                                             "n_epochs": 1, "batch_size": 8}}})
    sft = wait_for(client, sft.id)
    assert sft.status == "succeeded", sft.error
    pairs = client.files.create(file=open(data/"pairs.jsonl", "rb"), purpose="fine-tune")
    valid = client.files.create(file=open(data/"pairs_valid.jsonl", "rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=sft.fine_tuned_model, training_file=pairs.id, validation_file=valid.id,
                                         suffix="dpo", method={"type": "dpo", "dpo": {"hyperparameters": {
                                             "beta": 0.2, "n_epochs": 1, "batch_size": 8}}})
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2 and job.model == sft.fine_tuned_model
    job = wait_for(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:smollm2-135m:dpo:{job.id.split('-')[1][:8]}"  # the first base, as OpenAI names
    hp = job.method.dpo.hyperparameters
    assert (hp.beta, hp.n_epochs, hp.batch_size) == (0.2, 1, 8) and hp.learning_rate_multiplier == 1.0
    assert job.hyperparameters.n_epochs == 1 and job.trained_tokens > 0
    metrics = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    assert {m["step"] for m in metrics} == {1, 2} and all(m["total_steps"] == 2 for m in metrics)
    assert any("train_reward_accuracy" in m for m in metrics) and any("valid_loss" in m for m in metrics), metrics
    csv = client.files.content(job.result_files[0]).text.splitlines()
    assert [int(l.split(",")[0]) for l in csv[1:]] == [1, 2]
    assert {sft.fine_tuned_model, job.fine_tuned_model} <= {m.id for m in client.models.list()}
    r = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=4,
                                       messages=[{"role": "user", "content": "My parcel never arrived."}])
    assert r.model == job.fine_tuned_model and r.choices[0].message.content
