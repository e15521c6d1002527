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


def test_library_fingerprint_ignores_docstrings_and_comments(tmp_path):
    shutil.copytree(ROOT / "ibea_lib", tmp_path / "ibea_lib", ignore=shutil.ignore_patterns("__pycache__"))
    before = outputs.library_fingerprint(tmp_path)
    assert before == outputs.library_fingerprint(ROOT)
    path = tmp_path / "ibea_lib" / "pytree.py"
    text = path.read_text()
    path.write_text('"""Another module docstring."""\n# a comment\n' + text.split('"""', 2)[2])
    assert outputs.library_fingerprint(tmp_path) == before
    path.write_text(text + "\nEXTRA = 1\n")
    assert outputs.library_fingerprint(tmp_path) != before


def stamped(tmp_path, nb: dict) -> pathlib.Path:
    nb["metadata"]["ibea"] = {"outputs": outputs.fingerprint(nb)}
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


def test_the_stamp_of_another_library_is_stale(tmp_path):
    nb = notebook("x = 1")
    path = stamped(tmp_path, nb)
    assert outputs.problems(path, library="0" * 16) == ["changed since its outputs were stored: ibea_lib"]


@pytest.mark.parametrize("chapter", outputs.chapters(), ids=lambda p: p.stem)
def test_every_chapter_stores_the_outputs_of_its_current_code(chapter):
    # what the book is built from: re-execute with `python tools/outputs.py execute <chapter>`
    assert outputs.problems(chapter) == []
