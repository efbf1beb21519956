"""Execute the lessons at full size (not the test runner's shrunk runs) and save their outputs, for committing.

    python tools/execute_lessons.py                 # every lesson, in course order, timed
    python tools/execute_lessons.py 04_evaluate     # some of them

Each lesson runs in its own folder (nbs/), in one fresh kernel per lesson, with IN_TEST unset: what a learner runs.
Outputs are scrubbed of machine paths (the repository, the temp folder, the home folder) and of widget state, so
the committed notebooks show no machine's paths. The times go to nbs/lesson_times.json with the CPU class, for the
teacher's guide. `nbdev-clean` afterwards keeps the outputs and removes execution counts and metadata.
"""
import json, os, platform, re, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/"nbs"

def cpu_class() -> str:
    "AVX2 only, AVX512-BF16 or AMX, from /proc/cpuinfo (as the README and the benchmarks name it)."
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2": return "AVX2 only (emulated)"
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "AVX2 only"

def scrub(text: str) -> str:
    "Machine paths out of an output: the repository, temporary folders and the home folder."
    text = text.replace(str(NBS) + "/", "").replace(str(ROOT) + "/", "")
    text = re.sub(re.escape(tempfile.gettempdir()) + r"/[\w.-]+", "<tmp>", text)
    return text.replace(str(Path.home()), "~")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

def settle(text: str) -> str:
    "A terminal stream as it ends up on screen: each line's last carriage-return state, no ANSI escapes."
    return "\n".join(ANSI.sub("", line).split("\r")[-1] for line in text.split("\n"))

def _scrub_outputs(nb) -> None:
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                out["text"] = scrub(settle(text) if out.get("output_type") == "stream" else text)
            for k, v in (out.get("data") or {}).items():
                if k.startswith("text/") or k == "application/json":
                    out["data"][k] = scrub("".join(v) if isinstance(v, list) else v) if isinstance(v, (str, list)) else v
            out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)

def execute(path: Path) -> float:
    from fastcore.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    os.environ.pop("IN_TEST", None)
    nb = read_nb(path)
    start = time.time()
    with working_directory(path.parent): CaptureShell(path).run_all(nb, exc_stop=True)
    seconds = time.time() - start
    _scrub_outputs(nb)
    write_nb(nb, path)
    return seconds

def rescrub(path: Path) -> None:
    "Scrub the outputs a notebook already holds (after a change to `scrub` or `settle`)."
    from fastcore.nbio import read_nb, write_nb
    nb = read_nb(path)
    _scrub_outputs(nb)
    write_nb(nb, path)

def main(names: list[str]) -> None:
    import subprocess
    if names[:1] == ["--scrub"]:
        for p in sorted(NBS.glob("[0-9]*.ipynb")): rescrub(p)
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

if __name__ == "__main__":
    main(sys.argv[1:])
