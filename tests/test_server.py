"`finetune-kit serve` as users meet it: a subprocess on loopback, the official openai client, bad requests, many clients."
import json, os, subprocess
from concurrent.futures import ThreadPoolExecutor
import httpx, pytest
import openai
from helpers import cli_command, free_port, run_cli, wait_until_up

pytestmark = pytest.mark.slow  # the whole file loads the model, trains or serves

MODEL, KEY, LIMIT = "smollm2-135m", "test-key-123", 256
ASK = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]

@pytest.fixture(scope="module")
def server():
    "Two names served from one process, chat only (--no-jobs); the API key comes from the environment."
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "FINETUNE_KIT_API_KEY": KEY}
    p = subprocess.Popen([*cli_command(), "serve", MODEL, "base=smollm2-135m", "--port", str(port), "--max-tokens-limit", str(LIMIT),
                          "--max-body-bytes", "100000", "--no-jobs"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(p, url + "/health")
    yield url
    p.terminate()
    try: p.wait(30)
    except subprocess.TimeoutExpired: p.kill()

@pytest.fixture(scope="module")
def client(server): return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)

def post(server, body, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server + "/v1/chat/completions", json=body, headers=headers, timeout=120, **kw)

def test_openai_client_lists_models_completes_and_streams(client):
    assert sorted(m.id for m in client.models.list()) == ["base", MODEL]
    done = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=48)
    c = done.choices[0]
    assert done.object == "chat.completion" and c.message.role == "assistant" and "Paris" in c.message.content
    assert c.finish_reason == "stop"  # the end-of-turn token ended it, well before max_tokens
    u = done.usage
    assert u.prompt_tokens > 10 and 0 < u.completion_tokens < 48 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=48, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == c.message.content
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].usage.completion_tokens == u.completion_tokens

def test_max_tokens_stop_strings_and_seed(client):
    short = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=3)
    assert (short.choices[0].finish_reason, short.usage.completion_tokens) == ("length", 3)
    full = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=48).choices[0].message.content
    stop = "Paris"
    cut = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=48, stop=[stop, "zzz"])
    assert cut.choices[0].message.content == full[:full.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=48, stop=stop, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == full[:full.index(stop)]
    sample = lambda seed: client.chat.completions.create(model="base", messages=ASK, temperature=1.0, top_p=0.95, seed=seed,
                                                         max_tokens=16).choices[0].message.content
    assert sample(7) == sample(7)

def test_bad_requests_get_openai_errors(server, client):
    with pytest.raises(openai.NotFoundError, match="does not exist"): client.chat.completions.create(model="gpt-5", messages=ASK)
    with pytest.raises(openai.BadRequestError, match="at most 256"): client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=10_000)
    with pytest.raises(openai.AuthenticationError): openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0).models.list()
    cases = {"bad JSON": (dict(content=b'{"model": '), 400, "invalid_json"),
             "wrong type": (dict(json={"model": MODEL, "messages": ASK, "temperature": "hot"}), 400, "invalid_request"),
             "messages not a list": (dict(json={"model": MODEL, "messages": "hi"}), 400, "invalid_request"),
             "role unknown": (dict(json={"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}), 400, "invalid_request"),
             "too long for the context": (dict(json={"model": MODEL, "messages": [{"role": "user", "content": "hi " * 9000}]}), 400, "context_length_exceeded"),
             "body too large": (dict(json={"model": MODEL, "messages": [{"role": "user", "content": "x" * 200_000}]}), 413, "request_too_large")}
    for name, (kw, status, code) in cases.items():
        r = httpx.post(server + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"}, timeout=60, **kw)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (name, r.text)
        assert r.json()["error"]["message"] and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert post(server, {"model": MODEL, "messages": ASK}, key=None).status_code == 401
    assert httpx.get(server + "/health").json() == {"status": "ok", "models": ["base", MODEL]}  # /health needs no key
    assert httpx.get(server + "/v1/files", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404  # --no-jobs: no jobs API

def test_many_clients_and_a_vanishing_one(server, client):
    "8 clients x 3 requests on two models, streamed and not, while one client drops its stream: no errors, the server stays up."
    with httpx.stream("POST", server + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                      json={"model": MODEL, "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
                            "max_tokens": LIMIT, "stream": True}) as r:
        assert next(r.iter_lines()).startswith("data: ")  # read one event, then hang up
    def one(i):
        kw = dict(model=(MODEL, "base")[i % 2], messages=[{"role": "user", "content": f"Say the number {i}."}], max_tokens=8, temperature=0)
        if i % 3: return client.chat.completions.create(**kw).choices[0].message.content
        return "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(stream=True, **kw))
    with ThreadPoolExecutor(8) as ex: replies = list(ex.map(one, range(24)))
    assert len(replies) == 24 and all(isinstance(r, str) for r in replies)
    assert httpx.get(server + "/health").status_code == 200

def test_cli_errors_are_one_line():
    for args, needle in ((["serve", "/no/such/model", "--port", "0", "--no-jobs"], "could not find model"),
                         (["serve", "smollm2-135m", "--port", "70000"], "between 0 and 65535"),
                         (["serve", "--no-jobs"], "nothing to serve"),
                         (["serve", "--max-concurrent-jobs", "0"], "give a positive number"),
                         (["serve", "--max-batch", "0"], "--max-batch 0: give a positive number"),
                         (["serve", "--prefix-cache-mb", "-1"], "--prefix-cache-mb -1.0: give 0 or more")):
        r = run_cli(*args, env={"HF_HUB_OFFLINE": "1"}, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and needle in r.stderr, (args, r.stderr[-2000:])

# Continuous batching, in-process: requests queued while the weights are held start in one batch when they are let go.
import threading
from finetune_kit.api_errors import APIError
from finetune_kit.engine import generate_reply, queue_reply
from finetune_kit.registry import ModelRegistry
from finetune_kit.server import ServerThread, create_app

GREEDY = dict(max_tokens=24, max_tokens_limit=LIMIT, temperature=0.0, top_p=1.0, stop=[], seed=None)
chat = lambda text: [{"role": "user", "content": text}]

@pytest.fixture(scope="module")
def reg():
    r = ModelRegistry("cpu")
    r.add(MODEL, MODEL)
    r.get(MODEL)
    return r

def together(reg, jobs: list[tuple[list, dict, dict]]) -> list:
    "Results of `jobs` ([(messages, gen, keywords of queue_reply)]) started in one batch; an error is returned, not raised."
    w = reg._weights_of(reg.entry(MODEL))
    with w.lock:
        futures = [queue_reply(reg, MODEL, m, g, kw.pop("cancel", threading.Event()), **kw) for m, g, kw in jobs]
    return [f.exception(timeout=300) or f.result() for f in futures]

def alone(reg, messages, gen) -> dict:
    with reg.use(MODEL) as (m, t): return generate_reply(m, t, messages, **gen)

ASKS = ["What is the capital of France? One word.", "Name a colour.", "Explain how a rainbow forms, step by step.", "hi"]

def test_batched_greedy_replies_equal_one_at_a_time(reg):
    one_by_one = [alone(reg, chat(a), GREEDY) for a in ASKS]
    assert together(reg, [(chat(a), GREEDY, {}) for a in ASKS]) == one_by_one  # text, finish_reason, token counts
    assert reg._weights_of(reg.entry(MODEL)).scheduler.widest >= len(ASKS)

def test_seeded_sample_is_the_same_alone_and_in_a_batch(reg):
    seeded = dict(GREEDY, temperature=1.0, top_p=0.9, seed=11)
    solo = together(reg, [(chat(ASKS[2]), seeded, {})])[0]
    mixed = together(reg, [(chat(ASKS[0]), GREEDY, {}), (chat(ASKS[2]), seeded, {}), (chat(ASKS[1]), dict(seeded, seed=5), {})])
    assert mixed[1] == solo

def test_stop_strings_max_tokens_and_errors_per_request_in_one_batch(reg):
    full = alone(reg, ASK, dict(GREEDY, max_tokens=48))["text"]
    short, cut, whole, too_long = together(reg, [(ASK, dict(GREEDY, max_tokens=3), {}), (ASK, dict(GREEDY, max_tokens=48, stop=["Paris"]), {}),
                                                 (ASK, dict(GREEDY, max_tokens=48), {}), (chat("hi " * 9000), GREEDY, {})])
    assert (short["finish_reason"], short["completion_tokens"]) == ("length", 3)
    assert (cut["text"], cut["finish_reason"]) == (full[:full.index("Paris")], "stop")
    assert whole["text"] == full
    assert isinstance(too_long, APIError) and too_long.code == "context_length_exceeded"

def test_streamed_plain_and_cancelled_requests_share_a_batch(reg):
    story = chat("Write a very long story about a dragon.")
    expected = [alone(reg, chat(a), GREEDY) for a in ASKS[:2]]
    pieces, hang_up = [], threading.Event()
    def on_text(s):
        pieces.append(s)
        if len(pieces) == 3: hang_up.set()  # the client of the story goes away after three pieces
    streamed, plain, gone = together(reg, [(chat(ASKS[0]), GREEDY, dict(on_text=(got := []).append)), (chat(ASKS[1]), GREEDY, {}),
                                           (story, dict(GREEDY, max_tokens=200), dict(on_text=on_text, cancel=hang_up))])
    assert [streamed, plain] == expected and "".join(got) == streamed["text"]
    assert gone["completion_tokens"] < 20  # it left the batch soon after its client did

def test_batched_server_answers_the_openai_client(reg):
    with ServerThread(create_app(reg, max_tokens_limit=LIMIT)) as srv:
        oa = openai.OpenAI(base_url=srv.url + "/v1", api_key="-", max_retries=0, timeout=120)
        def ask(i):
            kw = dict(model=MODEL, messages=chat(ASKS[i % 2]), temperature=0, max_tokens=24)
            if i % 2: return oa.chat.completions.create(**kw).choices[0].message.content
            return "".join(c.choices[0].delta.content or "" for c in oa.chat.completions.create(stream=True, **kw))
        with ThreadPoolExecutor(4) as ex: replies = list(ex.map(ask, range(4)))
    expected = [alone(reg, chat(ASKS[i % 2]), GREEDY)["text"] for i in range(2)]
    assert replies == expected * 2

# The prefix cache: the shared system prompt's KV is computed once per model and adapter, and changes no reply.
@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    "A run folder whose adapter has random LoRA weights (init_lora_weights=False): its replies are not the base model's."
    import torch
    from peft import LoraConfig, get_peft_model
    from finetune_kit.config import FinetuneConfig, save_config
    from finetune_kit.model import load_model
    d = tmp_path_factory.mktemp("lora")/"run"
    model, tok = load_model(MODEL, "cpu")
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=4, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(d/"adapter")
    tok.save_pretrained(d/"adapter")
    save_config(FinetuneConfig(model=MODEL), d/"config.yaml")
    return d

def test_prefix_cache_is_exact_and_belongs_to_one_adapter(lora_run):
    r = ModelRegistry("cpu")
    r.add("tuned", str(lora_run))
    r.add(MODEL, MODEL)
    w = r._weights_of(r.entry("tuned"))
    assert r._weights_of(r.entry(MODEL)) is w  # one base in memory, the adapter on it
    asks = [chat(a) for a in ASKS[:3]]
    def alone_on(name, m):
        with r.use(name) as (model, tok): return generate_reply(model, tok, m, **GREEDY)
    expected = {n: [alone_on(n, m) for m in asks] for n in ("tuned", MODEL)}
    assert expected["tuned"] != expected[MODEL]
    for _ in range(2):  # the first round finds the shared prefix and caches it, the second starts from the cache
        with w.lock: futures = {n: [queue_reply(r, n, m, GREEDY, threading.Event()) for m in asks] for n in ("tuned", MODEL)}
        assert {n: [f.result(timeout=300) for f in fs] for n, fs in futures.items()} == expected
    aid = w.adapters["tuned"]
    assert sorted(map(str, {owner for owner, _ in w.scheduler.prefixes.entries})) == sorted([aid, "None"])  # one each
    assert w.scheduler.prefixes.hits >= 2 * len(asks) and 0 < w.scheduler.prefixes.bytes <= r.prefix_bytes
    r.remove("tuned")  # its adapter is deleted: so are its cached prefixes
    assert {owner for owner, _ in w.scheduler.prefixes.entries} == {None}

def test_prefix_cache_stays_within_its_bound(reg):
    "A bound smaller than one prefix keeps nothing and changes nothing; a bound of one prefix keeps the latest."
    expected = [alone(reg, chat(a), GREEDY) for a in ASKS[:2]]
    together(reg, [(chat(ASKS[0]), GREEDY, {})])  # the model's scheduler, and its prefix cache, exist from here on
    cache = reg._weights_of(reg.entry(MODEL)).scheduler.prefixes
    bound = cache.max_bytes
    try:
        cache.clear()
        cache.max_bytes = 1000
        assert together(reg, [(chat(a), GREEDY, {}) for a in ASKS[:2]]) == expected and not cache.entries
        cache.max_bytes = 10**9
        cache.clear()  # else each prompt, seen before, would be cached nearly whole (a repeated prompt is a prefix too)
        together(reg, [(chat(a), GREEDY, {}) for a in ASKS[:2]])
        (_, first), = cache.entries
        cache.max_bytes = cache.bytes  # room for one
        pirate = lambda text: [{"role": "system", "content": "You are a pirate who answers in one short sentence."}, *chat(text)]
        together(reg, [(pirate(a), GREEDY, {}) for a in ASKS[:2]])
        (_, second), = cache.entries
        assert second != first and cache.bytes <= cache.max_bytes
    finally:
        cache.max_bytes = bound
