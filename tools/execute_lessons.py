"""Execute the lessons at full size (not the test runner's shrunk runs) and save their outputs, for committing.

    python tools/execute_lessons.py                 # every lesson, in course order, timed
    python tools/execute_lessons.py 04_evaluate     # some of them
    python tools/execute_lessons.py --guide         # only the teacher's guide (its table of these times)

Each lesson runs in its own folder (nbs/), in one fresh kernel per lesson, with IN_TEST unset: what a learner runs.
Outputs are scrubbed of machine paths (the repository, the temp folder, the home folder) and of widget state, so
the committed notebooks show no machine's paths. The times go to nbs/lesson_times.json with the CPU class, and the
teacher's guide is executed again afterwards: its time table is made from that file (tests/test_course_text.py checks). `nbdev-clean` afterwards keeps the outputs and removes execution counts and metadata.
"""
import json, os, platform, sys
from pathlib import Path
from finetune_kit.workshop import cpu_class, execute_notebook, scrub_outputs

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/"nbs"

def execute(path: Path) -> float: return execute_notebook(path, NBS, ROOT)

def rescrub(path: Path) -> None:
    "Scrub the outputs a notebook already holds (after a change to `scrub` or `settle`)."
    from fastcore.nbio import read_nb, write_nb
    nb = read_nb(path)
    scrub_outputs(nb, NBS, ROOT)
    write_nb(nb, path)

def main(names: list[str]) -> None:
    import subprocess
    if names[:1] == ["--scrub"]:
        for p in sorted(NBS.glob("[0-9]*.ipynb")): rescrub(p)
        return
    if names[:1] == ["--guide"]:
        execute(NBS/"teachers_guide.ipynb")
        return
    lessons = [p for p in sorted(NBS.glob("[0-9]*.ipynb")) if not names or p.stem in names]
    if len(lessons) > 1:  # one process per lesson: a fresh kernel, memory given back, a clean time
        for p in lessons: subprocess.run([sys.executable, __file__, p.stem], check=True)
        return
    times_file = NBS/"lesson_times.json"
    for p in lessons:
        print(f"{p.name} ...", flush=True)
        s = execute(p)
        times = json.loads(times_file.read_text()) if times_file.is_file() else {}
        times[p.stem] = {"seconds": round(s), "cpu": cpu_class(), "cores": os.cpu_count(),
                         "machine": platform.processor() or platform.machine()}
        times_file.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n")
        print(f"{p.name}: {s / 60:.1f} min", flush=True)
    if lessons: execute(NBS/"teachers_guide.ipynb")  # its table of these times (a few seconds)

if __name__ == "__main__":
    main(sys.argv[1:])
