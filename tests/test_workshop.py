"`finetune-kit workshop prepare` as a teacher runs it: student copies without solution code, executed copies."
import json
import pytest
from helpers import ROOT, run_cli

pytestmark = pytest.mark.slow
LESSONS = sorted((ROOT/"nbs").glob("[0-9]*.ipynb"))

def _cells(p): return json.loads(p.read_text())["cells"]
def _src(c): return "".join(c["source"])

@pytest.fixture(scope="module")
def workshop(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    r = run_cli("workshop", "prepare", "ws", "--no-train", cwd=d)  # a relative folder, as a teacher types it
    assert r.returncode == 0, r.stderr
    assert "solutions taken out" in r.stdout
    return d/"ws"

def test_student_copies_hold_no_solution_code(workshop):
    for lesson in LESSONS:
        student, cells = workshop/"student"/lesson.name, _cells(lesson)
        solutions = [_src(c) for c in cells if _src(c).lstrip().startswith("#| solution")]
        assert len(solutions) >= 3, f"{lesson.name}: every lesson has three tiers of exercises with solutions"
        copy = _cells(student)
        text = "\n".join(_src(c) for c in copy)
        rest = "\n".join(_src(c) for c in cells if not _src(c).lstrip().startswith("#| solution"))
        assert "#| solution" not in text
        for sol in solutions:  # no line of a solution's code is left in the copy (lines the lesson has elsewhere aside)
            for line in sol.splitlines()[1:]:
                if len(line.strip()) > 12 and line not in rest: assert line not in text, f"{student.name} holds {line!r}"
        # the copy is the lesson minus the solutions: the lesson's own run (test_notebooks) runs these cells
        keep = lambda cs: [_src(c) for c in cs if not _src(c).lstrip().startswith(("#| solution", "# Your solution"))]
        assert keep(copy) == keep(cells)
        assert all(not c.get("outputs") for c in copy if c["cell_type"] == "code")
        assert _cells(workshop/"executed"/lesson.name) == cells  # executed copies: the lessons as committed

def test_a_student_copy_runs_from_its_folder(workshop):
    from nbdev import test as nbdev_test
    ok, _ = nbdev_test.test_nb(workshop/"student"/"01_data.ipynb", skip_flags=["slow", "gpu"], showerr=True)
    assert ok, "the student copy of 01_data failed in the workshop folder (see above)"

def test_prepare_refuses_a_prepared_folder(workshop):
    r = run_cli("workshop", "prepare", str(workshop), "--no-train")
    assert r.returncode == 2 and "prepared workshop already" in r.stderr and "Traceback" not in r.stderr
