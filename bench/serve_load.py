"""Load test of `finetune-kit serve` on loopback: C concurrent clients, each sending R chat completions with the
official openai client (every third one streamed). Prints p50 / p95 latency, completion tokens/s and the error count.

    PYTHONPATH=. python bench/serve_load.py [--model smollm2-135m] [--clients 8] [--requests 20] [--max-tokens 16]
    PYTHONPATH=. python bench/serve_load.py --url http://127.0.0.1:8000   # against a server you started yourself
"""
import argparse, os, socket, statistics, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

PROMPTS = ["I was charged twice for my headphones.", "My parcel went to my old address.", "The app crashes when I open settings.",
           "I can't log in since I changed my email.", "I want to return the kettle, it leaks."]

def start_server(model: str, port: int) -> subprocess.Popen:
    "A `finetune-kit serve` subprocess on 127.0.0.1:port, once /health answers."
    cmd = [sys.executable, "-m", "finetune_kit.cli", "serve", model, "--port", str(port), "--log-level", "warning", "--no-jobs"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while time.time() < deadline:
        if p.poll() is not None: sys.exit(f"server exited: {p.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200: return p
        except httpx.HTTPError: time.sleep(0.5)
    p.kill(); sys.exit("server did not start in 300 s")

def one(client, model: str, i: int, max_tokens: int) -> tuple[float, int, str | None]:
    "(latency s, completion tokens, error) of one request."
    kw = dict(model=model, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens=max_tokens, temperature=0.7, seed=i)
    t = time.perf_counter()
    try:
        if i % 3 == 0:
            chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
            n = chunks[-1].usage.completion_tokens
        else: n = client.chat.completions.create(**kw).usage.completion_tokens
        return time.perf_counter() - t, n, None
    except Exception as e: return time.perf_counter() - t, 0, f"{type(e).__name__}: {e}"

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m"); ap.add_argument("--url", default=None)
    ap.add_argument("--clients", type=int, default=8); ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=16)
    a = ap.parse_args()
    server = None
    if a.url is None:
        with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        server, a.url = start_server(a.model, port), f"http://127.0.0.1:{port}"
    model = a.model if server else openai.OpenAI(base_url=a.url + "/v1", api_key="-").models.list().data[0].id
    client = openai.OpenAI(base_url=a.url + "/v1", api_key=os.environ.get("FINETUNE_KIT_API_KEY", "-"), max_retries=0, timeout=600)
    try:
        one(client, model, 0, a.max_tokens)  # warm-up
        t = time.perf_counter()
        with ThreadPoolExecutor(a.clients) as ex:
            results = list(ex.map(lambda i: one(client, model, i, a.max_tokens), range(a.clients * a.requests)))
        wall = time.perf_counter() - t
    finally:
        if server: server.terminate(); server.wait(30)
    lat = sorted(r[0] for r in results)
    errors = [r[2] for r in results if r[2]]
    tokens = sum(r[1] for r in results)
    q = statistics.quantiles(lat, n=100)
    print(f"{a.clients} clients x {a.requests} requests, max_tokens {a.max_tokens}, model {model}: {len(results)} requests in {wall:.1f} s")
    print(f"latency p50 {q[49]:.2f} s, p95 {q[94]:.2f} s, max {lat[-1]:.2f} s")
    print(f"throughput {tokens / wall:.1f} completion tokens/s, {len(results) / wall:.2f} requests/s")
    print(f"errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:5]))
    sys.exit(1 if errors else 0)

if __name__ == "__main__": main()
