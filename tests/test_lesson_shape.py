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
    assert s["plots"] + s["tables"] >= 1, f"{nb.name}: no table or plot in the committed outputs (execute it: tools/execute_lessons.py)"
    text = nb.read_text(encoding="utf-8")
    for tier in ("Easy", "Medium", "Open"): assert f"**{tier}" in text, f"{nb.name}: no {tier.lower()} exercise"
    cells = json.loads(text)["cells"]
    assert sum("".join(c["source"]).startswith("#| solution") for c in cells) >= 3, f"{nb.name}: fewer than 3 solutions"
    outputs = json.dumps([c.get("outputs", []) for c in cells])
    assert not re.search(r"/(?:work|root|home|tmp)/[\w.-]+/", outputs), f"{nb.name}: a machine path in the outputs"
