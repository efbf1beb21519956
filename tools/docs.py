"""Build the documentation website from the notebooks into _docs/, offline (nbdev's processing, then Sphinx + myst-nb).

    python tools/docs.py            # build _docs/ (only what changed is processed again)
    python tools/docs.py --clean    # from scratch: remove _proc/, _sphinx/ and _docs/ first

Open _docs/index.html in a browser, or serve it: python -m http.server -d _docs. With Quarto installed,
`nbdev-docs` builds nbdev's own Quarto site from the same notebooks.
"""
import shutil, sys
from pathlib import Path
from finetune_kit.docs import DocsError, build_site

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    if "--clean" in sys.argv:
        for d in ("_proc", "_sphinx", "_docs"): shutil.rmtree(ROOT/d, ignore_errors=True)
    try: print(build_site(ROOT))
    except DocsError as e: sys.exit(f"docs: {e}")
