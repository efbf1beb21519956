"""Device choice on an Apple-silicon Mac, faked: `auto` stays on the CPU (where the course is tested) and says so once;
`mps` when asked. The first is in the fast tier; no model is loaded."""
import subprocess, sys

import pytest, torch

from finetune_kit import model as M


def test_auto_stays_on_the_cpu_when_an_apple_gpu_is_there(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(M, "_MPS_NOTED", [])
    assert [M.pick_device(), M.pick_device("auto")] == ["cpu", "cpu"]
    err = capsys.readouterr().err
    assert err.count("Apple GPU (mps) found") == 1 and "--device mps" in err
    assert M.pick_device("mps") == "mps" and M.pick_precision("auto", "cpu") in ("bf16", "fp32")


@pytest.mark.slow
def test_a_lesson_setting_runs_on_the_cpu_with_the_line(tmp_path):
    "What a lesson calls first (`pick_device`, then a config's device) in a fresh process on a faked Mac."
    code = ("import torch; torch.cuda.is_available = lambda: False; torch.backends.mps.is_available = lambda: True\n"
            "from finetune_kit.model import pick_device, pick_precision\n"
            "from finetune_kit.fit import main_process\n"
            "d = pick_device(); print(d, pick_precision('auto', d), main_process('auto').device.type)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[0] == "cpu" and r.stdout.split()[2] == "cpu", r.stdout
    assert r.stderr.count("Apple GPU (mps) found") == 1, r.stderr
