"""tools/outputs.py: the stamp that ties a chapter's stored outputs to its code, ibea_lib and the pins."""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import outputs  # noqa: E402


def notebook(*sources: str, counts=None) -> dict:
    cells = [{"cell_type": "code", "metadata": {"tags": ["colab-install"]}, "source": "pass", "outputs": [],
              "execution_count": 1}]
    cells += [{"cell_type": "markdown", "metadata": {}, "source": "# Title"}]
    counts = counts or list(range(2, 2 + len(sources)))
    cells += [{"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": c}
              for s, c in zip(sources, counts)]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_code_fingerprint_follows_code_cells_only():
    a = notebook("x = 1", "print(x)")
    b = json.loads(json.dumps(a))
    b["cells"][1]["source"] = "# Another title"          # markdown
    b["cells"][0]["source"] = "print('colab only')"      # the Colab cell
    b["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    assert outputs.code_fingerprint(a) == outputs.code_fingerprint(b)
    b["cells"][3]["source"] = "print(x + 1)"
    assert outputs.code_fingerprint(a) != outputs.code_fingerprint(b)


def test_module_fingerprints_ignore_docstrings_and_comments(tmp_path):
    shutil.copytree(ROOT / "ibea_lib", tmp_path / "ibea_lib", ignore=shutil.ignore_patterns("__pycache__"))
    before = outputs.module_fingerprint("ibea_lib.pytree", tmp_path)
    assert before == outputs.module_fingerprint("ibea_lib.pytree", ROOT)
    assert outputs.module_path("ibea_lib.book", tmp_path).name == "__init__.py"
    path = tmp_path / "ibea_lib" / "pytree.py"
    text = path.read_text()
    path.write_text('"""Another module docstring."""\n# a comment\n' + text.split('"""', 2)[2])
    assert outputs.module_fingerprint("ibea_lib.pytree", tmp_path) == before
    path.write_text(text + "\nEXTRA = 1\n")
    assert outputs.module_fingerprint("ibea_lib.pytree", tmp_path) != before
    path.unlink()
    assert outputs.module_fingerprint("ibea_lib.pytree", tmp_path) == "missing"


def test_the_book_helpers_load_on_first_use():
    # a chapter's outputs depend only on the helper modules it uses (tools/outputs.py records them)
    import subprocess

    code = ("import sys, ibea_lib as ib; ib.book.stats; "
            "print(sorted(m for m in sys.modules if m.startswith('ibea_lib.book')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "['ibea_lib.book', 'ibea_lib.book.stats']"


def stamped(tmp_path, nb: dict, modules=("ibea_lib", "ibea_lib.pytree")) -> pathlib.Path:
    nb["metadata"]["ibea"] = {"outputs": outputs.fingerprint(nb, list(modules))}
    path = tmp_path / "chapter.ipynb"
    path.write_text(json.dumps(nb))
    return path


def test_problems_of_a_current_and_of_stale_chapters(tmp_path):
    nb = notebook("x = 1", "print(x)")
    assert outputs.problems(stamped(tmp_path, nb)) == []
    # no stamp
    path = tmp_path / "plain.ipynb"
    path.write_text(json.dumps(notebook("x = 1")))
    assert "no stamp" in outputs.problems(path)[0]
    # code changed after the run
    path = stamped(tmp_path, notebook("x = 1", "print(x)"))
    nb = json.loads(path.read_text())
    nb["cells"][3]["source"] = "print(2 * x)"
    path.write_text(json.dumps(nb))
    assert "its code cells" in outputs.problems(path)[0]
    # an error stored, and cells run out of order (not one fresh run)
    nb = notebook("x = 1", "print(x)", counts=[5, 3])
    error = {"output_type": "error", "ename": "NameError", "evalue": "x", "traceback": []}
    nb["cells"][3]["outputs"] = [error]
    found = outputs.problems(stamped(tmp_path, nb))
    assert any("stores an error (NameError)" in f for f in found)
    assert any("not run once, in order" in f for f in found)


def test_a_change_of_a_loaded_module_makes_the_outputs_stale(tmp_path):
    path = stamped(tmp_path, notebook("x = 1"))
    nb = json.loads(path.read_text())
    nb["metadata"]["ibea"]["outputs"]["modules"]["ibea_lib.pytree"] = "0" * 16
    path.write_text(json.dumps(nb))
    assert outputs.problems(path) == ["changed since its outputs were stored: ibea_lib.pytree"]


@pytest.mark.parametrize("chapter", outputs.chapters(), ids=lambda p: p.stem)
def test_every_chapter_stores_the_outputs_of_its_current_code(chapter):
    # what the book is built from: re-execute with `python tools/outputs.py execute <chapter>`
    assert outputs.problems(chapter) == []
