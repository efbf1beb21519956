"""Load test of `finetune-kit serve` on loopback: C concurrent clients, each sending R chat completions with the
official openai client (every third one streamed). Prints p50 / p95 latency, completion tokens/s and the error count;
with `--batching off,on`, one server for each mode in turn and a comparison table with the ratios.

    PYTHONPATH=. python bench/serve_load.py --batching off,on [--model smollm2-135m] [--clients 8] [--requests 20]
    PYTHONPATH=. python bench/serve_load.py --url http://127.0.0.1:8000   # against a server you started yourself
"""
import argparse, os, socket, statistics, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

PROMPTS = ["I was charged twice for my headphones.", "My parcel went to my old address.",
           "The app crashes when I open settings.", "I can't log in since I changed my email.",
           "I want to return the kettle, it leaks."]

def cpu_class() -> str:
    "The CPU in words: its name, cores, bf16 or not, and the vector ISA torch uses (the emulation variables cap it)."
    import torch
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    name = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "unknown CPU")
    bf16 = "AVX512-BF16" if "avx512_bf16" in info else "no bf16"
    isa = torch.backends.cpu.get_cpu_capability()
    capped = " (capped by ATEN_CPU_CAPABILITY)" if os.environ.get("ATEN_CPU_CAPABILITY") else ""
    return f"{name}, {os.cpu_count()} cores, {bf16}; torch kernels: {isa}{capped}"

def start_server(model: str, port: int, batching: bool = True) -> subprocess.Popen:
    "A `finetune-kit serve` subprocess on 127.0.0.1:port, once /health answers."
    cmd = [sys.executable, "-m", "finetune_kit.cli", "serve", model, "--port", str(port), "--log-level", "warning",
           "--no-jobs"]
    if not batching: cmd.append("--no-batching")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while time.time() < deadline:
        if p.poll() is not None: sys.exit(f"server exited: {p.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200: return p
        except httpx.HTTPError: time.sleep(0.5)
    p.kill()
    sys.exit("server did not start in 300 s")

def one(client, model: str, i: int, max_tokens: int) -> tuple[float, int, str | None]:
    "(latency s, completion tokens, error) of one request."
    kw = dict(model=model, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens=max_tokens,
              temperature=0.7, seed=i)
    t = time.perf_counter()
    try:
        if i % 3 == 0:
            chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
            n = chunks[-1].usage.completion_tokens
        else: n = client.chat.completions.create(**kw).usage.completion_tokens
        return time.perf_counter() - t, n, None
    except Exception as e: return time.perf_counter() - t, 0, f"{type(e).__name__}: {e}"

def load(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    "Run the load against `url` (one warm-up request first); the figures of the run."
    key = os.environ.get("FINETUNE_KIT_API_KEY", "-")
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)
    one(client, model, 0, max_tokens)  # warm-up
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        results = list(ex.map(lambda i: one(client, model, i, max_tokens), range(clients * requests)))
    wall = time.perf_counter() - t
    lat = sorted(r[0] for r in results)
    q = statistics.quantiles(lat, n=100)
    return dict(requests=len(results), wall=wall, p50=q[49], p95=q[94], max=lat[-1],
                tokens_s=sum(r[1] for r in results) / wall, requests_s=len(results) / wall,
                errors=[r[2] for r in results if r[2]])

def serve_and_load(a, batching: bool) -> dict:
    "Start a server (batching on or off), load it, stop it."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(a.model, port, batching)
    try: return load(f"http://127.0.0.1:{port}", a.model, a.clients, a.requests, a.max_tokens)
    finally:
        server.terminate()
        server.wait(30)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--url", default=None)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--batching", default="on", help="on, off, or off,on: one server per mode, compared")
    a = ap.parse_args()
    modes = [m.strip() for m in a.batching.split(",")]
    if not modes or any(m not in ("on", "off") for m in modes):
        sys.exit(f"--batching {a.batching}: give on, off or off,on")
    if a.url:
        model = openai.OpenAI(base_url=a.url + "/v1", api_key="-").models.list().data[0].id
        runs = {"(your server)": load(a.url, model, a.clients, a.requests, a.max_tokens)}
    else: model, runs = a.model, {f"batching {m}": serve_and_load(a, m == "on") for m in modes}
    print(f"{a.clients} clients x {a.requests} requests, max_tokens {a.max_tokens}, model {model}, "
          "every third streamed")
    if not a.url: print(f"CPU: {cpu_class()}")
    print("| server | requests | wall | requests/s | p50 latency | p95 latency | completion tokens/s | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in runs.items():
        print(f"| {name} | {r['requests']} | {r['wall']:.1f} s | {r['requests_s']:.2f} | {r['p50']:.2f} s "
              f"| {r['p95']:.2f} s | {r['tokens_s']:.1f} | {len(r['errors'])} |")
    if len(runs) == 2:
        (na, ra), (nb, rb) = runs.items()
        print(f"{nb} vs {na}: {rb['requests_s'] / ra['requests_s']:.2f}x requests/s, "
              f"{rb['tokens_s'] / ra['tokens_s']:.2f}x tokens/s, p50 {rb['p50'] / ra['p50']:.2f}x, "
              f"p95 {rb['p95'] / ra['p95']:.2f}x")
    errors = [e for r in runs.values() for e in r["errors"]]
    for e in errors[:5]: print(f"  error: {e}")
    sys.exit(1 if errors else 0)

if __name__ == "__main__": main()
