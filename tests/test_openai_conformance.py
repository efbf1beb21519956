"""Every `/v1` route we serve answers in the shapes of OpenAI's published OpenAPI document (`openai_spec.json`, pinned
by `tools/openai_spec.py`): a tour of each route's success and error answers, streaming chunks included, each body
checked against the document's schema (the rest of the suite's responses are checked too: `conftest.py`)."""
import json, os

import httpx, pytest

from helpers import tiny_models
from openai_conformance import check, spec
from finetune_kit.jobs import JobService
from finetune_kit.model_sources import MODEL_ALIASES
from finetune_kit.sample_data import make_support_tickets, write_jsonl
from finetune_kit.registry import ModelRegistry
from finetune_kit.server import ServerThread, create_app

pytestmark = pytest.mark.slow  # serves a (tiny) model
os.environ.setdefault("HF_HUB_OFFLINE", "1")
tiny = pytest.fixture(scope="module", autouse=True)(tiny_models)
ASK = [{"role": "user", "content": "Say hello."}]

@pytest.fixture(scope="module")
def http(tmp_path_factory):
    "A client of the server with chat (smollm2-135m, tiny) and jobs, that checks every JSON answer: (client, seen)."
    state = tmp_path_factory.mktemp("state")
    registry = ModelRegistry()
    svc = JobService(state, registry, models=list(MODEL_ALIASES))
    seen = []  # (route, status, problems) of each JSON answer

    def look(response):
        if not response.headers.get("content-type", "").startswith("application/json"): return
        response.read()
        rt, probs = check(response.request.method, response.request.url.path, response.status_code, response.json())
        if rt: seen.append((rt, response.status_code, probs))

    registry.add("smollm2-135m", "smollm2-135m")
    with ServerThread(create_app(registry, services=[svc])) as srv:
        with httpx.Client(base_url=srv.url + "/v1", timeout=120, event_hooks={"response": [look]}) as c:
            yield c, seen

def _stream_chunks(c: httpx.Client, body: dict) -> list[dict]:
    with c.stream("POST", "/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]

def test_every_route_answers_in_openai_shapes(http, tmp_path):
    c, seen = http
    # models
    c.get("/models")
    c.get("/models/smollm2-135m")
    c.get("/models/no-such-model")
    # chat: an answer, a stream (each chunk checked here), errors
    answer = c.post("/chat/completions", json={"model": "smollm2-135m", "messages": ASK, "max_tokens": 4})
    assert answer.status_code == 200
    chunks = _stream_chunks(c, {"model": "smollm2-135m", "messages": ASK, "max_tokens": 4, "stream": True,
                                "stream_options": {"include_usage": True}})
    chunks += _stream_chunks(c, {"model": "smollm2-135m", "messages": ASK, "max_tokens": 4, "stream": True, "n": 2,
                                 "logprobs": True, "top_logprobs": 2})
    c.post("/chat/completions", json={"model": "smollm2-135m", "messages": ASK, "max_tokens": 4, "n": 2,
                                      "logprobs": True, "top_logprobs": 2})
    for ch in chunks:
        rt, probs = check("POST", "/v1/chat/completions", 200, ch, "text/event-stream")
        seen.append((rt + " (stream chunk)", 200, probs))
    c.post("/chat/completions", json={"model": "no-such-model", "messages": ASK})
    c.post("/chat/completions", json={"model": "smollm2-135m", "messages": [{"role": "robot", "content": "x"}]})
    c.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    # files
    rows = make_support_tickets(12, seed=1)
    write_jsonl(rows, tmp_path/"train.jsonl")
    up = c.post("/files", files={"file": ("train.jsonl", (tmp_path/"train.jsonl").read_bytes())},
                data={"purpose": "fine-tune"})
    assert up.status_code == 200, up.text
    fid = up.json()["id"]
    c.get("/files")
    c.get(f"/files/{fid}")
    c.get("/files/file-nosuchfile")
    c.post("/files", files={"file": ("x.jsonl", b"{}\n")}, data={"purpose": "no-such-purpose"})
    # jobs: created, then cancelled at once (its worker need not train), listed, read, and errors
    job = c.post("/fine_tuning/jobs", json={"model": "smollm2-135m", "training_file": fid,
                                            "hyperparameters": {"n_epochs": 1, "learning_rate_multiplier": 1.0}})
    assert job.status_code == 200, job.text
    jid = job.json()["id"]
    c.post(f"/fine_tuning/jobs/{jid}/cancel")
    c.get("/fine_tuning/jobs", params={"limit": 5})
    c.get(f"/fine_tuning/jobs/{jid}")
    c.get(f"/fine_tuning/jobs/{jid}/events")
    c.get(f"/fine_tuning/jobs/{jid}/checkpoints")
    c.post(f"/fine_tuning/jobs/{jid}/pause")
    c.post(f"/fine_tuning/jobs/{jid}/resume")
    c.get("/fine_tuning/jobs/ftjob-nosuchjob")
    c.post("/fine_tuning/jobs", json={"model": "smollm2-135m", "training_file": "file-nosuchfile"})
    c.post("/fine_tuning/jobs", json={"model": "smollm2-135m"})
    c.delete(f"/files/{fid}")
    c.delete("/models/smollm2-135m")
    bad = [f"{rt} {st}: {'; '.join(p)}" for rt, st, p in seen if p]
    routes = {rt.split(" (")[0] for rt, _, _ in seen}
    print(f"{len(seen)} answers checked over {len(routes)} routes; quirks of the document handled: "
          f"{len(spec()['quirks'])}")
    assert not bad, "\n".join(bad)
    missing = set(spec()["routes"]) - routes - {"POST /chat/completions"}
    assert not missing, f"routes of the document never checked: {sorted(missing)}"
