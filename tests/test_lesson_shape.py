"""The lessons' form, as issue 14 asks it: no code cell over ~40 lines, at least one table or plot in the committed
outputs, exercises in three tiers with solutions, and no machine path in an output (fast: reads the JSON only)."""
import importlib.util, json, re
import pytest
from helpers import ROOT

spec = importlib.util.spec_from_file_location("lesson_stats", ROOT/"tools"/"lesson_stats.py")
lesson_stats = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lesson_stats)
LESSONS = lesson_stats.LESSONS

def test_lessons_found(): assert len(LESSONS) >= 8

@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_shape(nb):
    s = lesson_stats.stats(nb)
    assert s["longest_cell"] <= lesson_stats.MAX_CELL_LINES, f"{nb.name}: cell {s['longest_cell_id']} has {s['longest_cell']} lines"
    assert s["plots"] >= 1, f"{nb.name}: no plot in the committed outputs (the docs show one on every lesson; execute it: tools/execute_lessons.py)"
    text = nb.read_text(encoding="utf-8")
    for tier in ("Easy", "Medium", "Open"): assert f"**{tier}" in text, f"{nb.name}: no {tier.lower()} exercise"
    cells = json.loads(text)["cells"]
    assert sum("".join(c["source"]).startswith("#| solution") for c in cells) >= 3, f"{nb.name}: fewer than 3 solutions"
    outputs = json.dumps([c.get("outputs", []) for c in cells])
    assert not re.search(r"/(?:work|root|home|tmp)/[\w.-]+/", outputs), f"{nb.name}: a machine path in the outputs"


ALL_NBS = sorted(ROOT.glob("nbs/*.ipynb")) + sorted(ROOT.glob("nbs/api/*.ipynb"))

@pytest.mark.parametrize("nb", ALL_NBS, ids=[p.stem for p in ALL_NBS])
def test_imports_alone(nb):
    """nbdev's docs processing (nbdev-proc-nbs, before Quarto or Sphinx) executes every cell that imports, in a notebook
    with exports, without the cells around it: such a cell must only import (or define), as nbdev's FAQ says."""
    import ast, warnings
    from nbdev.process import NBProcessor, read_nb
    from nbdev.processors import _do_eval
    book = read_nb(nb)
    NBProcessor(nb=book, procs=[])  # parses each cell's directives
    code = [c for c in book.cells if c.cell_type == "code"]
    if not any(c.directives_.keys() & {"export", "exports", "exporti"} for c in code): return  # no docs executed
    bad = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in code:
            if c.directives_.keys() & {"export", "exports", "exporti", "exec_doc"} or not _do_eval(c): continue
            if any(not isinstance(t, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)) for t in c.parsed_()):
                bad.append(c.source.splitlines()[0][:80])
    assert bad == [], f"{nb.name}: cells that import and also run code (put the imports in a cell of their own): {bad}"
