"""OpenAI's chat parameters beyond the basics, through the official client: `n` choices sampled together, `logprobs`
with `top_logprobs`, `response_format` (json_object, json_schema) enforced while generating, `logit_bias`, the
penalties, and a 400 naming every parameter this server does not serve. On the tiny random-weight model: the
mechanics, not the quality (its unconstrained answers are never JSON, which makes the constraint's effect plain)."""
import json, os

import jsonschema, openai, pytest

from helpers import tiny_models
from finetune_kit.registry import ModelRegistry
from finetune_kit.server import ServerThread, create_app

pytestmark = pytest.mark.slow  # serves a (tiny) model
os.environ.setdefault("HF_HUB_OFFLINE", "1")
tiny = pytest.fixture(scope="module", autouse=True)(tiny_models)
MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Route this ticket: my card was charged twice."}]
TICKET = {"type": "object", "additionalProperties": False, "required": ["team", "urgent", "order"],
          "properties": {"team": {"type": "string", "enum": ["billing", "shipping", "tech", "returns"]},
                         "urgent": {"type": "boolean"}, "order": {"type": "integer", "minimum": 0}}}

@pytest.fixture(scope="module")
def client():
    registry = ModelRegistry()
    registry.add(MODEL, MODEL)
    with ServerThread(create_app(registry)) as srv:
        yield openai.OpenAI(base_url=srv.url + "/v1", api_key="local", max_retries=0, timeout=120)

def test_n_choices_with_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, n=3, max_tokens=8, temperature=1.0, seed=11,
                                       logprobs=True, top_logprobs=2)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) > 1  # three samples, not one reply three times
    for c in r.choices:
        lp = c.logprobs.content
        assert "".join(t.token for t in lp) == c.message.content  # the tokens make up the content
        assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 and bytes(t.bytes).decode() == t.token for t in lp)
        assert all(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= -9999 for t in lp)
    assert r.usage.completion_tokens == sum(len(c.logprobs.content) for c in r.choices if c.finish_reason == "length")
    again = client.chat.completions.create(model=MODEL, messages=ASK, n=3, max_tokens=8, temperature=1.0, seed=11)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]  # seed: reproducible

def test_streamed_choices_match_the_whole_answers(client):
    whole = client.chat.completions.create(model=MODEL, messages=ASK, n=2, max_tokens=6, temperature=0, logprobs=True)
    parts, tokens = {0: "", 1: ""}, {0: [], 1: []}
    for ch in client.chat.completions.create(model=MODEL, messages=ASK, n=2, max_tokens=6, temperature=0,
                                             logprobs=True, stream=True):
        for c in ch.choices:
            parts[c.index] += c.delta.content or ""
            tokens[c.index] += [t.token for t in (c.logprobs.content if c.logprobs else None) or []]
    assert [parts[0], parts[1]] == [c.message.content for c in whole.choices]
    assert tokens[0] == [t.token for t in whole.choices[0].logprobs.content]

def test_json_schema_is_enforced(client):
    rf = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET, "strict": True}}
    kw = dict(model=MODEL, max_tokens=60, temperature=1.0)
    asks = [[{"role": "user", "content": f"Ticket {i}: route it as JSON."}] for i in range(20)]
    valid = lambda text: _valid(text, TICKET)
    free = [valid(client.chat.completions.create(messages=m, seed=i, **kw).choices[0].message.content)
            for i, m in enumerate(asks)]
    bound = [client.chat.completions.create(messages=m, seed=i, response_format=rf, **kw).choices[0]
             for i, m in enumerate(asks)]
    assert all(c.finish_reason == "stop" and valid(c.message.content) for c in bound)
    assert sum(free) < 20  # the random model left alone does not write this JSON
    obj = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=40, temperature=0,
                                         response_format={"type": "json_object"}).choices[0]
    assert obj.finish_reason == "length" or isinstance(json.loads(obj.message.content), dict)

def _valid(text: str, schema: dict) -> bool:
    try: jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError): return False
    return True

def test_logit_bias_and_penalties(client):
    greedy = dict(model=MODEL, messages=ASK, max_tokens=12, temperature=0, logprobs=True)
    base = client.chat.completions.create(**greedy).choices[0]
    first = base.logprobs.content[0]
    banned = client.chat.completions.create(**greedy, logit_bias=_bias(client, first.token, -100)).choices[0]
    assert banned.logprobs.content[0].token != first.token  # a token biased by -100 is never picked
    penalised = client.chat.completions.create(**greedy, frequency_penalty=2.0, presence_penalty=2.0).choices[0]
    tokens = [t.token for t in penalised.logprobs.content]
    assert penalised.message.content != base.message.content and len(set(tokens)) >= len(tokens) - 1

def _bias(client, token: str, value: float) -> dict:
    "logit_bias for the token whose text is `token` (the tiny model shares the real tokenizer)."
    from finetune_kit.model import load_tokenizer
    from finetune_kit.model_sources import resolve_model
    tok = load_tokenizer(resolve_model(MODEL))
    ids = [i for i in range(len(tok)) if tok.decode([i]) == token]
    return {str(i): value for i in ids}

@pytest.mark.parametrize("param,value,says", [
    ("tools", [{"type": "function", "function": {"name": "f"}}], "tools and function calling is not supported"),
    ("audio", {"voice": "alloy", "format": "wav"}, "audio output is not supported"),
    ("store", True, "storing completions is not supported"),
    ("frobnicate", 1, "Unrecognized request argument supplied: frobnicate"),
    ("top_logprobs", 2, "top_logprobs needs logprobs: true"),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}, "strin"),
    ("logit_bias", {"abc": 1}, "keys are token ids"),
    ("n", 100, "n is too large: 100. This server queues at most 64")])
def test_what_is_not_served_is_refused_by_name(client, param, value, says):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, extra_body={param: value})
    err = e.value.body
    assert says in err["message"] and err["param"].split(".")[0] == param

def test_parameters_without_effect_are_accepted(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, user="u1", metadata={"a": "b"},
                                       service_tier="auto", store=False, prompt_cache_key="k")
    assert r.choices[0].message.content is not None
