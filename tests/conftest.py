"""Fixtures and settings shared by the tests; shared helper functions live in helpers.py.

The suite runs in parallel with pytest-xdist (`-n auto --dist loadgroup` in pyproject.toml): one worker per core and
one more, as many as the memory allows (`pytest_xdist_auto_num_workers`), each computing on one thread, so that no
worker's thread pool spins against another's. A module's tests run on one worker (they may share its fixtures: a trained run, a server) unless
the module is marked `independent`; the work is dealt out the slowest first, so that no worker is left with a long
test at the end: by the durations of the last run (pytest's cache), else by the `cost` hints."""
import functools, json, os, shutil, tempfile
from collections import Counter
from pathlib import Path
import pytest
import openai_conformance
from helpers import ROOT, WORKER_GIB
DURATIONS = "finetune_kit/durations"  # pytest's cache: seconds per test in the last run that ran it

if os.environ.get("PYTEST_XDIST_WORKER") and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # one thread per worker: two workers with a thread pool each on 2 cores spin against each other. Set before torch
    # starts its thread pool; subprocesses (the CLI, servers, notebooks) inherit it
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import sys
    if "torch" in sys.modules: sys.modules["torch"].set_num_threads(1)


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: a worker per physical core and one more, no more than the memory holds at WORKER_GIB each, at most 4.
    The extra worker computes while the others wait (for a subprocess's output, a server to start, a browser); on a
    2-core CPU emulating AVX2 the suite took 14:04 with 3 workers against 17:31 with 2."""
    import psutil
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, min(cores + 1, int(psutil.virtual_memory().available / 2**30 // WORKER_GIB), 4))


def _test_id(nodeid: str) -> str: return nodeid.split("@")[0]  # xdist appends "@group" to a grouped test's id


@functools.cache
def _lesson_times() -> dict: return json.loads((ROOT/"nbs"/"lesson_times.json").read_text())  # read once a session


def _hint(item, module_tests: int) -> float:
    """What an item costs, in seconds, before any run has measured it: a lesson's recorded full-size time scaled to the
    test runner's smoke run, a module's `cost` mark shared among its tests, 1 s otherwise. For ordering only."""
    if item.originalname == "test_notebook" and hasattr(item, "callspec"):
        nb = Path(item.callspec.params["nb"])
        return 20 + _lesson_times().get(nb.stem, {}).get("seconds", 0) / 5 if nb.parent.name == "nbs" else 10
    if mark := item.get_closest_marker("cost"):
        return float(mark.args[0]) / module_tests
    return 1.0


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    "Each module's tests in one group unless it is `independent`; the groups ordered slowest first, each kept in order."
    measured = config.cache.get(DURATIONS, {}) if getattr(config, "cache", None) else {}
    groups: dict[str, list] = {}
    for item in items:
        if not item.get_closest_marker("xdist_group") and not item.get_closest_marker("independent"):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
        mark = item.get_closest_marker("xdist_group")
        groups.setdefault(mark.args[0] if mark else item.nodeid, []).append(item)
    per_module = Counter(item.module for item in items)
    cost = lambda item: measured.get(_test_id(item.nodeid)) or _hint(item, per_module[item.module])
    order = sorted(groups.values(), key=lambda g: -sum(map(cost, g)))
    items[:] = [item for g in order for item in g]


def pytest_runtest_logreport(report):
    "Each test's setup, call and teardown seconds, added up (in the process that reports: xdist's controller)."
    _seconds[_test_id(report.nodeid)] = _seconds.get(_test_id(report.nodeid), 0.0) + report.duration

_seconds: dict[str, float] = {}


def pytest_configure(config):
    """Every JSON response from a `/v1` route that a test receives is checked against OpenAI's published spec
    (openai_conformance.py); the controller makes the folder where each process records what it checked."""
    if not hasattr(config, "workerinput"):
        os.environ[openai_conformance.LOG_DIR] = tempfile.mkdtemp(prefix="finetune_kit_conformance_")
    openai_conformance.watch()


def pytest_sessionfinish(session):
    """The durations of this run into pytest's cache, for the next run's order (not from xdist's workers); the
    conformance count, and a failed run if any response did not conform."""
    if hasattr(session.config, "workerinput"): return
    if getattr(session.config, "cache", None) and _seconds:
        session.config.cache.set(DURATIONS, {**session.config.cache.get(DURATIONS, {}),
                                             **{k: round(v, 1) for k, v in _seconds.items()}})
    d = Path(os.environ.get(openai_conformance.LOG_DIR, ""))
    if d.name and any(d.glob("*.jsonl")):
        text, bad = openai_conformance.summary(d)
        _conformance[:] = [text] + [f"  NOT CONFORMING {r['route']} {r['status']} in {r['test']}: "
                                    + "; ".join(r["problems"]) for r in bad[:50]]
        shutil.rmtree(d, ignore_errors=True)
        if bad and session.exitstatus == 0: session.exitstatus = pytest.ExitCode.TESTS_FAILED

_conformance: list[str] = []


def pytest_terminal_summary(terminalreporter):
    for line in _conformance: terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def root() -> Path: return ROOT
