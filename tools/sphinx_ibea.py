"""The book's own Sphinx settings that _config.yml cannot express (a local extension, see _config.yml).

For the HTML book:

* Every script is loaded once: sphinx-thebe registers its inline configuration twice in this Jupyter
  Book (a console error, "Identifier 'THEBE_JS_URL' has already been declared"); duplicates are dropped.
* assets/ibea-widgets-mathjax.js gives MathJax 3 the one MathJax 2 call that the widgets' HTML manager
  makes (labels were not typeset, and each threw an error).

For the PDF (the LaTeX builder) only:

* Progress bars: in the HTML book a progress bar is a widget (hidden once its loop ends); in the PDF
  only its text fallback would remain, frozen at its first frame ("0%| | 0/50 [00:00<?, ?it/s]"),
  which reads as if nothing ran. Those outputs are dropped.
* Structure: the root page's text is an "Introduction"; the parts of _toc.yml become ``\\part*``
  pages (the captions carry their numbers); the preface is an unnumbered chapter, so that chapter N
  of the PDF is the file ``book/NN_*`` the text calls "ch. NN"; sections are not numbered (the
  chapters number their own sections); the contents page is titled "Contents" (Sphinx would take
  the first caption, "Preface").
* Proofs (sphinx-proof's admonitions without a title, an empty title bar in LaTeX) are set as text,
  "Proof. ...", closed by a square.
"""

from __future__ import annotations

import pathlib
import re

from docutils import nodes
from sphinx import addnodes

PROGRESS = re.compile(r"\d+%\|[^|\n]*\|\s*\d+/\d+\s*\[")


def _is_progress(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and all(PROGRESS.search(line) for line in lines)


def _drop_progress_bars(doctree) -> None:
    for block in list(doctree.findall(nodes.literal_block)):
        if not _is_progress(block.astext()):
            continue
        parent = block.parent
        parent.remove(block)
        while isinstance(parent, nodes.container) and not parent.children and parent.parent is not None:
            grand = parent.parent
            grand.remove(parent)
            parent = grand


def toc_parts(srcdir: pathlib.Path) -> list[tuple[str, list[str]]]:
    """(caption, [docnames]) of each part of _toc.yml."""
    import yaml

    toc = yaml.safe_load((srcdir / "_toc.yml").read_text())
    return [(part.get("caption", ""), [c["file"] for c in part.get("chapters", [])])
            for part in toc.get("parts", [])]


def _latex(text: str) -> nodes.raw:
    return nodes.raw("", text, format="latex")


def _structure(app, doctree) -> None:
    # the root page's text opens the book under a heading of its own (not under "Contents")
    intro = ("\\chapter*{Introduction}\\addcontentsline{toc}{chapter}{Introduction}"
             "\\markboth{Introduction}{Introduction}\n")
    doctree.insert(0, _latex(intro))
    parts = toc_parts(pathlib.Path(app.srcdir))
    first = {docs[0]: caption for caption, docs in parts if docs}
    starts = {node["docname"]: node for node in doctree.findall(addnodes.start_of_file)}
    preface = parts[0][1][0] if parts and parts[0][0].lower() == "preface" and parts[0][1] else None
    for docname, node in starts.items():
        raw = []
        caption = first.get(docname)
        if docname == preface:
            raw.append("\\setcounter{secnumdepth}{-1}")  # the preface: an unnumbered chapter
        elif caption:
            if preface and docname == parts[1][1][0]:
                raw.append("\\setcounter{secnumdepth}{0}")  # chapters numbered, sections not
            raw.append(f"\\part*{{{caption}}}\\addcontentsline{{toc}}{{part}}{{{caption}}}")
        if raw:
            parent = node.parent
            parent.insert(parent.index(node), _latex("\n".join(raw) + "\n"))


def _latex_fixes(app, doctree, docname) -> None:
    if app.builder.format != "latex":
        return
    _drop_progress_bars(doctree)
    _plain_proofs(doctree)
    if docname == app.config.root_doc:
        _structure(app, doctree)


def _plain_proofs(doctree) -> None:
    """sphinx-proof's proof is an admonition without a title (an empty title bar in LaTeX): set it as
    text, "Proof. ..." (its first words), closed by a square."""
    for node in list(doctree.findall(nodes.admonition)):
        if "proof" not in node.get("classes", []):
            continue
        body = nodes.container("", *node.children, classes=["proof"])
        body += _latex("\\hfill$\\square$\n")
        node.replace_self(body)


def _script_key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    pairs = tuple(sorted((k, str(v)) for k, v in attributes.items() if k != "priority"))
    return (str(getattr(script, "filename", script) or ""), pairs)  # inline: None or ""


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app):
    app.connect("doctree-resolved", _latex_fixes)
    # early: before any handler that returns a template name (which ends the event)
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    app.add_js_file("ibea-widgets-mathjax.js")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
