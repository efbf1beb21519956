"The command line as a user runs it: a subprocess, offline, with real files."
import json, re
from pathlib import Path
import pytest
from helpers import run_cli

OFFLINE = {"HF_HUB_OFFLINE": "1"}

def assert_user_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    for n in needles: assert n in r.stderr, r.stderr

def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for c in ("quickstart", "train", "eval", "chat", "merge"): assert c in r.stdout

@pytest.mark.slow
def test_bad_model_says_what_was_tried(tmp_path):
    r = run_cli("train", "--model", "nobody/no-such-model", "--runs-dir", tmp_path, env=OFFLINE)
    assert_user_error(r, "could not find model 'nobody/no-such-model'", "Tried:", "local folder", "HF_HUB_OFFLINE")
    assert not any(tmp_path.iterdir()), "a failed start must not leave a run folder"

@pytest.mark.slow
def test_bad_data_is_located(tmp_path):
    bad = tmp_path/"bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\n'
                   '{"messages": [{"role": "user", "content": "hi"}]}\n'
                   'not json\n')
    r = run_cli("train", "--data", bad, "--runs-dir", tmp_path/"runs", env=OFFLINE)
    assert_user_error(r, f"{bad}:2: messages: no assistant turn", f"{bad}:3: (line): invalid JSON")
    assert bad.read_text().count("\n") == 3

def test_bad_config_names_the_key(tmp_path):
    cfg = tmp_path/"c.yaml"
    cfg.write_text("learnig_rate: 0.001\nepochs: many\n")
    r = run_cli("train", cfg)
    assert_user_error(r, "key 'learnig_rate': unknown key (did you mean 'learning_rate'?)", "key 'epochs'")
    r = run_cli("train", "--batch-size", "0.5")
    assert_user_error(r, "command line: key 'batch_size'")

BAD_VALUES = [("--batch-size", "0"), ("--eval-steps", "0"), ("--max-seq-len", "0"), ("--epochs", "-1"),
              ("--learning-rate", "-1e-4"), ("--val-size", "-0.1"), ("--max-steps", "0"), ("--save-steps", "-3"),
              ("--lora-r", "0"), ("--grad-accum", "0"), ("--test-size", "2.5"), ("--warmup", "-1")]

@pytest.mark.parametrize("flag,value", BAD_VALUES, ids=[f for f, _ in BAD_VALUES])
def test_bad_value_is_one_line_before_anything_loads(flag, value, tmp_path):
    r = run_cli("train", flag, value, "--runs-dir", tmp_path, env=OFFLINE, cwd=tmp_path)
    key = flag[2:].replace("-", "_")
    assert_user_error(r, f"key '{key}'")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not any(tmp_path.iterdir()), "nothing is written for a bad value"

@pytest.mark.slow
def test_default_alias_offline_with_empty_cache(tmp_path):
    "HF_HUB_OFFLINE=1, an empty finetune_kit cache and an empty HF cache: the alias still resolves, from the bundled GGUF."
    env = {**OFFLINE, "FINETUNE_KIT_CACHE": str(tmp_path/"ftk"), "HF_HOME": str(tmp_path/"hf")}
    code = ("from finetune_kit.model import load_model; from finetune_kit.model_sources import resolve_model; "
            "p = resolve_model('smollm2-135m'); "
            "m, t = load_model('smollm2-135m'); print(p); print(t.eos_token, sum(x.numel() for x in m.parameters()))")
    import subprocess, sys, os
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    path = Path(r.stdout.splitlines()[0])
    assert path.is_relative_to(tmp_path/"ftk") and (path/"model.safetensors").is_file()
    assert "converting" in r.stderr
    assert r.stdout.splitlines()[1].startswith("<|im_end|> 134")
    # the second load finds the converted checkpoint: no conversion again
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert r.returncode == 0 and "converting" not in r.stderr

def test_serve_flags_of_issues_33_and_34(tmp_path):
    "--model-alias and the connection caps are checked before the server listens: one line, status 2."
    for args, needle in ((["--model-alias", "gpt-4o"], "--model-alias 'gpt-4o': give OPENAI_NAME=LOCAL_NAME"),
                         (["--max-connections", "0"], "--max-connections 0: give a positive number"),
                         (["--max-client-connections", "-1"], "--max-client-connections -1: give a positive number"),
                         (["--model-alias", "gpt-4o=no-such-model", "--port", "0"],
                          "--model-alias gpt-4o=no-such-model: this server neither serves nor fine-tunes 'no-such-model'")):
        r = run_cli("serve", "--jobs-dir", tmp_path/"jobs", *args, env=OFFLINE, timeout=120, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr and needle in r.stderr, (args, r.stderr[-2000:])
