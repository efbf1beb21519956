import os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="session")
def root() -> Path: return ROOT

def run_cli(*args, env=None, timeout=1200, cwd=None):
    "Run `finetune-kit ARGS` in a subprocess (as a user would) and return the completed process."
    exe = shutil.which("finetune-kit")  # the console script, as a user runs it
    cmd = [exe] if exe else [sys.executable, "-c", "import sys; from finetune_kit.cli import main; sys.exit(main())"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=cwd)
