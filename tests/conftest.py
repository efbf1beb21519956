import os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="session")
def root() -> Path: return ROOT

def cli_command(script: bool = False) -> list[str]:
    "How to start `finetune-kit`: the console script as a user runs it (`script`: a path a launcher like torchrun can run)."
    exe = shutil.which("finetune-kit")
    if exe: return [exe]
    if script: raise RuntimeError("the finetune-kit console script is not installed (pip install -e .)")
    return [sys.executable, "-c", "import sys; from finetune_kit.cli import main; sys.exit(main())"]

def run_cli(*args, env=None, timeout=1200, cwd=None):
    "Run `finetune-kit ARGS` in a subprocess (as a user would) and return the completed process."
    return subprocess.run([*cli_command(), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=cwd)
