"""The style gate on the exported package: ruff (120 columns, one statement per line, no unused import; settings in
pyproject.toml).

    python tools/style.py   # exit 1 and list the lines, if any break the rules

One exception, not ours to fix: nbdev writes each module's `__all__` wrapped at 120 columns *before* it adds the
10-character `__all__ = ` prefix, so that generated line may run to 130. Everything else in `finetune_kit/` comes
from our notebooks, and is fixed there.
"""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def violations() -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "json", "finetune_kit"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode not in (0, 1): sys.exit(f"ruff failed:\n{r.stderr}")
    found = json.loads(r.stdout or "[]")
    def generated(v):
        line = (ROOT/v["filename"]).read_text(encoding="utf-8").splitlines()[v["location"]["row"] - 1]
        return v["code"] == "E501" and line.startswith("__all__ = [")
    return [v for v in found if not generated(v)]

if __name__ == "__main__":
    bad = violations()
    for v in bad: print(f"{Path(v['filename']).relative_to(ROOT)}:{v['location']['row']}: {v['code']} {v['message']}")
    if bad: sys.exit(f"{len(bad)} style problem(s): fix them in the notebooks (nbs/), then run nbdev-export")
    print("style: finetune_kit/ passes ruff (120 columns, no ; chains, no unused import)")
