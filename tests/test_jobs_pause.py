"""Pause and resume of a fine-tuning job through the official client: paused while training, the job saves a
checkpoint where it stands and waits; resumed, it continues from that checkpoint and succeeds, with every step trained
once. On the tiny model (a job's life cycle is plumbing)."""
import os, time

import openai, pytest
from openai import OpenAI

from helpers import tiny_models, wait_for
from finetune_kit.jobs import JobService
from finetune_kit.model_sources import MODEL_ALIASES
from finetune_kit.registry import ModelRegistry
from finetune_kit.sample_data import make_support_tickets, write_jsonl
from finetune_kit.server import ServerThread, create_app

pytestmark = pytest.mark.slow
os.environ.setdefault("HF_HUB_OFFLINE", "1")
tiny = pytest.fixture(scope="module", autouse=True)(tiny_models)

@pytest.fixture(scope="module")
def client(tmp_path_factory):
    registry = ModelRegistry()
    svc = JobService(tmp_path_factory.mktemp("state"), registry, models=list(MODEL_ALIASES))
    with ServerThread(create_app(registry, services=[svc])) as srv:
        yield OpenAI(base_url=srv.url + "/v1", api_key="local", max_retries=0)

def test_pause_then_resume_continues_from_the_pause(client, tmp_path):
    write_jsonl(make_support_tickets(64, seed=2), tmp_path/"train.jsonl")
    f = client.files.create(file=open(tmp_path/"train.jsonl", "rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=f.id,
                                         method={"type": "supervised", "supervised": {"hyperparameters": {
                                             "n_epochs": 15, "batch_size": 8}}})
    deadline = time.time() + 300
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=50)):
        assert time.time() < deadline and client.fine_tuning.jobs.retrieve(job.id).status not in ("failed", "succeeded")
        time.sleep(0.2)
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    with pytest.raises(openai.ConflictError):  # a paused job is paused once
        client.fine_tuning.jobs.pause(job.id)
    deadline = time.time() + 120
    while not (said := [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=50)
                        if "paused at step" in e.message]):
        assert time.time() < deadline, "the worker did not save its pause checkpoint"
        time.sleep(0.2)
    step = int(said[0].split("paused at step ")[1].split(";")[0])
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    assert step in [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status in ("queued", "running")
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert f"Fine-tuning job resumed from step {step}" in messages
    assert any(m.startswith("Training started:") and f"from step {step}" in m for m in messages)
    with pytest.raises(openai.ConflictError):  # an ended job cannot be paused or resumed
        client.fine_tuning.jobs.resume(job.id)
