"Runs every notebook in nbs/ (lessons) and nbs/api/ (reference) with nbdev's test runner: the tests beside the code."
import gc
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev import test as nbdev_test  # imported as a module: pytest would collect a bare `test_nb` as a test

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("index", "teachers_guide")  # pages of prose: no code cell to run
NBS = sorted(ROOT.joinpath("nbs").glob("**/*.ipynb"), key=lambda p: (p.parent.name == "api", str(p)))

def test_notebooks_found():
    # nbdev-test passes when it finds no notebook; this suite must not
    assert len(NBS) >= 8, f"expected the course notebooks in nbs/, found {[p.name for p in NBS]}"

@pytest.mark.slow
@pytest.mark.parametrize("nb", NBS, ids=[str(p.relative_to(ROOT/"nbs").with_suffix("")) for p in NBS])
def test_notebook(nb):
    flags = get_config().tst_flags.split()
    n_cells = len(nbdev_test.nb_test_cells(nb, skip_flags=flags))
    assert n_cells > 0 or nb.stem in PAGES, f"{nb.name}: no cell would run"
    ok, secs = nbdev_test.test_nb(nb, skip_flags=flags, showerr=True)
    gc.collect()  # the notebook's models: freed before the next notebook loads its own
    assert ok, f"{nb.name} failed (see the traceback above)"
    print(f"{nb.name}: {n_cells} cells in {secs:.1f}s")
