"""The documentation site: built from a clean state with the documented command, then read in headless Chromium
as a reader would: every page loads without a console error or a failed request, no internal link or image is
broken, each lesson shows a rendered figure, each module's page documents its public names, and search works.

The browser is Debian's `chromium`, installed by `.ci/run` (not by the user's install); Playwright, from PyPI,
drives it. Without a browser the test is skipped locally and fails in CI.
"""
import functools, http.server, inspect, os, re, shutil, subprocess, sys, threading
from pathlib import Path
import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # no connections attempted to a closed network

def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        if os.environ.get("CI"): pytest.fail("no chromium on this CI machine: .ci/run installs Debian's chromium")
        pytest.skip("no chromium here (apt-get install chromium)")
    return exe

@pytest.fixture(scope="module")
def site():
    "Build the site with the documented command (from scratch in a fresh clone, as in CI), and serve it on loopback."
    chromium()  # before a build that would be wasted
    r = subprocess.run([sys.executable, "tools/docs.py"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    print(r.stdout.strip().splitlines()[-1])
    out = ROOT/"_docs"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()

PAGES_AT_ONCE = 4  # pages loaded side by side: a page's wait for network quiet (0.5 s) overlaps the others' work

async def visit(browser, url: str, shot: Path | None = None) -> dict:
    "Load `url`; what went wrong (console errors, page errors, failed requests) and what the page shows."
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    await page.goto(url, wait_until="load")
    await page.wait_for_load_state("networkidle")
    seen = await page.evaluate("""() => ({
        images: [...document.querySelectorAll('article img')].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]),
        tables: document.querySelectorAll('article table').length,
        ids: [...document.querySelectorAll('[id]')].map(e => e.id),
        title: document.title})""")
    if shot: await page.screenshot(path=str(shot))
    await page.close()
    return {"errors": errors, **seen}

async def search_hits(browser, url: str, shot: Path | None = None) -> list[str]:
    "The links Sphinx's search page (its own JavaScript, in the browser) lists for the query in `url`."
    page = await browser.new_page()
    await page.goto(url, wait_until="load")
    await page.wait_for_selector("#search-results ul.search li a", timeout=30_000)
    hits = await page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.getAttribute('href'))")
    if shot: await page.screenshot(path=str(shot))
    await page.close()
    return hits

def read_site(base: str, rels: list[str], shots: Path | None) -> tuple[dict, list[str]]:
    "Every page in `rels` visited in headless Chromium (PAGES_AT_ONCE at a time), and the search page's hits."
    import asyncio
    from playwright.async_api import async_playwright
    async def main():
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
            gate = asyncio.Semaphore(PAGES_AT_ONCE)
            async def one(rel):
                async with gate: return await visit(browser, base + rel, shots/(rel.replace("/", "_") + ".png") if shots else None)
            seen = dict(zip(rels, await asyncio.gather(*map(one, rels))))
            hits = await search_hits(browser, base + "search.html?q=evaluate_run", shots/"search.png" if shots else None)
            await browser.close()
            return seen, hits
    return asyncio.run(main())

def test_docs_site(site):
    from finetune_kit.docs import site_html, site_pages, site_problems
    from docutils.nodes import make_id
    out, base = site
    pages = site_pages(ROOT/"_proc")
    html_files = [p.relative_to(out).as_posix() for p in site_html(out)]
    for p in pages: assert f"{p.name}.html" in html_files, p
    assert site_problems(out) == []  # every internal link, image, style and script points to a file and anchor

    shots = Path(os.environ["FINETUNE_KIT_DOCS_SHOTS"]) if os.environ.get("FINETUNE_KIT_DOCS_SHOTS") else None
    if shots: shots.mkdir(parents=True, exist_ok=True)
    seen, hits = read_site(base, html_files, shots)
    for rel, v in seen.items():
        assert v["errors"] == [], (rel, v["errors"])
        assert [src for src, ok in v["images"] if not ok] == [], rel  # every image decodes

    lessons = [p for p in pages if p.section == "Course" and re.match(r"\d", Path(p.proc).name)]
    assert len(lessons) >= 8
    for p in lessons:  # the committed outputs: at least one plot on each lesson page
        assert any(ok for _, ok in seen[f"{p.name}.html"]["images"]), f"{p.name}: no rendered figure"
    assert seen["data.html"]["tables"] > 0 and seen["evaluate.html"]["tables"] > 0  # DataFrames, as HTML tables

    # each module's page has a section for each public name of the module (nbdev's index says which page)
    import importlib
    from finetune_kit._modidx import d as modidx
    for mod, syms in modidx["syms"].items():
        pages_of = {url.split("#")[0] for url, _ in syms.values()}
        assert len(pages_of) == 1, (mod, pages_of)
        rel = pages_of.pop()
        m = importlib.import_module(mod)  # its public functions and classes (constants have no show_doc section)
        names = [n for n in getattr(m, "__all__", []) if inspect.isfunction(getattr(m, n)) or inspect.isclass(getattr(m, n))]
        assert names, mod
        missing = [n for n in names if make_id(n) not in seen[rel]["ids"]]
        assert missing == [], (rel, missing)
    assert "<strong>Default</strong>" in (out/"evaluate.html").read_text()  # show_doc's parameter tables

    # search (Sphinx's own, in the browser) finds evaluate_run on the evaluation lesson's page
    assert any(h.startswith("evaluate.html") for h in hits), hits
