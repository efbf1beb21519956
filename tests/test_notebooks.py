"""Runs every notebook in nbs/ (lessons) and nbs/api/ (reference) with nbdev's test runner: the tests beside the code.

Each notebook runs in its own Python process, as `nbdev-test` runs it: the memory a notebook's models took is given
back to the machine when it ends (run in the test process, 16 notebooks held 14 GB of the 24, and every test after
them ran several times slower). Sizes shrink through the documented smoke variables, as for the README's blocks
(`SMOKE_ENV`): the lessons' code is what a learner runs, with no test branch; checks that only hold at full size are
in cells flagged `#| slow`, which the test runner skips. The course's smoke run is trained by the first lesson that needs it and reused by
the others (it records the code that trained it)."""
import os, subprocess, sys
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev import test as nbdev_test  # imported as a module: pytest would collect a bare `test_nb` as a test

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("index", "teachers_guide")  # pages of prose: no code cell to run
NBS = sorted(ROOT.joinpath("nbs").glob("**/*.ipynb"), key=lambda p: (p.parent.name == "api", str(p)))
SMOKE_ENV = {"FINETUNE_KIT_MAX_STEPS": "6", "FINETUNE_KIT_MAX_EVAL_EXAMPLES": "8", "HF_HUB_OFFLINE": "1"}
RUN_ONE = """import sys
from nbdev.test import test_nb
ok, secs = test_nb(sys.argv[1], skip_flags=sys.argv[2].split(), showerr=True, cell_timing_min=30)
print(f"{secs:.1f}")
sys.exit(0 if ok else 1)"""

def test_notebooks_found():
    # nbdev-test passes when it finds no notebook; this suite must not
    assert len(NBS) >= 8, f"expected the course notebooks in nbs/, found {[p.name for p in NBS]}"

@pytest.mark.slow
@pytest.mark.parametrize("nb", NBS, ids=[str(p.relative_to(ROOT/"nbs").with_suffix("")) for p in NBS])
def test_notebook(nb):
    flags = get_config().tst_flags
    n_cells = len(nbdev_test.nb_test_cells(nb, skip_flags=flags.split()))
    assert n_cells > 0 or nb.stem in PAGES, f"{nb.name}: no cell would run"
    r = subprocess.run([sys.executable, "-c", RUN_ONE, str(nb), flags], capture_output=True, text=True, timeout=1800,
                       env={**os.environ, **SMOKE_ENV})
    assert r.returncode == 0, f"{nb.name} failed:\n{r.stderr[-6000:]}"
    *slow, secs = r.stdout.strip().splitlines()
    print("\n".join([*slow, f"{nb.name}: {n_cells} cells in {float(secs):.1f}s"]))
