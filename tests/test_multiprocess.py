"The same train command under torchrun with 2 CPU processes (DDP over gloo), as on several GPUs."
import json, os, shutil, subprocess
import pytest
from helpers import TINY

pytestmark = pytest.mark.slow  # the whole file loads the model, trains or serves

@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_process_cpu_training(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **TINY}  # DDP is plumbing: the tiny model
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", "29517", "-m", "finetune_kit.cli",
           "train", "--device", "cpu", "--runs-dir", str(tmp_path), "--run-name", "ddp", "--max-steps", "3", "--epochs", "1",
           "--batch-size", "4", "--logging-steps", "1", "--eval-steps", "3", "--val-size", "8", "--test-size", "8"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    summary = json.loads((tmp_path/"ddp"/"summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    assert (tmp_path/"ddp"/"adapter"/"adapter_model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"], "both processes must write into one run folder"
