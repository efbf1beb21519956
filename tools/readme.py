"""Write README.md from nbs/index.ipynb without Quarto (nbconvert to Markdown), or check that it is in sync.

    python tools/readme.py          # rewrite README.md
    python tools/readme.py --check  # exit 1 if README.md differs from what the notebook gives
"""
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n"

def render() -> str:
    nb = nbformat.read(ROOT/"nbs"/"index.ipynb", as_version=4)
    # nbdev directives (`#| hide`, ...) and hidden cells are not for readers
    nb.cells = [c for c in nb.cells if not re.match(r"\s*#\|\s*hide", c.source)]
    for c in nb.cells:
        if c.cell_type == "code": c.source = "\n".join(l for l in c.source.splitlines() if not l.startswith("#|"))
    body, _ = MarkdownExporter().from_notebook_node(nb)
    # nbdev's `> summary` under the title is a blockquote in plain Markdown too
    return HEADER + re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"

if __name__ == "__main__":
    text, readme = render(), ROOT/"README.md"
    if "--check" in sys.argv:
        if not readme.is_file() or readme.read_text(encoding="utf-8") != text:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python tools/readme.py` and commit it")
        print("README.md is in sync with nbs/index.ipynb")
    else:
        readme.write_text(text, encoding="utf-8")
        print(f"wrote {readme}")
