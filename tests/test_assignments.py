"""The student versions made by tools/make_assignments.py: no solution survives, the checks do.

The solution versions (the book itself) run their checks in the nbval run of book/; here we check
the structure that makes that meaningful: every exercise-code cell is followed by an
exercise-check cell that asserts something.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import subprocess
import sys

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_assignments", ROOT / "tools" / "make_assignments.py")
ma = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ma)

CHAPTERS = ma.chapters(ROOT / "book")
# chapters that must have coding exercises (issue 12); extend when the other parts land
REQUIRED = tuple(f"{n:02d}_" for n in range(1, 13))  # chapters 01-12: at least two coding exercises each


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def source_without_solutions(nb) -> str:
    """All cell sources of the book version with the solution regions and blocks taken out."""
    parts = []
    for c in nb.cells:
        parts.append(ma.stub_code(c.source) if c.cell_type == "code" else ma.strip_solutions(c.source))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    assert ma.main([str(out)]) == 0
    return {p.name: nbformat.read(out / p.name, as_version=4) for p in CHAPTERS}


def test_every_chapter_written(student):
    assert len(CHAPTERS) >= 4
    assert set(student) == {p.name for p in CHAPTERS}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_solution_survives(path, student):
    book = nbformat.read(path, as_version=4)
    nb = student[path.name]
    text = "\n".join(c.source for c in nb.cells)
    lines = {line.strip() for line in text.split("\n")}
    assert "{solution" not in text
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    # no line of worked code survives, unless the same line also appears outside the solutions
    elsewhere = {line.strip() for line in source_without_solutions(book).split("\n")}
    for cell in code_cells(book):
        for line in ma.solution_lines(cell.source):
            if line.strip() and line.strip() not in elsewhere:
                assert line.strip() not in lines, f"solution line survives: {line.strip()!r}"
    # the code of the {solution} dropdowns is gone too
    for cell in book.cells:
        if cell.cell_type == "markdown" and "{solution}" in cell.source:
            removed = set(cell.source.split("\n")) - set(ma.strip_solutions(cell.source).split("\n"))
            for line in removed:
                if len(line.strip()) > 20 and line.strip() not in elsewhere:
                    assert line not in text


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_exercise_cells_are_paired(path, student):
    book = nbformat.read(path, as_version=4)
    cells = code_cells(book)
    n_code = sum(ma.CODE_TAG in ma.tags(c) for c in cells)
    n_check = sum(ma.CHECK_TAG in ma.tags(c) for c in cells)
    if path.name.startswith(REQUIRED):
        assert n_code >= 2, f"{path.name}: {n_code} coding exercises, need at least 2"
    if n_code:
        assert n_code >= 2 and n_check == n_code
    for i, c in enumerate(cells):
        if ma.CODE_TAG in ma.tags(c):
            assert ma.solution_lines(c.source), f"{path.name}: exercise-code cell without a solution region"
            assert i + 1 < len(cells) and ma.CHECK_TAG in ma.tags(cells[i + 1]), (
                f"{path.name}: exercise-code cell {i} is not followed by an exercise-check cell"
            )
        if ma.CHECK_TAG in ma.tags(c):
            assert i > 0 and ma.CODE_TAG in ma.tags(cells[i - 1])
            assert any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(c.source))), (
                f"{path.name}: exercise-check cell {i} asserts nothing"
            )
    # in the student version: stubs in place, valid Python, outputs cleared, checks unchanged
    stud = code_cells(student[path.name])
    assert len(stud) == len(cells)
    for c, s in zip(cells, stud):
        if ma.CODE_TAG in ma.tags(c):
            assert ma.STUB in s.source and not s.outputs
            assert "hide-input" not in ma.tags(s)
            ast.parse(s.source)
        if ma.CHECK_TAG in ma.tags(c):
            assert s.source == c.source and not s.outputs
    if n_code:
        exercises = sum("{exercise}" in c.source for c in book.cells if c.cell_type == "markdown")
        assert exercises >= n_code


def test_stub_keeps_indentation():
    src = "def f(x):\n    y = 1\n    # BEGIN SOLUTION\n    y = x + 1\n    # END SOLUTION\n    return y\n"
    out = ma.stub_code(src)
    assert out == f"def f(x):\n    y = 1\n    {ma.STUB}\n    return y\n"
    ast.parse(out)
    top = ma.stub_code("# BEGIN SOLUTION\nz = 2\n# END SOLUTION\n")
    assert top == f"{ma.STUB}\n"
    with pytest.raises(ValueError, match="not closed"):
        ma.stub_code("# BEGIN SOLUTION\nz = 2\n")
    with pytest.raises(ValueError, match="without"):
        ma.stub_code("z = 2\n# END SOLUTION\n")


def test_strip_solutions_handles_nested_fences():
    md = (
        "Text before.\n\n"
        "```{exercise} E\n:label: ex-a\n\nDo it.\n```\n\n"
        "````{solution} ex-a\n:class: dropdown\n\nSecret.\n\n```python\nsecret_code()\n```\n````\n\n"
        ":::{solution} ex-b\nColon secret.\n:::\n\n"
        "Text after.\n"
    )
    out = ma.strip_solutions(md)
    assert "Secret" not in out and "secret_code" not in out and "Colon secret" not in out
    assert "Do it." in out and "Text before." in out and "Text after." in out
    with pytest.raises(ValueError, match="not closed"):
        ma.strip_solutions("````{solution} x\nno end\n```\n")


def test_command_line(tmp_path):
    one = ROOT / "book" / "01_gd_is_euler.ipynb"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_assignments.py"), str(tmp_path), str(one)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "01_gd_is_euler.ipynb" in done.stdout
    assert (tmp_path / one.name).exists()
    assert nbformat.read(one, as_version=4).metadata.get("ibea", {}).get("student_version") is None
