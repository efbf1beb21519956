"""The package's import graph, read from the exported modules' source (no import is run).

    python tools/import_graph.py           # the graph, imports through a re-export, unused imports, cycles
    python tools/import_graph.py --check   # the same, exit 1 if any count is not 0

Prints `module -> the package modules it imports` (a lazy import, inside a function, in brackets), then:
- imports through a re-export: `from A import n` where `n` is not defined in A but imported there from B;
- deliberate re-exports: names a module imports and lists in its `__all__` (nbdev's `_all_`) or marks `# noqa: F401`;
- unused imports: ruff's F401 on finetune_kit/ (a `# noqa: F401` marks a deliberate one);
- cycles among the module-level imports, and upward imports: an import A -> B where B is a later stage than A
  (STAGES, as STYLE.md orders them) or where B, through any chain of imports (lazy ones too), imports A;
- callers outside the package (tests/, bench/, tools/, README.md, the notebooks' non-exported cells) that import a
  name from a module that only re-exports it, or that the module does not have at all.
"""
import ast, json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "finetune_kit"
LAZY_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
STAGES = ["config", "data", "model", "train", "evaluate", "deploy", "jobs"]  # STYLE.md: a stage imports earlier ones

def modules() -> dict[str, ast.Module]:
    "Each exported module's syntax tree, by short name (`__init__` for the package)."
    return {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in sorted((ROOT/PKG).glob("*.py"))
            if p.stem != "_modidx"}

def target(node, mods) -> str | None:
    "The package module an import statement reads from, or None for any other import."
    if isinstance(node, ast.ImportFrom):
        name = node.module or ""
        if node.level == 1: name = f"{PKG}.{name}" if name else PKG
        if name == PKG: return "__init__"
        if name.startswith(PKG + "."): return name.split(".")[1]
    elif isinstance(node, ast.Import):
        for a in node.names:
            if a.name == PKG: return "__init__"
            if a.name.startswith(PKG + "."): return a.name.split(".")[1]
    return None

def package_imports(tree, mods):
    "(import node, target module, lazy?) for each import of a package module, lazy when inside a function."
    out = []
    def walk(node, lazy):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                t = target(child, mods)
                if t is not None: out.append((child, t, lazy))
            walk(child, lazy or isinstance(child, LAZY_SCOPES))
    walk(tree, False)
    return out

def bound_names(target_node) -> list[str]:
    if isinstance(target_node, ast.Name): return [target_node.id]
    if isinstance(target_node, (ast.Tuple, ast.List)): return [n for e in target_node.elts for n in bound_names(e)]
    return []

def module_level(tree):
    "The statements that run at import: the module's body, with the bodies of its `if`/`try`/`with` blocks."
    todo = list(tree.body)
    while todo:
        s = todo.pop(0)
        yield s
        if isinstance(s, (ast.If, ast.Try, ast.With)):
            todo += s.body + getattr(s, "orelse", []) + getattr(s, "finalbody", [])
            todo += [b for h in getattr(s, "handlers", []) for b in h.body]

def definitions(tree) -> set[str]:
    "Names a module defines itself (functions, classes, assignments), not the ones it imports."
    names = set()
    for s in module_level(tree):
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.add(s.name)
        elif isinstance(s, ast.Assign): names.update(n for t in s.targets for n in bound_names(t))
        elif isinstance(s, (ast.AnnAssign, ast.AugAssign)): names.update(bound_names(s.target))
    return names

def bound(tree) -> set[str]:
    "Every name a module binds at import: its definitions and whatever it imports (from anywhere)."
    names = definitions(tree)
    for s in module_level(tree):
        if isinstance(s, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in s.names)
    return names

def imported(tree, mods) -> dict[str, tuple[str, str]]:
    "Module-level `from <package module> import n [as m]`: {m: (module, n)}."
    out = {}
    for s in module_level(tree):
        t = target(s, mods) if isinstance(s, ast.ImportFrom) else None
        if t: out.update({a.asname or a.name: (t, a.name) for a in s.names})
    return out

def home(mod: str, name: str, defs, imps, seen=()) -> str | None:
    "The module that defines `name`, following re-exports from `mod`; None if it is not found."
    if name in defs.get(mod, ()): return mod
    if (mod, name) in seen or name not in imps.get(mod, {}): return None
    src, orig = imps[mod][name]
    return home(src, orig, defs, imps, seen + ((mod, name),))

def declared_all(tree) -> set[str]:
    "Names in the module's `__all__` (nbdev writes it from the definitions and any `_all_ = [...]`)."
    for s in tree.body:
        if isinstance(s, ast.Assign) and {getattr(t, "id", None) for t in s.targets} & {"__all__", "_all_"}:
            try: return set(ast.literal_eval(s.value))
            except ValueError: pass
    return set()

def ruff_unused(paths) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F401", "--output-format", "json",
                        "--no-fix", *map(str, paths)], cwd=ROOT, capture_output=True, text=True)
    if r.returncode not in (0, 1): sys.exit(f"ruff failed:\n{r.stderr}")
    return json.loads(r.stdout or "[]")

def sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    "Strongly connected components with more than one module (Tarjan), i.e. the cycles."
    index, low, stack, on, out = {}, {}, [], set(), []
    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index: visit(v)
    return out

def floors(graph) -> dict[str, int]:
    "Each module's floor: 0 for a module that imports no package module, else one above the highest it imports."
    memo = {}
    def floor(v, seen=()):
        if v not in memo: memo[v] = 1 + max((floor(w, seen + (v,)) for w in graph.get(v, ()) if w not in seen),
                                            default=-1)
        return memo[v]
    return {v: floor(v) for v in graph}

def reaches(graph, a, b) -> bool:
    seen, todo = set(), [a]
    while todo:
        v = todo.pop()
        if v == b: return True
        if v not in seen:
            seen.add(v)
            todo += graph.get(v, ())
    return False

def caller_sources():
    "(where, source) of the code outside the package that imports from it."
    for d in ("tests", "bench", "tools"):
        for p in sorted((ROOT/d).glob("*.py")): yield str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")
    readme = ROOT/"README.md"
    if readme.is_file():
        code = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
        yield "README.md", "\n".join(code)
    for p in sorted((ROOT/"nbs").rglob("*.ipynb")):
        cells = json.loads(p.read_text(encoding="utf-8"))["cells"]
        for i, c in enumerate(cells):
            src = "".join(c["source"])
            if c["cell_type"] == "code" and not re.match(r"\s*#\|\s*export", src):
                python = [l for l in src.splitlines() if l.lstrip()[:1] not in ("%", "!")]  # no IPython magics
                yield f"{p.relative_to(ROOT)} cell {i}", "\n".join(python)

def report(check=False) -> int:
    mods = modules()
    defs = {m: definitions(t) for m, t in mods.items()}
    imps = {m: imported(t, mods) for m, t in mods.items()}
    eager, lazy, through, deliberate, unresolved = {}, {}, [], [], []
    for m, tree in mods.items():
        eager[m], lazy[m] = set(), set()
        public = declared_all(tree)
        noqa = {i + 1 for i, l in enumerate((ROOT/PKG/f"{m}.py").read_text(encoding="utf-8").splitlines())
                if re.search(r"#\s*noqa:.*F401", l)}
        for node, t, is_lazy in package_imports(tree, mods):
            if t != m: (lazy if is_lazy else eager)[m].add(t)
            if not isinstance(node, ast.ImportFrom) or t == "__init__": continue
            for a in node.names:
                h = home(t, a.name, defs, imps)
                if h is None and t in mods and a.name not in defs[t]: unresolved.append(f"{m}: {a.name} from {t}")
                elif h not in (None, t): through.append(f"{m}: {a.name} from {t}, defined in {h}"
                                                        + (" (lazy)" if is_lazy else ""))
                if h != m and not is_lazy and ((a.asname or a.name) in public
                                                or set(range(node.lineno, node.end_lineno + 1)) & noqa):
                    deliberate.append(f"{m}: {a.asname or a.name} (defined in {h})")
    for m in eager: lazy[m] -= eager[m]
    both = {m: eager[m] | lazy[m] for m in mods}
    cycles = sccs(eager)
    later = lambda a, b: a in STAGES and b in STAGES and STAGES.index(b) > STAGES.index(a)
    upward = [f"{a} -> {b}" + (" (lazy)" if b in lazy[a] else "") for a in sorted(both) for b in sorted(both[a])
              if reaches(both, b, a) or later(a, b)]
    unused = ruff_unused(sorted(p for p in (ROOT/PKG).glob("*.py") if p.stem != "_modidx"))
    callers, missing = [], []
    names = {m: bound(t) for m, t in mods.items()}
    for where, src in caller_sources():
        try: tree = ast.parse(src)
        except SyntaxError: continue
        for node in ast.walk(tree):
            t = target(node, mods) if isinstance(node, ast.ImportFrom) and node.level == 0 else None
            if t and t != "__init__":
                for a in node.names:
                    h = home(t, a.name, defs, imps)
                    if h not in (None, t): callers.append(f"{where}: {a.name} from {t}, defined in {h}")
                    if t in mods and a.name != "*" and a.name not in names[t]:
                        missing.append(f"{where}: {a.name} from {t}")

    level = floors(eager)
    print(f"# import graph of {PKG} (module [its floor] -> package modules it imports; [lazy] inside a function)")
    for m in sorted(mods):
        parts = sorted(eager[m]) + [f"[{t}]" for t in sorted(lazy[m])]
        print(f"{m} [floor {level[m]}] -> {', '.join(parts) if parts else '(none)'}")
    def section(title, items):
        print(f"\n# {title}: {len(items)}")
        for i in items: print(f"  {i}")
    top = max(level, key=level.get)
    print(f"\n# floors of the module-level import graph: {level[top] + 1} (the top: {top}, at floor {level[top]})")
    section("imports through a re-export", through)
    section("unused imports (ruff F401)", [f"{Path(u['filename']).relative_to(ROOT)}:{u['location']['row']}: "
                                           f"{u['message']}" for u in unused])
    section("deliberate re-exports (__all__ / _all_ / noqa: F401)", deliberate)
    section("cycles among module-level imports", [" <-> ".join(c) for c in cycles])
    section("upward imports (to a later stage, or to a module that imports this one back)", upward)
    section("callers outside the package importing through a re-export", callers)
    section("callers importing a name their module does not have", missing)
    if unresolved: section("names not found where imported (check by hand)", unresolved)
    print(f"\n# server imports train: {'yes' if 'train' in both.get('server', ()) else 'no'}")
    bad = len(through) + len(unused) + len(cycles) + len(upward) + len(callers) + len(missing)
    return 1 if check and bad else 0

if __name__ == "__main__": sys.exit(report(check="--check" in sys.argv))
