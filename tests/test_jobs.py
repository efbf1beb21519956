"""The fine-tuning jobs API driven by the official `openai` client: the hosted workflow end to end, errors, cancel, and a
server killed mid-job; on the tiny model (the jobs train it)."""
import json, os, signal, subprocess, sys, threading, time
from pathlib import Path

import httpx, openai, psutil, pytest
from openai import OpenAI

from helpers import ROOT, cli_command, free_port, start_server, tiny_models, wait_for, wait_until_up
from finetune_kit.jobs import JobService
from finetune_kit.job_store import TERMINAL, JobStore
from finetune_kit.jobs_service import jobs_app
from finetune_kit import jobs_service
from finetune_kit.api_errors import APIError
from finetune_kit.model_sources import MODEL_ALIASES, NO_INSTALL_ENV, offline_models
from finetune_kit.sample_data import make_support_tickets, write_jsonl
from finetune_kit.registry import ModelRegistry
from finetune_kit.server import ServerThread, create_app

os.environ.setdefault("HF_HUB_OFFLINE", "1")
tiny = pytest.fixture(scope="module", autouse=True)(tiny_models)  # a job's life cycle is plumbing: the tiny model

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rows = make_support_tickets(48, seed=3)
    write_jsonl(rows[:40], d/"train.jsonl"); write_jsonl(rows[40:], d/"valid.jsonl")
    lines = (d/"train.jsonl").read_text().splitlines()
    bad = json.loads(lines[2]); bad["messages"][1]["role"] = "customer"
    lines[2] = json.dumps(bad); lines[5] = "{not json"
    (d/"bad.jsonl").write_text("\n".join(lines) + "\n")
    return d

@pytest.fixture(scope="module")
def api(tmp_path_factory):
    "The inference server in-process with the jobs API mounted, as `finetune-kit serve` runs it; (client, service, registry)."
    state = tmp_path_factory.mktemp("state")
    models = [*MODEL_ALIASES, "no-such-model"]  # an allowed name that does not resolve: a job that fails in its worker
    registry = ModelRegistry()
    # the operator opted in to downloads, so the name is accepted; the worker finds it nowhere (HF_HUB_OFFLINE is set)
    svc = JobService(state, registry, models=models, allow_model_downloads=True)
    with ServerThread(create_app(registry, services=[svc])) as srv:
        yield OpenAI(base_url=srv.url + "/v1", api_key="local", max_retries=0), svc, registry

@pytest.fixture(scope="module")
def finished(api, data):
    "The hosted workflow: upload, create, poll to success. (job, training file, validation file)"
    client, svc, _ = api
    train = client.files.create(file=open(data/"train.jsonl", "rb"), purpose="fine-tune")
    valid = client.files.create(file=open(data/"valid.jsonl", "rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=train.id, validation_file=valid.id, suffix="tickets",
                                         hyperparameters={"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": "auto"})
    assert job.status == "validating_files" and job.fine_tuned_model is None
    t0 = time.time()
    job = wait_for(client, job.id)
    print(f"job finished in {time.time() - t0:.0f}s")
    assert job.status == "succeeded", job.error
    return job, train, valid


@pytest.mark.slow
def test_upload_shapes(api, data, finished):
    client, _, _ = api
    job, train, _ = finished
    assert train.object == "file" and train.purpose == "fine-tune" and train.status == "processed" and train.filename == "train.jsonl"
    assert train.bytes == (data/"train.jsonl").stat().st_size
    assert client.files.retrieve(train.id) == train
    assert client.files.content(train.id).content == (data/"train.jsonl").read_bytes()
    listed = [f.id for f in client.files.list()]
    assert train.id in listed and job.result_files[0] in listed
    assert [f.id for f in client.files.list(purpose="fine-tune-results")] == job.result_files


@pytest.mark.slow
def test_job_succeeded(api, finished):
    client, _, registry = api
    job, train, valid = finished
    assert job.fine_tuned_model == f"ft:smollm2-135m:tickets:{job.id.split('-')[1][:8]}"
    assert job.fine_tuned_model in registry.names()
    assert job.finished_at >= job.created_at and job.trained_tokens > 0 and job.error is None
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 8 and job.hyperparameters.learning_rate_multiplier == 1.0
    assert job.training_file == train.id and job.validation_file == valid.id
    assert any(j.id == job.id for j in client.fine_tuning.jobs.list(limit=5))
    csv = client.files.content(job.result_files[0]).text.splitlines()
    assert csv[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert [int(l.split(",")[0]) for l in csv[1:]] == [1, 2, 3, 4, 5]  # 40 examples, batch 8, one epoch


@pytest.mark.slow
def test_events_and_checkpoints(api, finished):
    client, _, _ = api
    job = finished[0]
    first = client.fine_tuning.jobs.list_events(job.id, limit=4)
    assert len(first.data) == 4 and first.has_more
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=4))  # the client follows `after` across pages
    assert len(events) == len({e.id for e in events}) > 10
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)  # newest first
    assert events[0].message == "The job has successfully completed"
    assert events[-1].message.startswith("Created fine-tuning job")
    metrics = [e.data for e in events if e.type == "metrics"]
    assert {"step", "total_steps", "train_loss"} <= set(metrics[-1])
    assert any("valid_loss" in m and "valid_mean_token_accuracy" in m for m in metrics)
    assert all(m["total_steps"] == 5 for m in metrics)
    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert ckpts and ckpts[0].step_number == 5 and [c.step_number for c in ckpts] == sorted((c.step_number for c in ckpts), reverse=True)
    assert ckpts[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-5"
    assert ckpts[0].metrics.valid_loss is not None and ckpts[0].metrics.train_loss is not None


@pytest.mark.slow
def test_chat_with_fine_tuned_model(api, finished):
    client = api[0]
    job = finished[0]
    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    r = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=8,
                                       messages=[{"role": "user", "content": "My parcel never arrived and tracking is blank."}])
    assert r.model == job.fine_tuned_model and r.choices[0].message.content


@pytest.mark.slow
def test_bad_upload_gets_located_errors(api, data):
    client = api[0]
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=open(data/"bad.jsonl", "rb"), purpose="fine-tune")
    err = e.value.body
    assert err["param"] == "file" and err["code"] == "invalid_file"
    assert "bad.jsonl:3: messages[1].role: unknown role: 'customer'" in err["message"], err["message"]
    assert "bad.jsonl:6: (line): invalid JSON" in err["message"]
    assert str(api[1].store.dir) not in err["message"]  # no server paths in messages
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=open(data/"train.jsonl", "rb"), purpose="batch")
    assert not list((api[1].store.dir/"files").glob(".*.part"))  # refused uploads leave nothing behind


def test_upload_cap(tmp_path, data):
    with ServerThread(jobs_app(JobService(tmp_path, max_upload_bytes=2000))) as srv:
        base = srv.url + "/v1"
        r = httpx.post(f"{base}/files", files={"file": ("train.jsonl", (data/"train.jsonl").read_bytes())}, data={"purpose": "fine-tune"})
        assert r.status_code == 413 and "limit is 2,000 bytes" in r.json()["error"]["message"]
        r = httpx.post(f"{base}/files", files={"file": ("train.jsonl", b"x" * 2500)}, data={"purpose": "fine-tune"})  # over by less than the headers' allowance
        assert r.status_code == 413
        def chunks():  # no Content-Length: only the byte counter while streaming can stop it
            yield b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--b\r\n"
            yield b"Content-Disposition: form-data; name=\"file\"; filename=\"x.jsonl\"\r\n\r\n"
            for _ in range(100): yield b"x" * 10_000
        r = httpx.post(f"{base}/files", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413
        assert not list((tmp_path/"files").iterdir())


@pytest.mark.slow
def test_bad_requests_and_unknown_ids(api, finished):
    client = api[0]
    train = finished[1]
    for bad_id in ("file-../../jobs.db", "../jobs.db", "file-0123456789abcdef01234567", "ftjob-x"):
        with pytest.raises(openai.NotFoundError): client.files.retrieve(bad_id)
        with pytest.raises(openai.NotFoundError): client.files.content(bad_id)
        with pytest.raises(openai.NotFoundError): client.files.delete(bad_id)
    for bad_id in ("ftjob-0123456789abcdef01234567", "ftjob-..%2F..", "file-0123456789abcdef01234567"):
        with pytest.raises(openai.NotFoundError): client.fine_tuning.jobs.retrieve(bad_id)
        with pytest.raises(openai.NotFoundError): client.fine_tuning.jobs.list_events(bad_id)
        with pytest.raises(openai.NotFoundError): client.fine_tuning.jobs.cancel(bad_id)
    cases = [(dict(model="/etc/passwd"), "model"), (dict(model="../runs/x"), "model"),
             (dict(training_file="file-0123456789abcdef01234567"), "training_file"),
             (dict(hyperparameters={"n_epochs": 0}), "hyperparameters.n_epochs"),
             (dict(hyperparameters={"batch_size": "big"}), "hyperparameters.batch_size"),
             (dict(method={"type": "dpo", "dpo": {}}), "training_file"),  # chat examples, not preference pairs
             (dict(method={"type": "reinforcement"}), "method.type"),
             (dict(suffix="a:b"), "suffix"), (dict(seed=-1), "seed")]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.fine_tuning.jobs.create(**{"model": "smollm2-135m", "training_file": train.id, **extra})
        assert e.value.body["param"] == param, (extra, e.value.body)
    with pytest.raises(openai.ConflictError):  # a finished job cannot be cancelled
        client.fine_tuning.jobs.cancel(finished[0].id)


@pytest.mark.slow
def test_cancel_stops_the_worker(api, finished):
    client, svc, _ = api
    job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=finished[1].id)
    wait_for(client, job.id, ("running",), timeout=60)
    with svc._lock: pid = svc.store.get("jobs", job.id)["pid"]  # set with the launch, under the service's lock
    assert psutil.pid_exists(pid)
    t0 = time.time()
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert time.time() - t0 < 10
    time.sleep(1.5)  # the scheduler does not overwrite a cancel
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "cancelled" and job.finished_at and job.fine_tuned_model is None
    assert list(client.fine_tuning.jobs.list_events(job.id, limit=1))[0].message == "Fine-tuning job cancelled"
    # a queued job behind a running one cancels too
    a = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=finished[1].id)
    b = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=finished[1].id)
    wait_for(client, a.id, ("running",), timeout=60)
    assert wait_for(client, b.id, ("queued", "running"), timeout=10).status == "queued"  # behind a, once validated
    assert client.fine_tuning.jobs.cancel(b.id).status == "cancelled"
    assert client.fine_tuning.jobs.cancel(a.id).status == "cancelled"


@pytest.mark.slow
def test_training_failure_is_reported(api, finished):
    client = api[0]
    job = client.fine_tuning.jobs.create(model="no-such-model", training_file=finished[1].id)
    job = wait_for(client, job.id, timeout=300)
    assert job.status == "failed" and job.error.code == "invalid_model" and job.error.param == "model"
    assert "could not find model 'no-such-model'" in job.error.message
    assert list(client.fine_tuning.jobs.list_events(job.id, limit=1))[0].level == "error"


def kill9(p: subprocess.Popen):
    try: os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError: pass
    p.wait()

def consistent(state: Path) -> None:
    "No dangling rows: every file row has its bytes, every checkpoint row its folder, no job runs without a worker."
    store = JobStore(state)
    for f in store.query("SELECT id FROM files"): assert store.file_path(f["id"]).is_file(), f
    for c in store.query("SELECT job_id, step FROM checkpoints"):
        assert (store.job_dir(c["job_id"]).run/"checkpoints"/f"checkpoint-{c['step']}").is_dir(), c
    assert not [p for p in (state/"files").iterdir() if p.name.endswith(".part")]

@pytest.mark.slow
def test_worker_and_server_killed_mid_job(tmp_path, data):
    "kill -9 the worker after a checkpoint, then the server after a later one; restart on the same port at once."
    state, log = tmp_path/"state", tmp_path/"server.log"
    # 3 epochs of 10 steps: on the tiny model a step takes a fraction of a second, and the kills must land mid-job
    smoke = {"FINETUNE_KIT_MAX_STEPS": "30", "OMP_NUM_THREADS": "1"}
    p, client, port = start_server(state, log, **smoke)
    try:
        f = client.files.create(file=open(data/"train.jsonl", "rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=f.id, hyperparameters={"n_epochs": 3, "batch_size": 4})
        steps = lambda: [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
        deadline = time.time() + 300
        while not steps(): assert time.time() < deadline, "no checkpoint in 300 s"; time.sleep(0.2)
        worker = [c for c in psutil.Process(p.pid).children(recursive=True) if "worker" in " ".join(c.cmdline())]
        assert worker
        first = max(steps())
        for w in worker: w.kill()  # out of memory, or a user's kill -9
        said = lambda text: any(e.message.startswith(text) for e in client.fine_tuning.jobs.list_events(job.id, limit=100))
        deadline = time.time() + 60
        while not said("The training process stopped"): assert time.time() < deadline; time.sleep(0.2)  # noticed
        deadline = time.time() + 300
        # the next attempt's own checkpoint, while it runs: the server is killed mid-job, not at its end
        while max(steps(), default=0) <= first or client.fine_tuning.jobs.retrieve(job.id).status != "running":
            assert time.time() < deadline and client.fine_tuning.jobs.retrieve(job.id).status not in TERMINAL
            time.sleep(0.2)
        workers = psutil.Process(p.pid).children(recursive=True)
        kill9(p)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, "a worker outlived its server"
        assert JobStore(state).get("jobs", job.id)["status"] == "running"  # what a crash leaves; the next start repairs it
        p, client, _ = start_server(state, log, port, **smoke)  # the same port, at once
        job = wait_for(client, job.id, timeout=400)
        assert job.status == "succeeded", job.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        said = "\n".join(m for m in messages if not m.startswith("Step "))
        assert any(m.startswith("The training process stopped (killed by signal 9); resuming from the checkpoint at step")
                   for m in messages), said
        assert any(m.startswith("The server stopped while the job was running; resuming from the checkpoint at step")
                   for m in messages), said
        assert sum(m.startswith("Fine-tuning job resumed from step") for m in messages) == 2, said
        csv = client.files.content(job.result_files[0]).text.splitlines()
        assert [int(l.split(",")[0]) for l in csv[1:]] == list(range(1, 31)), (csv, said)
        kept = sorted((state/"jobs"/job.id/"run"/"checkpoints").iterdir())
        listed = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
        assert len(listed) == 2 and listed[0] == 30 > listed[1]  # --keep-checkpoints 2
        assert len(kept) == 2 and not any((k/"optimizer.pt").exists() for k in kept)  # weights only, once ended
        consistent(state)
    finally:
        kill9(p)

@pytest.mark.slow
def test_upload_in_bounded_memory_and_killed_mid_upload(tmp_path):
    "A 20 MiB upload is checked in a streaming pass (peak RSS stays low); a server killed mid-upload leaves nothing."
    state, log = tmp_path/"state", tmp_path/"server.log"
    big = tmp_path/"big.jsonl"
    rows = (ROOT/"finetune_kit"/"samples"/"support_tickets.jsonl").read_bytes()
    big.write_bytes(rows * (20 * 2**20 // len(rows) + 1))
    p, client, port = start_server(state, log)
    try:
        proc, peak = psutil.Process(p.pid), 0
        base = proc.memory_info().rss
        stop = threading.Event()
        def sample():
            nonlocal peak
            while not stop.is_set(): peak = max(peak, proc.memory_info().rss); time.sleep(0.02)
        t = threading.Thread(target=sample); t.start()
        try: f = client.files.create(file=open(big, "rb"), purpose="fine-tune")
        finally: stop.set(); t.join()
        growth = (peak - base) / 2**20
        print(f"upload of {big.stat().st_size / 2**20:.0f} MiB: server RSS {base / 2**20:.0f} MiB, peak +{growth:.0f} MiB")
        assert f.bytes == big.stat().st_size and growth < 80, growth  # loading it whole took +223 MiB for 20 MiB
        # kill -9 while the server writes and checks a second upload
        def send():
            try: httpx.post(f"http://127.0.0.1:{port}/v1/files", data={"purpose": "fine-tune"},
                            files={"file": ("big.jsonl", open(big, "rb"))}, timeout=60)
            except httpx.HTTPError: pass  # the server is gone mid-request: that is the test
        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.time() + 60
        while not list((state/"files").glob(".*.part")): assert time.time() < deadline; time.sleep(0.005)
        kill9(p)
        sender.join()
        assert list((state/"files").glob(".*.part")), "the kill came too late to test anything"
        p, client, _ = start_server(state, log, port)  # the same port, at once
        assert [x.id for x in client.files.list()] == [f.id]
        consistent(state)
    finally:
        kill9(p)


@pytest.mark.slow
def test_cli_serve_with_jobs_only(tmp_path, data):
    """`finetune-kit serve --jobs-dir D` with no SOURCE: the openai client lists the base models it can fine-tune and an
    OpenAI name mapped with --model-alias, chats with that name, uploads; then SIGTERM stops it cleanly."""
    port, state = free_port(), tmp_path/"jobs"
    p = subprocess.Popen([*cli_command(), "serve", "--port", str(port), "--jobs-dir", str(state), "--max-upload-mib", "1",
                          "--model-alias", f"{OPENAI_NAME}=smollm2-135m"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_until_up(p, f"http://127.0.0.1:{port}/health", timeout=120)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local", max_retries=0)
        listed = client.models.list().data
        assert sorted(m.id for m in listed) == sorted([*offline_models(), OPENAI_NAME])
        assert {(m.object, m.owned_by) for m in listed} == {("model", "finetune_kit")}
        r = client.chat.completions.create(model=OPENAI_NAME, max_tokens=3, messages=[{"role": "user", "content": "hi"}])
        assert r.model == OPENAI_NAME and r.choices[0].message.content is not None  # answered by smollm2-135m
        f = client.files.create(file=open(data/"train.jsonl", "rb"), purpose="fine-tune")
        assert [x.id for x in client.files.list()] == [f.id] and f.bytes == (data/"train.jsonl").stat().st_size
        assert (state/"files"/f.id).read_bytes() == (data/"train.jsonl").read_bytes()
        with pytest.raises(openai.APIStatusError, match="limit is 1,048,576 bytes"):  # --max-upload-mib reached the service
            client.files.create(file=("big.jsonl", b"x" * (2**20 + 1)), purpose="fine-tune")
        with pytest.raises(openai.NotFoundError): client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    finally:
        p.terminate()
        try: out = p.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired: p.kill(); out = p.communicate()[0]
    assert "fine-tuning jobs API on: state in" in out and f"serving {OPENAI_NAME} at" in out, out[-3000:]
    assert "Application shutdown complete" in out and "Traceback" not in out, out[-3000:]
    JobService(state).stop()  # the stopped server released the folder


OPENAI_NAME = "gpt-4o-mini-2024-07-18"

def test_jobs_take_only_models_here_and_openai_names(tmp_path, data, monkeypatch):
    """Issue 33: a job naming a model whose weights are not on this server is refused (400, param model, naming the
    option that allows downloads), and its worker starts offline and never runs pip. Issue 34: an OpenAI model name the
    operator mapped (--model-alias) is answered by the local model and trains it, and the job says so."""
    registry = ModelRegistry("cpu")
    svc = JobService(tmp_path/"state", registry, max_concurrent_jobs=0, model_aliases={OPENAI_NAME: "smollm2-135m"})
    registry.add_alias(OPENAI_NAME, "smollm2-135m")  # what `serve(model_aliases=...)` does
    far = [m for m in MODEL_ALIASES if m not in offline_models()]
    with ServerThread(create_app(registry, services=[svc])) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="local", max_retries=0)
        assert {m.id for m in client.models.list()} == {*offline_models(), OPENAI_NAME}
        r = client.chat.completions.create(model=OPENAI_NAME, max_tokens=3, messages=[{"role": "user", "content": "hi"}])
        assert r.model == OPENAI_NAME  # as OpenAI echoes the name the client sent
        f = client.files.create(file=open(data/"train.jsonl", "rb"), purpose="fine-tune")
        for name in far[:2]:
            with pytest.raises(openai.BadRequestError) as e: client.fine_tuning.jobs.create(model=name, training_file=f.id)
            assert e.value.body["param"] == "model" and "--allow-model-downloads" in e.value.body["message"], e.value.body
        job = client.fine_tuning.jobs.create(model=OPENAI_NAME, training_file=f.id)
        assert job.model == "smollm2-135m"  # what is really trained
        events = list(client.fine_tuning.jobs.list_events(job.id))
        assert events[-1].message.startswith(f"{OPENAI_NAME} is smollm2-135m on this server"), events[-1]
        assert wait_for(client, job.id, ("queued",), timeout=30).status == "queued"
        seen = {}
        class Launched(Exception): pass
        def popen(cmd, **kw):
            seen.update(kw["env"])
            raise Launched
        monkeypatch.setattr(jobs_service.subprocess, "Popen", popen)  # the worker's environment, without training
        with pytest.raises(Launched): svc._launch(svc.store.get("jobs", job.id))
        assert (seen["HF_HUB_OFFLINE"], seen[NO_INSTALL_ENV]) == ("1", "1")
        assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    if far:  # with the operator's opt-in the same name passes the model check (and fails at the made-up file)
        opted = JobService(tmp_path/"opted", max_concurrent_jobs=0, allow_model_downloads=True)
        with pytest.raises(APIError) as e: opted.create_job({"model": far[0], "training_file": "file-" + "0" * 24})
        assert e.value.param == "training_file", e.value.message
@pytest.mark.slow
def test_delete_file_model_and_job(api, finished):
    "Deleting a file removes the server's copies of it; a fine-tuned model and an ended job can be deleted whole."
    client, svc, registry = api
    job, train, _ = finished
    run, base = svc.store.job_dir(job.id).run, str(client.base_url).rstrip("/")
    assert list((run/"data").glob("*.jsonl"))
    assert client.files.delete(train.id).deleted
    assert not list((run/"data").glob("*.jsonl")) and not svc.store.file_path(train.id).exists()
    assert client.models.delete(job.fine_tuned_model).deleted
    assert job.fine_tuned_model not in [m.id for m in client.models.list()] and not (run/"adapter").exists()
    with pytest.raises(openai.NotFoundError): client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError): client.models.delete("smollm2-135m")  # only fine-tuned models
    r = httpx.delete(f"{base}/fine_tuning/jobs/{job.id}")
    assert r.status_code == 200 and r.json() == {"id": job.id, "object": "fine_tuning.job", "deleted": True}
    with pytest.raises(openai.NotFoundError): client.fine_tuning.jobs.retrieve(job.id)
    assert not svc.store.job_dir(job.id).path.exists() and job.result_files[0] not in [f.id for f in client.files.list()]
    assert not svc.store.query("SELECT * FROM events WHERE job_id = ?", job.id)


@pytest.mark.slow
def test_a_job_that_ended_is_not_lost_by_a_stop(tmp_path, data):
    """Issue 33: a worker that wrote its outcome before the server stopped is recorded as succeeded, though the
    scheduler had not yet seen it exit (it went back to the queue, and its next attempt failed: "finished already"); a
    run trained to its end whose worker was stopped before writing the outcome ends the next attempt without training."""
    registry = ModelRegistry()
    svc = JobService(tmp_path/"state", registry, poll_seconds=3600)  # the scheduler wakes only when a request asks
    with ServerThread(create_app(registry, services=[svc])) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="local", max_retries=0)
        f = client.files.create(file=open(data/"train.jsonl", "rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=f.id,
                                             hyperparameters={"n_epochs": 1, "batch_size": 8})
        jd, deadline = svc.store.job_dir(job.id), time.time() + 300
        while not jd.outcome.is_file() or svc._procs[job.id].poll() is None:  # ended; no request wakes the scheduler
            assert time.time() < deadline, "the job did not end"
            time.sleep(0.2)
        assert svc.store.get("jobs", job.id)["status"] == "running"  # the stage under test: ended, not yet recorded
        svc.stop()
        row = svc.store.get("jobs", job.id)
        assert row["status"] == "succeeded" and row["fine_tuned_model"], row
    # the other stage: summary.json written (the run is complete), the worker stopped before its outcome
    metrics = (jd.run/"metrics.jsonl").read_bytes()
    jd.outcome.unlink()
    JobStore(tmp_path/"state").update("jobs", job.id, status="queued", fine_tuned_model=None, finished_at=None)
    registry = ModelRegistry()
    svc = JobService(tmp_path/"state", registry)
    with ServerThread(create_app(registry, services=[svc])) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="local", max_retries=0)
        done = wait_for(client, job.id, timeout=120)
        assert done.status == "succeeded" and done.fine_tuned_model, done.error
    assert (jd.run/"metrics.jsonl").read_bytes() == metrics  # nothing trained again


def test_ended_jobs_keep_what_keep_checkpoints_says_now(tmp_path):
    "Issue 33: a job that ended under --keep-checkpoints 3 keeps only the newest one, weights only, once the server starts with 1."
    from finetune_kit.job_store import new_id, now
    from finetune_kit.runs import COMPLETE
    store = JobStore(tmp_path)
    jid = new_id("ftjob")
    store.insert("jobs", dict(id=jid, created_at=now(), model="smollm2-135m", status="succeeded", hyperparameters={}))
    ckpts = store.job_dir(jid).run/"checkpoints"
    for step in (1, 2, 3):
        d = ckpts/f"checkpoint-{step}"
        d.mkdir(parents=True)
        for f in ("adapter_model.safetensors", "optimizer.pt", COMPLETE): (d/f).write_bytes(b"x" * 10)
        store.insert("checkpoints", dict(id=new_id("ftckpt"), job_id=jid, created_at=now(), step=step, metrics={}))
    svc = JobService(tmp_path, keep_checkpoints=1, max_concurrent_jobs=0)
    svc.start()
    svc.stop()
    assert [p.name for p in ckpts.iterdir()] == ["checkpoint-3"]
    assert sorted(p.name for p in (ckpts/"checkpoint-3").iterdir()) == sorted(["adapter_model.safetensors", COMPLETE])
    assert [r["step"] for r in store.query("SELECT step FROM checkpoints WHERE job_id = ?", jid)] == [3]
