"""Pin the part of OpenAI's published OpenAPI document that our server answers to, for the conformance test.

    python tools/openai_spec.py /path/to/openai-openapi     # a git folder of github.com/openai/openai-openapi
    python tools/openai_spec.py openapi.json --commit SHA   # or the document itself, with the commit it came from

Writes `tests/openai_spec.json`: for each `/v1` route we serve that OpenAI's document describes, the schema of its
200 body (and of its stream chunks), the error body's schema, and every component schema those reach, with the
source's commit. The document is OpenAPI 3.1 but keeps a few OpenAPI 3.0 habits that a JSON Schema 2020-12
validator reads differently from what the document means; each is rewritten here, explicitly, and listed in the
output's `quirks` (the test prints them):
- `exclusiveMinimum: true` beside `minimum: x` (3.0's boolean form) becomes `exclusiveMinimum: x`: a 2020-12
  validator rejects the boolean form, so a valid `learning_rate_multiplier` of 1.0 would fail;
- `nullable: true` (3.0) becomes "or null": in 3.1 the keyword means nothing, so a `finish_reason` of null in a
  stream chunk, which the document's own prose allows, would fail;
- `FineTuningJob.status` gains `paused`: the document's own example answer of `POST /fine_tuning/jobs/{id}/pause`
  has `"status": "paused"`, which the enum lacks.
Nothing else is loosened.
"""
import argparse, json, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/"tests"/"openai_spec.json"

# (method, OpenAI's path): the routes we serve under /v1 that the document describes
ROUTES = [("post", "/chat/completions"), ("get", "/models"), ("get", "/models/{model}"), ("delete", "/models/{model}"),
          ("post", "/files"), ("get", "/files"), ("get", "/files/{file_id}"), ("delete", "/files/{file_id}"),
          ("post", "/fine_tuning/jobs"), ("get", "/fine_tuning/jobs"),
          ("get", "/fine_tuning/jobs/{fine_tuning_job_id}"), ("post", "/fine_tuning/jobs/{fine_tuning_job_id}/cancel"),
          ("get", "/fine_tuning/jobs/{fine_tuning_job_id}/events"),
          ("get", "/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"),
          ("post", "/fine_tuning/jobs/{fine_tuning_job_id}/pause"),
          ("post", "/fine_tuning/jobs/{fine_tuning_job_id}/resume")]
ERROR = "ErrorResponse"

def _refs(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "$ref": yield v.rsplit("/", 1)[-1]
            else: yield from _refs(v)
    elif isinstance(o, list):
        for v in o: yield from _refs(v)

def _fix(o, where: str, quirks: list):
    "Rewrite the OpenAPI 3.0 habits (module docstring) in place, recording each."
    if isinstance(o, dict):
        if o.get("exclusiveMinimum") is True and "minimum" in o:
            o["exclusiveMinimum"] = o.pop("minimum")
            quirks.append(f"{where}: exclusiveMinimum: true + minimum -> exclusiveMinimum: {o['exclusiveMinimum']}")
        if o.get("exclusiveMaximum") is True and "maximum" in o:
            o["exclusiveMaximum"] = o.pop("maximum")
            quirks.append(f"{where}: exclusiveMaximum: true + maximum -> exclusiveMaximum: {o['exclusiveMaximum']}")
        for k, v in list(o.items()): _fix(v, f"{where}/{k}", quirks)
        if o.pop("nullable", False) is True:
            inner = dict(o)
            o.clear()
            o["anyOf"] = [inner, {"type": "null"}]
            quirks.append(f"{where}: nullable: true -> anyOf [schema, null]")
    elif isinstance(o, list):
        for i, v in enumerate(o): _fix(v, f"{where}/{i}", quirks)

def extract(doc: dict, source: dict) -> dict:
    schemas, routes = doc["components"]["schemas"], {}
    roots = [ERROR]
    for method, path in ROUTES:
        op = doc["paths"][path][method]
        content = op["responses"]["200"]["content"]
        body = {kind: c["schema"]["$ref"].rsplit("/", 1)[-1] for kind, c in content.items() if "$ref" in c["schema"]}
        routes[f"{method.upper()} {path}"] = body
        roots += body.values()
    keep, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if name in keep: continue
        keep[name] = json.loads(json.dumps(schemas[name]))
        todo += list(_refs(keep[name]))
    quirks = []
    for name in sorted(keep): _fix(keep[name], name, quirks)
    status = keep["FineTuningJob"]["properties"]["status"]
    pause = doc["paths"]["/fine_tuning/jobs/{fine_tuning_job_id}/pause"]["post"]
    if "paused" not in status["enum"] and '"status": "paused"' in json.dumps(pause.get("x-oaiMeta", {})).replace('\\"', '"'):
        status["enum"].append("paused")
        quirks.append("FineTuningJob/properties/status: 'paused' added (the pause route's own example answer has it)")
    return {"source": source, "routes": routes, "error": ERROR, "quirks": quirks,
            "schemas": {k: keep[k] for k in sorted(keep)}}

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="a git folder of openai/openai-openapi, or its openapi.json")
    ap.add_argument("--commit", help="the commit the document came from (read from the git folder if not given)")
    a = ap.parse_args(argv)
    src = Path(a.source)
    if src.suffix == ".json": text, commit, date = src.read_text(), a.commit, None
    else:
        git = ["git", "--git-dir", str(src/".git") if (src/".git").exists() else str(src)]
        commit = a.commit or subprocess.check_output(git + ["rev-parse", "HEAD"], text=True).strip()
        text = subprocess.check_output(git + ["show", f"{commit}:openapi.json"], text=True)
        date = subprocess.check_output(git + ["log", "-1", "--format=%cs", commit], text=True).strip()
    if not commit: ap.error("--commit: the commit of openai/openai-openapi the document came from")
    doc = json.loads(text)
    out = extract(doc, {"repository": "openai/openai-openapi", "commit": commit, "date": date,
                        "openapi": doc["openapi"], "version": doc["info"]["version"]})
    OUT.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(out['routes'])} routes, {len(out['schemas'])} schemas, "
          f"{len(out['quirks'])} quirks rewritten, from {commit[:12]}")

if __name__ == "__main__": main()
