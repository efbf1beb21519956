"Default cleaning is the identity on code, JSON, Markdown and poetry, up to the documented normalisations (issue 12)."
import json, subprocess, sys, unicodedata
from hypothesis import given, settings, strategies as st
from finetune_kit.cleaning import CleanOptions, clean_example, clean_text, cleaning_effects
from finetune_kit.data import load_examples, prepare_data
from finetune_kit.splits import load_splits
from finetune_kit.sample_data import write_jsonl
from helpers import run_cli

SETTINGS = settings(max_examples=150, deadline=None)

def normalised(s: str) -> str:
    "The documented default normalisations, written independently of `clean_text`, in its documented order."
    invisible = {"\u200b", "\u2060", "\ufeff"}  # zero-width space, word joiner, byte-order mark
    # control characters: Unicode category Cc, but tab, newline, carriage return (a line ending) and C1 (U+0080-U+009F)
    control = lambda c: unicodedata.category(c) == "Cc" and c not in "\t\n\r" and ord(c) < 0x80
    s = "".join(c for c in s if c not in invisible and not control(c))
    s = s.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", s).rstrip()

# Generated text shaped like code, JSON, Markdown and poetry: indentation, runs of spaces, aligned columns, blank lines,
# fences. Words are NFC already, as most text is.
WORD = st.sampled_from(["x", "total", "if", "return", "def", "for", "in", "café", "Straße", "naïve", "数据", "🙂", "42",
                        "0.5", "None", "la", "mer", "the", "tide", "and", "stones", "é", "key", "value"])
GAP = st.sampled_from([" ", " ", " ", "  ", "   ", "\t", "    "])  # mostly one space, sometimes a run
INDENT = st.sampled_from(["", "", "  ", "    ", "        ", "\t", "\t\t", "      "])
SYMBOL = st.sampled_from(["=", "+=", "(", "):", "[", "]", "{", "}", ",", "->", "==", "#", "*", "'s'", '"x"', ":"])

@st.composite
def code_lines(draw):
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 4)) == 0:  # a blank line, or one of spaces only
            lines.append(draw(st.sampled_from(["", "", "    ", "\t"])))
            continue
        toks = draw(st.lists(st.one_of(WORD, SYMBOL), min_size=1, max_size=6))
        line = draw(INDENT) + "".join(t + draw(GAP) for t in toks[:-1]) + toks[-1]
        if draw(st.booleans()): line += draw(GAP) + "# " + draw(WORD)  # an aligned comment
        if draw(st.integers(0, 5)) == 0: line += draw(GAP)  # trailing spaces inside the text (a Markdown line break)
        lines.append(line)
    return "\n".join(lines)

@st.composite
def markdown_table(draw):
    cols = draw(st.integers(1, 4))
    rows = draw(st.lists(st.lists(WORD, min_size=cols, max_size=cols), min_size=1, max_size=4))
    width = [max(len(r[c]) for r in rows) + draw(st.integers(0, 4)) for c in range(cols)]
    cell = lambda r: "| " + " | ".join(w.ljust(width[c]) for c, w in enumerate(r)) + " |"
    rule = "|" + "|".join(draw(st.sampled_from(["---", ":--", "--:", ":-:"])) for _ in range(cols)) + "|"
    return "\n".join([cell(rows[0]), rule, *map(cell, rows[1:])])

@st.composite
def poem(draw):
    line = st.tuples(INDENT, st.lists(WORD, min_size=1, max_size=5), GAP)
    stanzas = draw(st.lists(st.lists(line, min_size=1, max_size=4), min_size=1, max_size=3))
    sep = draw(st.sampled_from(["\n\n", "\n\n\n", "\n \n"]))
    return sep.join("\n".join(ind + gap.join(words) for ind, words, gap in st_) for st_ in stanzas)

nfc_text = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), max_size=8).filter(
    lambda t: unicodedata.is_normalized("NFC", t))  # JSON strings as people write them: no controls, one Unicode form
json_values = st.recursive(st.none() | st.booleans() | st.integers() | nfc_text,
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(nfc_text, c, max_size=3), max_leaves=10)
indented_json = st.builds(lambda v, ind, asc: json.dumps(v, indent=ind, ensure_ascii=asc),
                          json_values, st.sampled_from([2, 4, "\t"]), st.booleans())
fenced = st.builds(lambda lang, body: f"```{lang}\n{body}\n```", st.sampled_from(["", "python", "yaml"]), code_lines())
block = st.one_of(code_lines(), markdown_table(), poem(), indented_json, fenced)
separators = st.lists(st.sampled_from(["\n\n", "\n", "\n\n\n\n"]), min_size=4, max_size=4)
document = st.builds(lambda blocks, seps: "".join(b + s for b, s in zip(blocks, seps)),
                     st.lists(block, min_size=1, max_size=4), separators)

# Noise the defaults normalise: Windows and old Mac line endings, control and zero-width characters, decomposed accents,
# spaces at the end.
NOISE = st.sampled_from(["\r\n", "\r", "\x07", "\x00", "\x1b", "\x7f", "\u200b", "\ufeff", "\u2060", "e\u0301", "\x0c",
                         "  ", "\n\t"])

@st.composite
def noisy(draw):
    s = draw(document)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(s)))
        s = s[:at] + draw(NOISE) + s[at:]
    return s

@SETTINGS
@given(document)
def test_default_cleaning_is_the_identity_on_structured_text(s):
    "Indentation, runs of spaces, tables, blank lines and fences survive byte for byte; only the final whitespace goes."
    assert clean_text(s) == s.rstrip()
    assert clean_example({"messages": [{"role": "assistant", "content": s}]})["messages"][0]["content"] == s.rstrip()

@SETTINGS
@given(noisy())
def test_default_cleaning_is_only_the_documented_normalisations(s):
    assert clean_text(s) == normalised(s)

@SETTINGS
@given(st.text(max_size=60))
def test_default_cleaning_on_any_text(s):
    out = clean_text(s)
    assert out == normalised(s) and clean_text(out) == out  # documented, and idempotent

def test_default_cleaning_keeps_leading_whitespace():
    "The first line's indentation can be meaning (a method body, an indented Markdown code block): kept."
    for s in ("    return x", "\n\ndef f():\n    pass", "\tindented"): assert clean_text(s) == s

# A fixed sample of real text in each shape: byte-identical after default cleaning.
PYTHON = '''import math


class Circle:
    """A circle.

    Args:
        r: radius in metres
    """

    def __init__(self, r: float):
        self.r = r          # radius
        self.unit = "m"     # aligned comments

    def area(self) -> float:
        if self.r < 0:
            raise ValueError("negative radius")

        return math.pi * self.r ** 2  \\
            + 0.0
'''
YAML = """model: smollm2-135m
lora:
  r: 16
  alpha: 32
  targets:
    - q_proj
    - v_proj
data:
  train: data/train.jsonl   # relative to this file
"""
JSON = json.dumps({"name": "Zoë", "tags": ["a", "b"], "nested": {"depth": 2, "list": [{"k": None}, []]}, "empty": {}},
                  indent=2, ensure_ascii=False)
MARKDOWN = """# Results

| model        | accuracy | tokens/s |
|--------------|---------:|---------:|
| base         |    0.21  |   1,850  |
| fine-tuned   |    0.97  |   1,850  |

First line of a paragraph with a hard break  
second line.

```python
def f(x):
    if x:

        return 1
```

    an indented code block
    with two lines

- a list
  - nested item
"""
POEM = """The tide goes out
    and leaves the stones
        to speak

of what   the water
    knew,


and does not say."""
SAMPLES = {"python": PYTHON, "yaml": YAML, "json": JSON, "markdown": MARKDOWN, "poem": POEM}

def chats(texts):
    return [{"messages": [{"role": "user", "content": f"Show me {k}."}, {"role": "assistant", "content": v}]}
            for k, v in texts.items()]

def test_fixed_samples_are_byte_identical(tmp_path):
    expected = {k: v.rstrip() for k, v in SAMPLES.items()}  # the final newline is the one documented change
    for k, v in SAMPLES.items(): assert clean_text(v) == expected[k], k
    assert [clean_example(c) for c in chats(expected)] == chats(expected)
    write_jsonl(chats(SAMPLES), tmp_path/"in.jsonl")  # the pipeline: prepare_data writes what it read
    stats = prepare_data(tmp_path/"in.jsonl", tmp_path/"out.jsonl")
    assert stats.written == 5 and load_examples(tmp_path/"out.jsonl") == chats(expected)
    # and as `train` reads it
    splits = load_splits(tmp_path/"in.jsonl", val_size=1, test_size=1, clean=CleanOptions(), verbose=False)
    assert sorted(e["messages"][1]["content"] for v in splits.values() for e in v) == sorted(expected.values())
    effects = {e.option: e.changed for e in cleaning_effects(chats(SAMPLES))}
    assert [effects[k] for k in ("nfc", "line_endings", "control", "trim_end")] == [0, 0, 0, 3]  # 3 end with a newline

def test_aggressive_steps_are_opt_in_and_change_code():
    flatten = CleanOptions(strip_lines=True, collapse_spaces=True, squeeze_blank_lines=True, trim_start=True)
    assert clean_text(PYTHON, flatten).split("\n")[9:11] == ["def __init__(self, r: float):", "self.r = r # radius"]
    html_eats_code = clean_text("<p>if a &lt; b: vector<int></p>", CleanOptions(strip_html=True))
    assert html_eats_code == "if a < b: vector"

def test_data_prepare_flags_are_the_opt_in_steps(tmp_path):
    r = run_cli("data", "prepare", "--help")
    assert r.returncode == 0, r.stderr
    help_text = " ".join(r.stdout.split())
    for flag in ("--collapse-spaces", "--strip-lines", "--strip-line-ends", "--squeeze-blank-lines", "--trim-start",
                 "--strip-html", "--lowercase", "--stem"):
        assert flag in help_text, flag
    assert "runs of spaces, tabs, no-break spaces inside a line -> one space" in help_text  # the option's docment
    assert "--nfc" not in help_text and "--trim-end" not in help_text  # the defaults are not flags
    write_jsonl(chats({"python": PYTHON}), tmp_path/"in.jsonl")
    r = run_cli("data", "prepare", tmp_path/"in.jsonl", tmp_path/"kept.jsonl")
    assert r.returncode == 0, r.stderr
    assert load_examples(tmp_path/"kept.jsonl")[0]["messages"][1]["content"] == PYTHON.rstrip()
    r = run_cli("data", "prepare", tmp_path/"in.jsonl", tmp_path/"flat.jsonl", "--strip-lines", "--collapse-spaces")
    assert r.returncode == 0, r.stderr
    assert "\n    " not in load_examples(tmp_path/"flat.jsonl")[0]["messages"][1]["content"]

def test_the_parser_does_not_import_torch():
    "`data prepare` builds its flags from `CleanOptions`: the data module must stay light to import."
    code = ("import sys, finetune_kit.cli as c; c.build_parser(); "
            "print([m for m in ('torch', 'datasets', 'transformers') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr[-2000:]
