"""The tests' forked `finetune-kit` (tests/forkcli.py) behaves as the real console script: the same output and exit
status, the caller's folder, environment and stdin, a signal or a kill passed on, and a fresh process whenever the
environment could matter at import."""
import os, subprocess, time
from pathlib import Path
import pytest
from helpers import cli_command, fork_env

pytestmark = [pytest.mark.slow, pytest.mark.cost(40)]


@pytest.fixture(scope="module")
def fork(tmp_path_factory):
    "A fork server for this module's environment, up (the second sighting starts it; wait until its socket appears)."
    import forkcli
    env = {**os.environ, **fork_env(), "HF_HUB_OFFLINE": "1", "FORKCLI_TEST": "1"}  # an environment of its own
    if not env.get("FINETUNE_KIT_FORK_DIR"): pytest.skip("no console script, or FINETUNE_KIT_TEST_FORK=0")
    shim = os.path.join(env["PATH"].split(os.pathsep)[0], "finetune-kit")
    sock = Path(env["FINETUNE_KIT_FORK_DIR"])/f"{forkcli.signature(env)}.sock"
    for _ in range(2): subprocess.run([shim, "--help"], env=env, capture_output=True, timeout=300)
    deadline = time.time() + 300
    while not sock.exists():
        assert time.time() < deadline, "the fork server did not start"
        time.sleep(0.5)
    return shim, env, sock


def _run(cmd, env, **kw):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, **kw)


def test_same_output_and_status_as_the_console_script(fork, tmp_path):
    shim, env, _ = fork
    for args in (["--help"], ["train", "--batch-size", "0.5"], ["data", "prepare", "sample:support_tickets", "t.jsonl"],
                 ["runs", "--runs-dir", "nowhere"]):
        real, forked = (_run([*c, *args], env, cwd=d) for c, d in ((cli_command(), tmp_path/"a"), ([shim], tmp_path/"b"))
                        if d.mkdir(exist_ok=True) is None)
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr), args
    # the relative path was the caller's folder's
    assert (tmp_path/"b"/"t.jsonl").read_bytes() == (tmp_path/"a"/"t.jsonl").read_bytes()


def test_the_callers_environment_and_stdin(fork):
    "A chat read from stdin, on the tiny model (a FINETUNE_KIT_* variable of the call): the same reply both ways."
    shim, env, _ = fork
    env = {**env, "FINETUNE_KIT_TINY_MODEL": "1"}
    args = ["chat", "smollm2-135m", "--max-new-tokens", "6"]
    real, forked = (subprocess.run([*c, *args], input="Where is my parcel?\n", env=env, capture_output=True, text=True,
                                   timeout=300) for c in (cli_command(), [shim]))
    assert forked.returncode == real.returncode == 0, (forked.stderr[-2000:], real.stderr[-2000:])
    assert forked.stdout == real.stdout and forked.stdout.strip()


def test_a_killed_shim_ends_its_command(fork, tmp_path):
    "SIGKILL of the shim (a test's timeout) ends the forked command, which ran as the server's child, through its socket."
    import psutil
    shim, env, sock = fork
    server = next(p for p in psutil.process_iter(["cmdline"]) if str(sock) in " ".join(p.info["cmdline"] or []))
    args = ["train", "--data", "sample:support_tickets", "--runs-dir", tmp_path/"runs", "--time-budget", "none"]
    p = subprocess.Popen([shim, *map(str, args)], env={**env, "FINETUNE_KIT_TINY_MODEL": "1"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    assert server.children(), "the command was not forked from the server"
    p.kill()
    p.wait(30)
    deadline = time.time() + 30
    while server.children():
        assert time.time() < deadline, "the forked command outlived its shim"
        time.sleep(0.5)


def test_another_environment_runs_afresh(fork):
    "A variable a library may read at import (here HF_HOME) differs: the real console script runs, no server is asked."
    import forkcli
    shim, env, sock = fork
    other = {**env, "HF_HOME": "/nonexistent-hf-home"}
    assert forkcli.signature(other) != forkcli.signature(env)
    r = _run([shim, "--help"], other)
    assert r.returncode == 0 and "usage: finetune-kit" in r.stdout
    assert (Path(env["FINETUNE_KIT_FORK_DIR"])/f"{forkcli.signature(other)}.seen").exists()
    assert not (Path(env["FINETUNE_KIT_FORK_DIR"])/f"{forkcli.signature(other)}.sock").exists()
