"""Check our `/v1` responses against OpenAI's published OpenAPI document (the pinned part in `openai_spec.json`,
written by `tools/openai_spec.py`).

`check(method, path, status, body)` gives the problems of one JSON response (an empty list when it conforms):
a 2xx body against the schema OpenAI's document gives that route, an error body against its `ErrorResponse`.
`watch()` installs the check on every HTTP response the test process receives through httpx (the official client
and the raw-HTTP tests alike), so the whole suite checks every response it gets; `conftest.py` prints the count per
route at the end and fails the run on any response that does not conform.
"""
import json, os, re
from collections import Counter
from functools import cache
from pathlib import Path

SPEC_FILE = Path(__file__).parent/"openai_spec.json"

@cache
def spec() -> dict: return json.loads(SPEC_FILE.read_text())

# our path (after /v1) -> OpenAI's path template; the order matters (most specific first)
_TEMPLATES = [(re.compile(r"^/fine_tuning/jobs/[^/]+/(cancel|events|checkpoints|pause|resume)$"),
               lambda m: "/fine_tuning/jobs/{fine_tuning_job_id}/" + m.group(1)),
              (re.compile(r"^/fine_tuning/jobs/[^/]+$"), lambda m: "/fine_tuning/jobs/{fine_tuning_job_id}"),
              (re.compile(r"^/fine_tuning/jobs$"), lambda m: "/fine_tuning/jobs"),
              (re.compile(r"^/files/[^/]+/content$"), lambda m: "/files/{file_id}/content"),
              (re.compile(r"^/files/[^/]+$"), lambda m: "/files/{file_id}"),
              (re.compile(r"^/files$"), lambda m: "/files"),
              (re.compile(r"^/models/.+$"), lambda m: "/models/{model}"),
              (re.compile(r"^/models$"), lambda m: "/models"),
              (re.compile(r"^/chat/completions$"), lambda m: "/chat/completions")]

def route(method: str, path: str) -> str | None:
    "OpenAI's `METHOD /template` for one of our `/v1/...` paths; None outside `/v1`."
    if not path.startswith("/v1/"): return None
    rest = path[3:].rstrip("/")
    for rx, tmpl in _TEMPLATES:
        if m := rx.match(rest): return f"{method.upper()} {tmpl(m)}"
    return f"{method.upper()} (a path no route has)"  # e.g. a hostile test's "/files/../jobs.db": its 404 is checked

@cache
def _validator(name: str):
    from jsonschema import Draft202012Validator
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": {"schemas": spec()["schemas"]}})

def schema_name(rt: str, status: int, kind: str = "application/json") -> str | None:
    "The component schema a response of route `rt` with `status` must match (None: the document has none)."
    if status >= 400: return spec()["error"]
    return spec()["routes"].get(rt, {}).get(kind)

def problems(name: str, body) -> list[str]:
    "Each way `body` breaks schema `name`, as `field: message` (for a failed `anyOf`, its closest branch's reason)."
    from jsonschema.exceptions import best_match
    out = []
    for e in sorted(_validator(name).iter_errors(body), key=lambda e: list(e.path)):
        if e.context: e = best_match(e.context)
        out.append(f"{'/'.join(map(str, e.path)) or '(body)'}: {e.message[:200]}")
    return out

def check(method: str, path: str, status: int, body, kind: str = "application/json") -> tuple[str | None, list[str]]:
    "(the route, its problems) for one response; the route is None when the document does not describe it."
    rt = route(method, path)
    if rt is None: return None, []
    name = schema_name(rt, status, kind)
    if name is None: return None, []
    return rt, problems(name, body)

# ---- the whole suite's responses, through httpx

LOG_DIR = "FINETUNE_KIT_CONFORMANCE_DIR"  # where each test process appends what it checked (set by conftest)

def _record(rt: str, status: int, probs: list[str]) -> None:
    d = os.environ.get(LOG_DIR)
    if not d: return
    who = os.environ.get("PYTEST_CURRENT_TEST", "").split(" (")[0]
    with open(Path(d)/f"{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps({"route": rt, "status": status, "problems": probs, "test": who}) + "\n")

def _inspect(request, response) -> None:
    ctype = response.headers.get("content-type", "")
    if not ctype.startswith("application/json"): return  # streams are checked chunk by chunk in their own test
    try: body = json.loads(response.content)
    except ValueError: body = None
    rt, probs = check(request.method, request.url.path, response.status_code, body)
    if rt is not None: _record(rt, response.status_code, probs)

def watch() -> None:
    """Check every response the HTTP transports of httpx (raw-HTTP tests) and of `httpx2` (which the openai client
    uses from version 3) return to this process, sync and async, from now on."""
    import importlib
    for name in ("httpx", "httpx2"):
        try: mod = importlib.import_module(name)
        except ImportError: continue
        _watch(mod.HTTPTransport, mod.AsyncHTTPTransport)

def _watch(sync_cls, async_cls) -> None:
    if getattr(sync_cls, "_conformance", False): return
    sync_send, async_send = sync_cls.handle_request, async_cls.handle_async_request

    def handle_request(self, request):
        response = sync_send(self, request)
        if response.headers.get("content-type", "").startswith("application/json"):
            response.read()
            _inspect(request, response)
        return response

    async def handle_async_request(self, request):
        response = await async_send(self, request)
        if response.headers.get("content-type", "").startswith("application/json"):
            await response.aread()
            _inspect(request, response)
        return response

    sync_cls.handle_request, async_cls.handle_async_request = handle_request, handle_async_request
    sync_cls._conformance = True

def summary(d: Path) -> tuple[str, list[dict]]:
    "The count of checked responses per route and status from the records in `d`, and the records that failed."
    rows = [json.loads(line) for p in sorted(Path(d).glob("*.jsonl")) for line in p.read_text().splitlines() if line]
    counts = Counter((r["route"], r["status"]) for r in rows)
    bad = [r for r in rows if r["problems"]]
    lines = [f"OpenAI conformance ({spec()['source']['repository']}@{spec()['source']['commit'][:12]}): "
             f"{len(rows)} JSON responses checked, {len(bad)} not conforming"]
    by_route = {}
    for (rt, st), n in sorted(counts.items()): by_route.setdefault(rt, []).append(f"{st}×{n}")
    lines += [f"  {rt:58} {' '.join(v)}" for rt, v in by_route.items()]
    return "\n".join(lines), bad
