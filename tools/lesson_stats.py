"""Per lesson: the longest code cell, code lines, exported lines and their share, figures/tables in the committed outputs,
and a reading estimate.

    python tools/lesson_stats.py

The reading estimate counts 200 words of prose, 15 lines of lesson code or 40 lines of library code (exported cells)
a minute; it leaves out the exercises. The teacher's guide quotes it. `share` is exported lines over code lines: a lesson
builds its core in front of the learner and imports the plumbing from `nbs/api/`, so the share stays at most 40 %."""
import json, re, sys
from pathlib import Path
from finetune_kit.workshop import reading_minutes  # the one formula, which the teacher's guide's table uses too

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(ROOT.joinpath("nbs").glob("[0-9]*.ipynb"))
MAX_CELL_LINES = 40  # the longest code cell a lesson may have
MAX_EXPORTED_SHARE = 0.40  # issue 30: at most this share of a lesson's code lines is exported plumbing

def cell_lines(cell: dict) -> int: return len("".join(cell["source"]).rstrip("\n").splitlines())

def shown(cell: dict) -> set[str]:
    "What kinds of rich output a code cell shows: 'plot' (an image) and 'table' (HTML or Markdown table)."
    kinds = set()
    for o in cell.get("outputs", []):
        data = o.get("data", {})
        if any(k.startswith("image/") for k in data): kinds.add("plot")
        html = "".join(data.get("text/html", ""))
        md = "".join(data.get("text/markdown", ""))
        if "<table" in html or re.search(r"^\|.*\|\s*$", md, re.M): kinds.add("table")
    return kinds

def stats(path: Path) -> dict:
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    exported = [c for c in code if "".join(c["source"]).lstrip().startswith("#| export")]
    longest = max(code, key=cell_lines, default=None)
    code_lines, exported_lines = sum(map(cell_lines, code)), sum(map(cell_lines, exported))
    return {"lesson": path.stem, "longest_cell": cell_lines(longest) if longest else 0,
            "longest_cell_id": longest.get("id") if longest else None, "code_lines": code_lines,
            "exported_lines": exported_lines, "share": f"{exported_lines / code_lines:.0%}" if code_lines else "0%",
            "plots": sum("plot" in shown(c) for c in code),
            "tables": sum("table" in shown(c) for c in code), "reading_min": reading_minutes(path)}

if __name__ == "__main__":
    rows = [stats(p) for p in LESSONS]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows: print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"newcomer path (00 to 05, without 03a): {sum(r['reading_min'] for r in rows if r['lesson'][:2] <= '05' and r['lesson'] != '03a_speed')} min reading")
    sys.exit(0)
