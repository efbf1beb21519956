"Helpers shared by the tests: the repository root, running the CLI as a user does, and waiting for a server."
import functools, os, shutil, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER_GIB = 6  # the most one test process may hold at its peak (a test worker, a notebook's process)
# plumbing tests run on the tiny random-weight model (2 blocks, width 64, the real tokenizer and chat template);
# claims of quality run on the real one (TINY_OFF): see finetune_kit.model_sources.tiny_model
TINY, TINY_OFF = {"FINETUNE_KIT_TINY_MODEL": "1"}, {"FINETUNE_KIT_TINY_MODEL": ""}

def tiny_models():
    "A module fixture's body: model names resolve to the tiny model while the module's tests run (`tiny = pytest.fixture(...)(tiny_models)`)."
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(*next(iter(TINY.items())))
        yield

def cli_command() -> list[str]:
    "How to start `finetune-kit`: the console script as a user runs it, else the module."
    exe = shutil.which("finetune-kit")
    return [exe] if exe else [sys.executable, "-m", "finetune_kit.cli"]

@functools.cache
def fork_env() -> dict:
    """The environment under which `finetune-kit` is forked from a pre-imported server (tests/forkcli.py: the same
    command, without paying 7 s of imports each time); {} with `FINETUNE_KIT_TEST_FORK=0` or no console script."""
    import socket
    exe = shutil.which("finetune-kit")
    if os.name != "posix" or not hasattr(socket, "send_fds") or not hasattr(os, "fork"): return {}  # Unix sockets and fork
    if not exe or os.environ.get("FINETUNE_KIT_TEST_FORK", "1").strip() in ("0", "", "no", "false"): return {}
    import atexit, forkcli, tempfile
    folder = tempfile.mkdtemp(prefix="ftk-fork-", dir="/tmp" if os.path.isdir("/tmp") else None)  # short: a socket path
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return forkcli.install(folder, exe)

def run_cli(*args, env=None, timeout=1200, cwd=None):
    """Run `finetune-kit ARGS` in a subprocess (as a user would) and return the completed process; forked from a
    pre-imported server where the environment allows (`fork_env`)."""
    fork = fork_env()
    cmd = [os.path.join(fork["PATH"].split(os.pathsep)[0], "finetune-kit")] if fork else cli_command()
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **fork, **(env or {})}, timeout=timeout, cwd=cwd)

def free_port() -> int:
    "A TCP port on loopback that nothing listens on right now."
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def wait_until_up(proc: subprocess.Popen, url: str, timeout: float = 300, log: Path | None = None) -> None:
    "Wait until GET `url` answers 200; fail with the server's output (piped stdout or `log`) if it exits or is slow."
    import time, httpx
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200: return
        except httpx.HTTPError: pass
        if proc.poll() is not None or time.time() > deadline:
            what = f"exited with {proc.returncode}" if proc.poll() is not None else f"did not answer in {timeout:.0f} s"
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out = log.read_text(errors="replace") if log else proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"server {what}:\n{out[-3000:]}")
        time.sleep(0.2)

def train_tiny_run(d: Path, tickets: int = 16, max_steps: int = 2, test_size: int = 2) -> Path:
    "A run trained for `max_steps` on `tickets` sample tickets in folder `d` (runs/tiny), on the CPU: the slow tests' fixture."
    from finetune_kit.config import FinetuneConfig
    from finetune_kit.sample_data import make_support_tickets, write_jsonl
    from finetune_kit.train import train
    data = write_jsonl(make_support_tickets(tickets), d/"tickets.jsonl")
    return train(FinetuneConfig(data=str(data), runs_dir=str(d/"runs"), run_name="tiny", max_steps=max_steps, val_size=2,
                                test_size=test_size, batch_size=4, logging_steps=1, device="cpu"))

def wait_for(client, job_id, statuses=None, timeout=600):
    "Poll a fine-tuning job with the official client until its status is in `statuses` (default: a terminal one)."
    from finetune_kit.job_store import TERMINAL
    statuses, deadline = statuses or TERMINAL, time.time() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in statuses:
        assert time.time() < deadline, f"job {job_id} still {job.status} after {timeout}s"
        time.sleep(0.5)
    return job

def start_server(state: Path, log: Path, port: int | None = None, **env):
    "`finetune-kit serve --jobs-dir STATE` as a user starts it, on `port` (a free one if None); (process, client, port)."
    from openai import OpenAI
    port = port or free_port()
    p = subprocess.Popen([*cli_command(), "serve", "--jobs-dir", str(state), "--port", str(port), "--keep-checkpoints", "2"],
                         env={**os.environ, **env}, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_until_up(p, f"http://127.0.0.1:{port}/health", timeout=120, log=log)
    return p, OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local", max_retries=0), port
