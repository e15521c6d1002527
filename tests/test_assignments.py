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


# ------------------------------------------------------------------------------------------------
# Exercises an instructor can grade (issue 18): folded solutions, locked checks, no bare library call
# ------------------------------------------------------------------------------------------------

GRADED = tuple(f"{n:02d}_" for n in range(1, 13))


@pytest.mark.parametrize("path", [p for p in CHAPTERS if p.name.startswith(GRADED)], ids=lambda p: p.stem)
def test_every_solution_is_folded(path):
    """Every exercise-code cell carries hide-input: the web page shows the worked code folded."""
    book = nbformat.read(path, as_version=4)
    unfolded = [i for i, c in enumerate(book.cells)
                if c.cell_type == "code" and ma.CODE_TAG in ma.tags(c) and "hide-input" not in ma.tags(c)]
    assert not unfolded, f"{path.name}: exercise-code cells {unfolded} lack the tag hide-input"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_check_cells_are_locked_in_the_student_version(path, student):
    for c in code_cells(student[path.name]):
        if ma.CHECK_TAG in ma.tags(c):
            assert c.metadata.get("editable") is False and c.metadata.get("deletable") is False
        elif ma.CODE_TAG in ma.tags(c):
            assert c.metadata.get("editable", True) is not False  # the student writes here


# A "bare library call" for each exercise that has a library (or chapter) function doing the whole
# job: the check cell must reject it. Exercises whose task has no such function (midpoint_step,
# taylor_step, imbalance_factors, circulation, and rates_field, whose worked solution is itself one
# call of ib.sequential_field on rescaled losses) are listed with None.
BARE = {
    "01_gd_is_euler": {"my_gd": "return ls.gd_trajectory(loss, theta0, h, n)", "midpoint_step": None},
    "02_backward_error_analysis": {"my_modified_loss": "return ib.modified_loss(loss, theta, h)",
                                   "taylor_step": None},
    "03_sgd": {"my_epoch": "return sgd.epoch(batch_losses, theta, h, order)",
               "order_gap": "return ib.sub(ib.sequential_steps([loss_a, loss_b], theta, h), "
                            "ib.sequential_steps([loss_b, loss_a], theta, h)) / h**2"},
    "04_multitask_modified_loss": {
        "weighted_terms": "return ib.multitask_terms([lambda p, w=w, f=f: w * f(p) "
                          "for w, f in zip(weights, losses)], theta, h)",
        "imbalance_factors": None},
    "06_lie_brackets": {"euler_gap": 'return parallelogram(X, Y, x0, s)["gap"]', "circulation": None},
    "07_sequential_theorem": {"sequential_field_by_hand": "return sequential_field(losses, theta, h)",
                              "rates_field": None},
}
BARE_SECOND = {  # a second cheat, tried in a second run where it matters
    "03_sgd": {"order_gap": "return ib.lie_bracket(loss_a, loss_b, theta)"},
    "07_sequential_theorem": {"sequential_field_by_hand": "return ib.sequential_field(losses, theta, h)"},
}


def _function_name(source: str) -> str:
    tree = ast.parse(source)
    return next(n.name for n in tree.body if isinstance(n, ast.FunctionDef))


def _cheating_notebook(book, bare: dict[str, str | None]):
    """The chapter with each exercise answered by its bare call, and every check cell guarded."""
    nb = nbformat.from_dict(book)
    current = None
    cells = []
    for c in nb.cells:
        if c.cell_type == "code" and ma.CODE_TAG in ma.tags(c):
            current = _function_name(c.source)
            assert current in bare, f"no entry for the exercise {current} in BARE"
            if bare[current] is not None:
                c.source = ma.stub_code(c.source).replace(ma.STUB, bare[current])
        elif c.cell_type == "code" and ma.CHECK_TAG in ma.tags(c):
            if bare.get(current) is not None:
                c.source = (
                    "try:\n"
                    f"    exec(compile({c.source!r}, 'check', 'exec'), globals())\n"
                    "except AssertionError:\n"
                    f"    __rejected__.append({current!r})\n"
                    "else:\n"
                    f"    __accepted__.append({current!r})\n"
                )
        cells.append(c)
    cells.insert(0, nbformat.v4.new_code_cell("__rejected__, __accepted__ = [], []"))
    cells.append(nbformat.v4.new_code_cell("import json\nprint(json.dumps([__rejected__, __accepted__]))"))
    nb.cells = cells
    return nb


def _run(nb, path):
    import json

    from nbclient import NotebookClient

    resources = {"metadata": {"path": str(path.parent)}}
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources=resources)
    client.execute()
    out = nb.cells[-1].outputs[0]["text"]
    return json.loads(out)


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(BARE))
def test_checks_reject_a_bare_library_call(stem):
    """Each check cell fails when the exercise is answered by one call of what it asks to rebuild."""
    path = ROOT / "book" / f"{stem}.ipynb"
    book = nbformat.read(path, as_version=4)
    names = [_function_name(c.source) for c in code_cells(book) if ma.CODE_TAG in ma.tags(c)]
    assert set(names) == set(BARE[stem]), (stem, names)
    for bare in (BARE[stem], {**{k: None for k in BARE[stem]}, **BARE_SECOND.get(stem, {})}):
        if not any(v is not None for v in bare.values()):
            continue
        rejected, accepted = _run(_cheating_notebook(book, bare), path)
        expected = sorted(k for k, v in bare.items() if v is not None)
        assert sorted(rejected) == expected and not accepted, (stem, rejected, accepted)
