"""The HTML build cannot lie, in both of its modes.

* ``bash tools/book.sh --execute``: a chapter that fails to execute fails this build and every later one,
  until it runs (tools/check_build.py);
* ``bash tools/book.sh`` (from the stored outputs): a chapter whose stored outputs are not those of one
  fresh run of its current code is refused (tools/outputs.py check), and builds once it is re-executed.

The book is built in a temporary copy of the repository with a tiny table of contents (the index,
one small chapter made here, the bibliography), so that each test takes about a minute.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jupyter_book") is None or not (ROOT / ".venv" / "bin" / "python").exists(),
    reason="needs the book environment (.venv with jupyter-book: bash tools/setup_env.sh)",
)

TOC = """format: jb-book
root: book/index
chapters:
  - file: book/tiny
  - file: book/bibliography
"""


PREFACE_METADATA = json.loads((ROOT / "book" / "00_preface.ipynb").read_text())["metadata"]


def tiny_chapter(check: str) -> dict:
    def cell(kind, source):
        extra = {"execution_count": None, "outputs": []} if kind == "code" else {}
        return {"cell_type": kind, "id": f"c{abs(hash(source)) % 10**8}", "metadata": {}, "source": source,
                **extra}

    return {
        "cells": [
            cell("markdown", "# A tiny chapter\n\n```{prf:theorem}\n:label: tiny-thm\n$1 + 1 = 2$.\n```"),
            cell("code", "import ibea_lib as ib\n\nprint(ib.__version__)"),
            cell("code", check),
        ],
        "metadata": {k: v for k, v in PREFACE_METADATA.items() if k != "ibea"},  # no stamp of the preface
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture
def book_copy(tmp_path):
    copy = tmp_path / "ibea"
    skip = shutil.ignore_patterns(".git", ".venv", "_build", "vendor", "*.egg-info", "__pycache__", ".*cache")
    shutil.copytree(ROOT, copy, ignore=skip)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    if (ROOT / "vendor" / ".complete").exists():
        (copy / "vendor").symlink_to(ROOT / "vendor")
    (copy / "_toc.yml").write_text(TOC)
    return copy


def build(copy: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run(["bash", "tools/book.sh", *args], cwd=copy, env=env, capture_output=True, text=True)


def run(copy: pathlib.Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run([str(copy / ".venv" / "bin" / "python"), *cmd], cwd=copy, env=env,
                          capture_output=True, text=True)


def write_chapter(copy: pathlib.Path, check: str) -> None:
    (copy / "book" / "tiny.ipynb").write_text(json.dumps(tiny_chapter(check), indent=1))


def test_a_failed_chapter_fails_every_build_until_it_runs(book_copy):
    page = book_copy / "_build" / "html" / "book" / "tiny.html"
    write_chapter(book_copy, "assert False, 'this chapter is broken'")
    for attempt in (1, 2):
        result = build(book_copy, "--execute")
        log = result.stdout + result.stderr
        assert result.returncode != 0, f"build {attempt} passed with a broken chapter:\n{log[-3000:]}"
        assert "these chapters did not execute: tiny.ipynb" in log, log[-3000:]
        assert not page.exists(), "the broken page (with its traceback) was published"
    write_chapter(book_copy, "assert 1 + 1 == 2")
    result = build(book_copy, "--execute")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "A tiny chapter" in page.read_text()


def test_stale_stored_outputs_are_refused_until_re_executed(book_copy):
    page = book_copy / "_build" / "html" / "book" / "tiny.html"
    write_chapter(book_copy, "print('stored', 6 * 7)")
    # never executed: no stamp, no outputs
    result = build(book_copy)
    log = result.stdout + result.stderr
    assert result.returncode != 0 and "book/tiny.ipynb: never executed" in log, log[-3000:]
    assert not page.exists()
    # executed through the tool: builds, and the page shows the stored output
    result = run(book_copy, "tools/outputs.py", "execute", "book/tiny.ipynb")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    result = build(book_copy)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "stored 42" in page.read_text()
    # the code changes, the outputs stay: refused, naming the chapter and the command that fixes it
    nb = json.loads((book_copy / "book" / "tiny.ipynb").read_text())
    nb["cells"][2]["source"] = "print('stored', 6 * 8)"
    (book_copy / "book" / "tiny.ipynb").write_text(json.dumps(nb, indent=1))
    result = build(book_copy)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]
    assert "changed since its outputs were stored: its code cells" in log, log[-3000:]
    assert "tools/outputs.py execute book/tiny.ipynb" in log
