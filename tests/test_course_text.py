"""The course's prose held to its own committed outputs (issue 30), and the teacher's guide's time table to
`nbs/lesson_times.json`.

A figure a lesson's prose states (a decimal, a percentage, a ratio such as `1.3×`) must be a number that the
committed outputs of the lesson show, in the prose's section or an earlier one, at the precision written: `11%`
matches an output `0.1094`, `3.20` matches `3.2049`. A figure that is not about the lesson's own run (arithmetic, a
property of English, a benchmark of `bench/`) is listed in the cell, with the reason, in a comment
`<!-- figures not from the outputs: 5.6% (18,432 / 331,776) -->`. Integers are not checked (counts, steps, years)."""
import json, re
from pathlib import Path
import pytest
from helpers import ROOT

NBS = ROOT/"nbs"
LESSONS = sorted(NBS.glob("[0-9]*.ipynb"))
FIGURE = re.compile(r"(?<![\w.,/-])(\d+(?:,\d{3})*(?:\.\d+)?)(\s?%|×)?(?!\w)")
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")
UNCHECKED = re.compile(r"<!--\s*figures not from the outputs:(.*?)-->", re.S)
LISTED = re.compile(r"(\d[\d,.]*(?:\s?%|×)?)\s*\(")  # a listed figure, then its reason in brackets

def _text(cell: dict) -> str: return "".join(cell["source"])

def outputs_text(cell: dict) -> str:
    "What a code cell's committed outputs show as text (streams, plain text, Markdown, HTML without its tags)."
    parts = []
    for o in cell.get("outputs", []):
        if "text" in o: parts.append("".join(o["text"]))
        for kind in ("text/plain", "text/markdown", "text/html"):  # HTML: a DataFrame's whole table, unelided
            if kind in o.get("data", {}): parts.append(re.sub(r"<[^>]*>", " ", "".join(o["data"][kind])))
    return "\n".join(parts)

def prose(md: str) -> str:
    "A Markdown cell without what is not prose: code blocks and spans, math, link targets, HTML comments."
    for pattern in (r"```.*?```", r"`[^`\n]*`", r"\$\$.*?\$\$", r"\$[^$\n]*\$", r"\]\([^)]*\)", r"<!--.*?-->"):
        md = re.sub(pattern, " ", md, flags=re.S)
    return md

def shown(figure: str, unit: str | None, numbers: list[float]) -> bool:
    "Whether `figure` (as written, with its unit) rounds from one of `numbers`."
    value, decimals = float(figure.replace(",", "")), len(figure.split(".")[1]) if "." in figure else 0
    percent = bool(unit) and "%" in unit
    return any(round(x, decimals) == value or (percent and round(100 * x, decimals) == value) for x in numbers)

def figures_not_shown(nb: dict) -> list[tuple[int, str, str]]:
    "(cell index, figure, its context) for each figure of the prose that no output of its section or before shows."
    cells, seen, found = nb["cells"], [], []
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            seen.append(outputs_text(cell))
            continue
        numbers = [float(x.replace(",", "")) for x in NUMBER.findall("\n".join(seen + _section_after(cells, i)))]
        listed = {f.strip() for block in UNCHECKED.findall(_text(cell)) for f in LISTED.findall(block)}
        text = prose(_text(cell))
        for m in FIGURE.finditer(text):
            figure, unit = m[1], m[2]
            if "." not in figure and not unit: continue  # integers: counts, steps, years
            if m[0].strip() in listed: continue
            if not shown(figure, unit, numbers):
                found.append((i, m[0].strip(), " ".join(text[max(0, m.start() - 60):m.end() + 20].split())))
    return found

def _section_after(cells: list[dict], i: int) -> list[str]:
    "The outputs of the code cells after cell `i` up to the next heading of level 1 or 2."
    out = []
    for cell in cells[i + 1:]:
        if cell["cell_type"] == "markdown" and re.match(r"#{1,2} ", _text(cell)): break
        if cell["cell_type"] == "code": out.append(outputs_text(cell))
    return out

def listed_but_absent(nb: dict) -> list[tuple[int, str]]:
    "Figures a cell lists as not from the outputs that its prose no longer states (a stale list)."
    bad = []
    for i, cell in enumerate(nb["cells"]):
        for listed in UNCHECKED.findall(_text(cell)):
            for item in LISTED.findall(listed):
                if item.strip() not in prose(_text(cell)): bad.append((i, item))
    return bad

def _nb(markdown: list[str], outputs: list[str]) -> dict:
    cells = [{"cell_type": "code", "source": ["x"], "outputs": [{"output_type": "stream", "text": [o]}]} for o in outputs]
    return {"cells": cells + [{"cell_type": "markdown", "source": [m]} for m in markdown]}

def test_the_figure_check_reads_figures_as_written():
    nb = _nb(["Loss 3.20 at r=2; 11% right, a team in 28%; `lr=3e-3` and $\\alpha=2.5$ are code; 4.9M numbers, "
              "SmolLM2-1.7B, 684 tickets. <!-- figures not from the outputs: 28% (18 of 64, counted) -->"],
             ["loss 3.2049\naccuracy 0.1094"])
    assert figures_not_shown(nb) == []
    nb = _nb(["The base model found a team in 28% of its answers and 1.35 more."], ["accuracy 0.1094"])
    assert [f for _, f, _ in figures_not_shown(nb)] == ["28%", "1.35"]
    assert listed_but_absent(_nb(["Nothing. <!-- figures not from the outputs: 5.6% (arithmetic) -->"], [])) == [(0, "5.6%")]

@pytest.mark.parametrize("lesson", [p.name for p in LESSONS])
def test_lesson_prose_states_only_figures_its_outputs_show(lesson):
    nb = json.loads((NBS/lesson).read_text(encoding="utf-8"))
    assert figures_not_shown(nb) == [], "figures no output of the lesson shows (fix them, or list them with a reason)"
    assert listed_but_absent(nb) == []

def test_guide_time_table_is_the_one_lesson_times_json_makes():
    "The teacher's guide shows the table `lesson_times_table` builds from nbs/lesson_times.json (re-execute the guide)."
    from finetune_kit.workshop import lesson_times_table
    guide = json.loads((NBS/"teachers_guide.ipynb").read_text(encoding="utf-8"))
    shown_tables = [o["data"]["text/markdown"] for c in guide["cells"] if c["cell_type"] == "code"
                    for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
    assert ["".join(t).strip() for t in shown_tables] == [lesson_times_table(NBS).strip()], \
        "the guide's table is stale: python tools/execute_lessons.py --guide"
