"""The documentation as a test: every `sh` and `python` block of README.md, and the terminal blocks of the notebooks,
run as written and in order, in a fresh empty folder, the way a user types them.

Sizes are shrunk only through the environment variables every command honours (`FINETUNE_KIT_MAX_STEPS`,
`FINETUNE_KIT_MAX_EVAL_EXAMPLES`, and `FINETUNE_KIT_TINY_MODEL`, which makes every model name a tiny random-weight
copy). A line `<!-- readme-test: skip: WHY -->` above a block skips it;
`<!-- readme-test: background: URL -->` starts it in the background (a server "in one terminal"), waits until URL
answers, and stops it when the document's other blocks are done."""
import os, re, signal, socket, subprocess, sys, time
from dataclasses import dataclass
from pathlib import Path
import pytest
from helpers import ROOT, TINY, fork_env, free_port

# every block as written, on the tiny model (the commands are plumbing; test_real_model.py runs the main job for real)
SMOKE_ENV = {"FINETUNE_KIT_MAX_STEPS": "2", "FINETUNE_KIT_MAX_EVAL_EXAMPLES": "4", "HF_HUB_OFFLINE": "1", **TINY}
BLOCK = re.compile(r"(?:<!--\s*readme-test:\s*(?P<kind>[\w-]+)\s*:\s*(?P<value>.*?)\s*-->\s*\n)?"
                   r"^```(?P<lang>sh|python)\n(?P<code>.*?)^```", re.S | re.M)

@dataclass
class Block:
    where: str  # file and block number, for messages
    lang: str  # sh or python
    code: str
    kind: str | None = None  # skip, background or None
    value: str | None = None  # the skip reason or the URL to wait for

def doc_blocks(text: str, where: str) -> list[Block]:
    "The sh and python blocks of a Markdown text, with their readme-test markers."
    return [Block(f"{where} block {i + 1}", m["lang"], m["code"], m["kind"], m["value"]) for i, m in enumerate(BLOCK.finditer(text))]

def notebook_blocks(path: Path) -> list[Block]:
    """The terminal blocks the markdown cells of a notebook tell a user to type; on a page that is not a lesson (a
    guide such as from_openai), its Python blocks too, as the README's: a lesson's Python is in its code cells."""
    import nbformat
    text = "\n\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    langs = ("sh",) if path.name[:1].isdigit() else ("sh", "python")
    return [b for b in doc_blocks(text, path.name) if b.lang in langs]

def test_markers_are_read():
    text = "a\n\n<!-- readme-test: skip: no GPU here -->\n```sh\nnvidia-smi\n```\n\n```python\nprint(1)\n```\n"
    b = doc_blocks(text, "x")
    assert [(x.lang, x.code, x.kind, x.value) for x in b] == [("sh", "nvidia-smi\n", "skip", "no GPU here"),
                                                               ("python", "print(1)\n", None, None)]

def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try: s.bind(("127.0.0.1", port))
        except OSError: return False
        return True

def _with_port(code: str, port: int) -> str:
    "The block with the documented default port 8000 moved to `port` (the `--port` flag), when 8000 is taken."
    if port == 8000: return code
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("--port 8000", f"--port {port}")
    return re.sub(r"^(\s*finetune-kit serve\b(?!.*--port).*)$", rf"\1 --port {port}", code, flags=re.M)

def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600):
    import httpx
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None: pytest.fail(f"the background command exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200: return
        except httpx.HTTPError: pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")

def _stop(proc: subprocess.Popen):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(30)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()

def run_blocks(blocks: list[Block], work: Path) -> list[str]:
    "Run `blocks` in order in the folder `work`, as a user would; a failure names the block; the blocks' outputs."
    env = {**os.environ, **SMOKE_ENV}
    forked = {**env, **fork_env()}  # `finetune-kit` forked from a pre-imported server; a background server runs as it is
    port = 8000 if _port_free(8000) else free_port()
    background, outputs = [], []
    try:
        for b in blocks:
            if b.kind == "skip": continue
            code = _with_port(b.code, port)
            cmd = ["bash", "-euo", "pipefail", "-c", code] if b.lang == "sh" else [sys.executable, "-c", code]
            if b.kind == "background":
                log = work/f".background-{len(background)}.log"
                with open(log, "w") as f:
                    proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                            start_new_session=True)
                background.append(proc)
                _wait_for(_with_port(b.value, port), proc, log)
                continue
            t0 = time.time()
            r = subprocess.run(cmd, cwd=work, env=forked, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
            print(f"{b.where}: {time.time() - t0:.0f} s: {b.code.strip().splitlines()[0][:80]}")
            out = r.stdout + r.stderr
            assert r.returncode == 0, f"{b.where} failed (exit {r.returncode}):\n{b.code}\n--- output:\n{out[-4000:]}"
            assert "Traceback (most recent call last)" not in out, f"{b.where} printed a traceback:\n{b.code}\n{out[-4000:]}"
            outputs.append(out)
    finally:
        for proc in background: _stop(proc)
    return outputs

@pytest.mark.slow
def test_readme_runs_as_written(tmp_path):
    blocks = doc_blocks((ROOT/"README.md").read_text(encoding="utf-8"), "README.md")
    assert len([b for b in blocks if b.kind != "skip"]) >= 5, "the README's blocks were not found"
    assert all(b.value for b in blocks if b.kind == "skip"), "a skipped block must say why"
    outputs = run_blocks(blocks, tmp_path)
    assert outputs[-1].strip(), "the jobs snippet printed no reply from the fine-tuned model"

NOTEBOOKS = sorted(p for p in (ROOT/"nbs").glob("**/*.ipynb")  # index.ipynb is the README's source: run above
                   if p.name != "index.ipynb" and any(b.kind != "skip" for b in notebook_blocks(p)))

@pytest.mark.slow
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_terminal_blocks_run_as_written(nb, tmp_path):
    run_blocks(notebook_blocks(nb), tmp_path)
