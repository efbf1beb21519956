"""Runs every notebook in nbs/ (lessons) and nbs/api/ (reference) with nbdev's test runner: the tests beside the code.

Each notebook runs in its own Python process, as `nbdev-test` runs it: a child forked from a runner that has imported
torch, transformers and the package once (`RUNNER`; a fresh interpreter spends 7-10 s on imports alone), so the
memory a notebook's models took is given back to the machine when the child ends (run in the test process, 16
notebooks held 14 GB of the 24, and every test after them ran several times slower). Sizes shrink through the documented smoke variables, as for the README's blocks
(`SMOKE_ENV`): the lessons' code is what a learner runs, with no test branch; checks that only hold at full size are
in cells flagged `#| slow`, which the test runner skips. The course's smoke run is trained by the first lesson that
needs it and reused by the others (it records the code that trained it). A notebook's process may hold at most
`WORKER_GIB` at its peak."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
from helpers import TINY, TINY_OFF, WORKER_GIB
from nbdev.config import get_config
from nbdev import test as nbdev_test  # imported as a module: pytest would collect a bare `test_nb` as a test

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("index", "teachers_guide", "from_openai")  # pages of prose: no code cell to run
NBS = sorted(ROOT.joinpath("nbs").glob("**/*.ipynb"), key=lambda p: (p.parent.name == "api", str(p)))
SMOKE_ENV = {"FINETUNE_KIT_MAX_STEPS": "6", "FINETUNE_KIT_MAX_EVAL_EXAMPLES": "8", "HF_HUB_OFFLINE": "1"}
# The lessons run on the tiny model here (their committed outputs come from the real one, at full size:
# tools/execute_lessons.py), but for 02, whose checks are about the real model itself: its size and its blocks. Checks of
# a trained model (05: a merged folder stops by itself; its card names the base's Hub id) are in `#| slow` cells, and in
# tests/test_real_model.py. The reference notebooks load the real model in a few
# seconds each, and the server's examples need its short answers. Claims of quality: tests/test_real_model.py.
REAL_MODEL = {"02_model"}
tiny = lambda nb: nb.parent.name == "nbs" and nb.stem[:2].isdigit() and nb.stem not in REAL_MODEL
pytestmark = pytest.mark.independent  # each notebook in its own process: the workers share them out, the slowest first
# The notebook runner: one process per worker that imports what every notebook imports (torch, transformers, the
# package: about 7 s on a 2-core AVX2 CPU) once, then forks a fresh child per notebook, which runs it with nbdev's
# `test_nb` and exits: each notebook still starts from a clean state and its memory goes back to the machine when it
# ends, without paying the imports 35 times. The parent computes nothing (no thread pool to fork), and reads requests
# (a JSON line: notebook, flags, environment) on stdin; the child's output goes to files, its peak memory and time
# to the parent, which answers with a JSON line.
RUNNER = r"""import json, os, resource, sys, pkgutil, importlib
import torch, transformers, peft, datasets, pandas, IPython, execnb.shell
from nbdev.test import test_nb
import finetune_kit
for m in pkgutil.iter_modules(finetune_kit.__path__): importlib.import_module(f"finetune_kit.{m.name}")
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: this notebook, then exit
        os.close(r)
        os.environ.update(req["env"])
        for fd, name in ((1, "out"), (2, "err")):
            f = os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd); os.close(f)
        sys.stdout = open(1, "w", closefd=False, buffering=1); sys.stderr = open(2, "w", closefd=False, buffering=1)
        code = 1
        try:
            ok, secs = test_nb(req["nb"], skip_flags=req["flags"].split(), showerr=True, cell_timing_min=30)
            mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            os.write(w, json.dumps({"ok": bool(ok), "secs": secs, "mib": mib}).encode())
            code = 0
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f: result = f.read()
    _, status = os.waitpid(pid, 0)
    print(result or json.dumps({"ok": False, "status": status}), flush=True)
"""


@pytest.fixture(scope="module")
def runner():
    "The worker's notebook runner (RUNNER), started once; stopped when the worker's notebooks are done."
    p = subprocess.Popen([sys.executable, "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, **SMOKE_ENV})
    assert json.loads(p.stdout.readline()).get("ready"), "the notebook runner did not start"
    yield p
    p.stdin.close()
    p.wait(60)


def test_notebooks_found():
    # nbdev-test passes when it finds no notebook; this suite must not
    assert len(NBS) >= 8, f"expected the course notebooks in nbs/, found {[p.name for p in NBS]}"

@pytest.mark.slow
@pytest.mark.parametrize("nb", NBS, ids=[str(p.relative_to(ROOT/"nbs").with_suffix("")) for p in NBS])
def test_notebook(nb, runner, tmp_path):
    flags = get_config().tst_flags
    n_cells = len(nbdev_test.nb_test_cells(nb, skip_flags=flags.split()))
    assert n_cells > 0 or nb.stem in PAGES, f"{nb.name}: no cell would run"
    out, err = tmp_path/"stdout.txt", tmp_path/"stderr.txt"
    req = {"nb": str(nb), "flags": flags, "out": str(out), "err": str(err), "env": {**SMOKE_ENV, **(TINY if tiny(nb) else TINY_OFF)}}
    runner.stdin.write(json.dumps(req) + "\n")
    runner.stdin.flush()
    line = runner.stdout.readline()
    assert line, f"the notebook runner died running {nb.name}:\n{err.read_text(errors='replace')[-6000:]}"
    r = json.loads(line)
    assert r["ok"], f"{nb.name} failed:\n{err.read_text(errors='replace')[-6000:]}"
    slow = out.read_text(errors="replace").strip()
    print("\n".join([slow, f"{nb.name}: {n_cells} cells in {r['secs']:.1f}s, {r['mib']} MiB at the peak"]).strip())
    assert r["mib"] < WORKER_GIB * 1024, f"{nb.name} held {r['mib']} MiB at its peak (at most {WORKER_GIB} GiB)"
