"""Check the built book as a reader gets it: the HTML pages, and the PDF's text and LaTeX log.

    python tools/check_pages.py _build/html [--pdf _build/pdf/ibea.pdf --latex-log _build/latex/ibea.log]

Exit 1 with one line per defect. What counts as a defect (each has a test in tests/test_check_pages.py):

HTML (the article of each page; MathJax has not run yet, so math is still in its ``.math`` elements)
- raw TeX: a ``$`` or a TeX command (``\\frac``, ``\\nabla``, ...) in the text outside math, code and outputs
  (e.g. a line of display math that Markdown turned into a list item);
- a Markdown table printed as text (``| a | b |`` over ``| --- | --- |``) instead of rendered;
- progress-bar junk (``0%| | 0/50 [00:00<?, ?it/s]``) in the page;
- an error traceback stored in an output;
- a widget shown more than once (the same ``model_id`` twice), or a script (file or inline) or style
  sheet loaded twice;
- a link, image, script or style sheet that points to a file that is not in the build.

PDF (``pdftotext``) and its LaTeX log
- progress-bar junk, Markdown tables as text, ``??`` (an unresolved reference);
- a character missing from its font (the LaTeX log's "Missing character"), which prints as a blank box;
- a line of text running into the margin by more than 20 pt (an overfull box, e.g. a formula set as text).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
from collections import Counter
from urllib.parse import unquote, urlsplit

PROGRESS = re.compile(r"\d+%\|[^|\n]*\|\s*\d+/\d+\s*\[")
TABLE_RULE = re.compile(r"\|\s*:?-{3,}:?\s*\|")
# in the PDF's text, only a whole line is a table rule (code that builds a table holds one in quotes)
TABLE_RULE_LINE = re.compile(r"^\s*\|(\s*:?-{3,}:?\s*\|)+\s*$", re.M)
TEX = re.compile(r"\$|\\(?:[A-Za-z]{2,}|[{}|,;!])")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
OVERFULL = re.compile(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)[^\n]*\n?(.*)")
MISSING = re.compile(r"Missing character: There is no (\S+) \(U\+([0-9A-F]+)\)[^!]*?in font ([^!\n]+)")
MARGIN_PT = 20.0
PAGES_SKIPPED = {"genindex.html", "search.html", "py-modindex.html"}


def _article(soup):
    return soup.find("article") or soup.find("main") or soup.body or soup


def check_html_page(path: pathlib.Path, root: pathlib.Path) -> list[str]:
    """The defects of one built page."""
    from bs4 import BeautifulSoup

    html = path.read_text(errors="replace")
    soup = BeautifulSoup(html, "html.parser")
    rel = path.relative_to(root).as_posix()
    found: list[str] = []

    # scripts and style sheets loaded once each; every linked file exists
    sources = [s.get("src") for s in soup.find_all("script") if s.get("src")]
    sheets = [link.get("href") for link in soup.find_all("link") if "stylesheet" in (link.get("rel") or [])]
    for kind, urls in (("script", sources), ("style sheet", sheets)):
        for url, n in Counter(urlsplit(u)._replace(query="", fragment="").geturl() for u in urls).items():
            if n > 1:
                found.append(f"{rel}: {kind} {url} loaded {n} times")
    linking = ("a", "img", "script", "link", "source")
    inline = [s.get_text().strip() for s in soup.find_all("script")
              if not s.get("src") and "json" not in (s.get("type") or "") and s.get_text().strip()]
    for body, n in Counter(inline).items():
        if n > 1:
            found.append(f"{rel}: an inline script is loaded {n} times: {body[:50]!r}")
    targets = [(t.name, t.get(attr)) for attr in ("href", "src")
               for t in soup.find_all(attrs={attr: True}) if t.name in linking]
    for tag, url in targets:
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path or url.startswith(("#", "mailto:", "javascript:")):
            continue
        target = (path.parent / unquote(parts.path)).resolve()
        if not target.exists():
            found.append(f"{rel}: <{tag}> links {url}, which is not in the build")

    # widgets: each model shown once
    ids = re.findall(r'"model_id":\s*"([0-9a-f]+)"', "".join(
        s.get_text() for s in soup.find_all("script", type="application/vnd.jupyter.widget-view+json")))
    for model, n in Counter(ids).items():
        if n > 1:
            found.append(f"{rel}: widget {model[:8]} shown {n} times")

    article = _article(soup)
    everything = article.get_text("\n")
    if PROGRESS.search(everything):
        found.append(f"{rel}: progress-bar text: {PROGRESS.search(everything).group(0)!r}")
    if TRACEBACK.search(everything):
        found.append(f"{rel}: an output shows an error traceback")

    # the prose: everything but math, code, outputs printed as text, and scripts
    for tag in article.find_all(["script", "style", "pre", "code", "kbd", "svg", "textarea", "math"]):
        tag.decompose()
    skip = {"math", "highlight", "cell_input", "output", "cell_output", "headerlink"}
    for tag in article.find_all(class_=lambda c: c in skip or (c or "").startswith("highlight-")):
        if not tag.decomposed:
            tag.decompose()
    for tag in article.find_all(class_="docutils literal"):
        tag.decompose()
    for block in article.find_all(["p", "li", "td", "th", "dd", "dt", "h1", "h2", "h3", "h4", "caption",
                                   "figcaption", "div"]):
        if block.find(["p", "li", "div", "table"]):
            continue  # the innermost blocks only
        text = " ".join(block.get_text(" ").split())
        if not text:
            continue
        if TABLE_RULE.search(text):
            found.append(f"{rel}: a Markdown table printed as text: {text[:70]!r}")
        m = TEX.search(text)
        if m:
            start = max(0, m.start() - 30)
            found.append(f"{rel}: raw TeX outside math: {text[start:m.end() + 40]!r}")
    return found


def check_html(root: pathlib.Path) -> list[str]:
    pages = [p for p in sorted(root.rglob("*.html"))
             if "_static" not in p.parts and "_sources" not in p.parts and p.name not in PAGES_SKIPPED]
    if not pages:
        return [f"{root}: no HTML pages (build the book first)"]
    found = []
    for page in pages:
        found += check_html_page(page, root)
    return found


def check_pdf_text(text: str, name: str = "PDF") -> list[str]:
    found = []
    checks = ((PROGRESS, "progress-bar text"), (TABLE_RULE_LINE, "a Markdown table printed as text"))
    for pattern, what in checks:
        for m in pattern.finditer(text):
            found.append(f"{name}: {what}: {text[max(0, m.start() - 30):m.end() + 10]!r}")
    if "??" in text:
        i = text.index("??")
        found.append(f"{name}: an unresolved reference '??': {text[max(0, i - 40):i + 10]!r}")
    return found


def check_latex_log(log: str, name: str = "LaTeX log") -> list[str]:
    found = []
    missing = sorted({f"{m.group(1)} (U+{m.group(2)}) in {m.group(3).strip()}"
                      for m in MISSING.finditer(log)})
    found += [f"{name}: character missing from its font: {m}" for m in missing]
    for m in OVERFULL.finditer(log):
        if float(m.group(1)) > MARGIN_PT:
            found.append(f"{name}: a line runs {m.group(1)} pt into the margin: {m.group(2)[:60]!r}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", help="the HTML build (e.g. _build/html)")
    parser.add_argument("--pdf", help="the PDF (e.g. _build/pdf/ibea.pdf)")
    parser.add_argument("--latex-log", help="the LaTeX log of the PDF (e.g. _build/latex/ibea.log)")
    args = parser.parse_args(argv)
    found: list[str] = []
    checked = []
    if args.html:
        found += check_html(pathlib.Path(args.html))
        checked.append(args.html)
    if args.pdf:
        text = subprocess.run(["pdftotext", "-layout", args.pdf, "-"], capture_output=True, text=True,
                              check=True).stdout
        found += check_pdf_text(text, args.pdf)
        checked.append(args.pdf)
    if args.latex_log:
        found += check_latex_log(pathlib.Path(args.latex_log).read_text(errors="replace"), args.latex_log)
        checked.append(args.latex_log)
    if not checked:
        parser.error("nothing to check")
    for line in found:
        print(line)
    print(f"[pages] {len(found)} defects in {', '.join(checked)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
