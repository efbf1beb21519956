"Runs every notebook in nbs/ with nbdev's test runner: the tests that live beside the code."
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb

NBS = sorted(Path(__file__).resolve().parents[1].joinpath("nbs").glob("*.ipynb"))

def test_notebooks_found():
    # nbdev-test passes when it finds no notebook; this suite must not
    assert len(NBS) >= 8, f"expected the course notebooks in nbs/, found {[p.name for p in NBS]}"

@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    flags = get_config().tst_flags.split()
    ok, secs = test_nb(nb, skip_flags=flags, showerr=True)
    assert ok, f"{nb.name} failed (see the traceback above)"
