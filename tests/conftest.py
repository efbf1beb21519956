import os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="session")
def root() -> Path: return ROOT

def cli_command() -> list[str]:
    "How to start `finetune-kit`: the console script as a user runs it, else the module."
    exe = shutil.which("finetune-kit")
    return [exe] if exe else [sys.executable, "-m", "finetune_kit.cli"]

def run_cli(*args, env=None, timeout=1200, cwd=None):
    "Run `finetune-kit ARGS` in a subprocess (as a user would) and return the completed process."
    return subprocess.run([*cli_command(), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=cwd)
