"Kill a training process mid-run, resume it from the command line, and get the uninterrupted run's losses."
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from helpers import cli_command, run_cli, tiny_models

pytestmark = pytest.mark.slow  # the whole file trains (on the tiny model: resume is plumbing)
tiny = pytest.fixture(scope="module", autouse=True)(tiny_models)

ARGS = ["--max-steps", "8", "--epochs", "1", "--batch-size", "2", "--logging-steps", "1", "--eval-steps", "2", "--save-steps", "2",
        "--val-size", "16", "--test-size", "16", "--keep-checkpoints", "3"]
ENV = {"HF_HUB_OFFLINE": "1"}

def losses(run: Path) -> dict:
    return {m["step"]: m["loss"] for m in map(json.loads, (run/"metrics.jsonl").read_text().splitlines()) if "loss" in m}

def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    runs = tmp_path/"runs"
    p = subprocess.Popen([*cli_command(), "train", "--runs-dir", runs, "--run-name", "killed", *ARGS],
                         env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = runs/"killed"/"checkpoints"/"checkpoint-4"/"finetune_kit_complete"
    deadline = time.time() + 900
    while not marker.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert marker.exists(), "the run did not reach its step-4 checkpoint"
    assert not (runs/"killed"/"summary.json").exists(), "killed too late: the run had finished"

    r = run_cli("train", "--resume", runs/"killed", env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("train", "--runs-dir", runs, "--run-name", "straight", *ARGS, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = losses(runs/"killed"), losses(runs/"straight")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert all(abs(a[s] - b[s]) <= 1e-6 * max(1, abs(b[s])) for s in b), (a, b)
    # the CLI lists both runs as done
    r = run_cli("runs", "--runs-dir", runs)
    assert r.returncode == 0 and r.stdout.count("done") == 2, r.stdout

def test_resume_refuses_a_finished_or_foreign_folder(tmp_path):
    r = run_cli("train", "--resume", tmp_path)
    assert r.returncode == 2 and "not a run folder" in r.stderr and "Traceback" not in r.stderr

def test_a_run_stopped_after_its_last_checkpoint_only_finishes(tmp_path):
    "Killed after the checkpoint of its last step (before its adapter and summary): the resume trains no step more."
    args = ["--max-steps", "4", "--epochs", "1", "--batch-size", "4", "--logging-steps", "1", "--eval-steps", "2",
            "--save-steps", "2", "--val-size", "8", "--test-size", "8"]
    runs = tmp_path/"runs"
    r = run_cli("train", "--runs-dir", runs, "--run-name", "whole", *args, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    cut = runs/"cut"
    shutil.copytree(runs/"whole", cut)  # the same run, then cut: one training fewer than training it twice
    (cut/"summary.json").unlink()
    shutil.rmtree(cut/"adapter")  # what a kill between the last checkpoint and the end leaves
    r = run_cli("train", "--resume", cut, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert losses(cut) == losses(runs/"whole") and max(losses(cut)) == 4  # the Trainer alone trained a 5th step
    a, b = (load_file(d/"adapter"/"adapter_model.safetensors") for d in (cut, runs/"whole"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cut/"summary.json").read_text())["steps"] == 4
