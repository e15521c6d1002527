"""Write the student version of every chapter: the book without its solutions.

    python tools/make_assignments.py OUT                 # every chapter of book/ into the folder OUT
    python tools/make_assignments.py OUT book/02_x.ipynb # only these notebooks
    python tools/make_assignments.py OUT --clear-all     # also clear every stored output

What changes, in the style of nbgrader's release step (``nbgrader generate_assignment``):

* markdown: every ``{solution}`` directive block (backtick or colon fences, any length, and the
  ``{solution-start}`` … ``{solution-end}`` pair) is removed; a cell left empty is dropped;
* code: in every cell (in practice the cells tagged ``exercise-code``) each region between a line
  ``# BEGIN SOLUTION`` and a line ``# END SOLUTION`` is replaced by
  ``raise NotImplementedError("your code here")`` at the indentation of the ``# BEGIN SOLUTION``
  line; the ``hide-input`` tag of those cells is removed (the book folds the worked code);
* the outputs of the ``exercise-code`` and ``exercise-check`` cells are cleared (all outputs with
  ``--clear-all``) and every execution count is reset;
* the ``exercise-check`` cells are kept as they are, and locked: their metadata gets
  ``editable: false`` and ``deletable: false`` (JupyterLab and Notebook then refuse to edit or delete
  them; nbgrader's "read-only" cells work the same way), so a student cannot weaken a check.

The book itself (the solution version) is never modified. nbgrader is not needed; only nbformat.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
CODE_TAG = "exercise-code"
CHECK_TAG = "exercise-check"
STUB = 'raise NotImplementedError("your code here")'
BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION\s*$")
END = re.compile(r"^[ \t]*#\s*END SOLUTION\s*$")
FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|:{3,})\s*\{(?P<name>[\w-]+)\}")


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def stub_code(source: str) -> str:
    """Replace every BEGIN/END SOLUTION region (markers included) by an indented stub."""
    out, inside, indent = [], False, ""
    for number, line in enumerate(source.split("\n"), start=1):
        begin = BEGIN.match(line)
        if begin:
            if inside:
                raise ValueError(f"line {number}: '# BEGIN SOLUTION' inside another solution region")
            inside, indent = True, begin.group("indent")
            continue
        if END.match(line):
            if not inside:
                raise ValueError(f"line {number}: '# END SOLUTION' without '# BEGIN SOLUTION'")
            out.append(indent + STUB)
            inside = False
            continue
        if not inside:
            out.append(line)
    if inside:
        raise ValueError("a '# BEGIN SOLUTION' region is not closed by '# END SOLUTION'")
    return "\n".join(out)


def solution_lines(source: str) -> list[str]:
    """The lines inside the BEGIN/END SOLUTION regions of a code cell (markers excluded)."""
    lines, inside = [], False
    for line in source.split("\n"):
        if BEGIN.match(line):
            inside = True
        elif END.match(line):
            inside = False
        elif inside:
            lines.append(line)
    return lines


def strip_solutions(markdown: str) -> str:
    """Remove the MyST ``{solution}`` blocks (and ``{solution-start}``…``{solution-end}``)."""
    out: list[str] = []
    lines = markdown.split("\n")
    i = 0
    while i < len(lines):
        opened = FENCE_OPEN.match(lines[i])
        if opened and opened.group("name") in ("solution", "solution-start"):
            name, fence = opened.group("name"), opened.group("fence")
            j = i + 1
            if name == "solution":
                close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
                while j < len(lines) and not close.match(lines[j]):
                    j += 1
            else:  # a {solution-start} block, its content, then a {solution-end} block
                while j < len(lines):
                    end = FENCE_OPEN.match(lines[j])
                    if end and end.group("name") == "solution-end":
                        end_fence = end.group("fence")
                        close = re.compile(rf"^[ \t]*{re.escape(end_fence[0])}{{{len(end_fence)},}}\s*$")
                        j += 1
                        while j < len(lines) and not close.match(lines[j]):
                            j += 1
                        break
                    j += 1
            if j >= len(lines):
                raise ValueError(f"the {{{name}}} block opened by {lines[i]!r} is not closed")
            i = j + 1
            # drop the blank line that separated the block from what follows
            if i < len(lines) and not lines[i].strip() and out and not out[-1].strip():
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out).strip("\n")


def student_version(nb, *, clear_all: bool = False):
    """A new notebook: ``nb`` without solutions (``nb`` itself is not changed)."""
    nb = nbformat.from_dict(nb)  # a deep copy
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = strip_solutions(cell.source)
            if not cell.source.strip():
                continue
        elif cell.cell_type == "code":
            cell_tags = tags(cell)
            cell.source = stub_code(cell.source)
            if CODE_TAG in cell_tags:
                cell.metadata["tags"] = [t for t in cell_tags if t not in ("hide-input", "hide-cell")]
            if CHECK_TAG in cell_tags:
                cell.metadata["editable"] = False
                cell.metadata["deletable"] = False
            if clear_all or CODE_TAG in cell_tags or CHECK_TAG in cell_tags:
                cell.outputs = []
            cell.execution_count = None
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = None
        cells.append(cell)
    nb.cells = cells
    nb.metadata["ibea"] = {"student_version": True}
    return nb


def chapters(book: pathlib.Path = ROOT / "book") -> list[pathlib.Path]:
    return sorted(p for p in book.glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=pathlib.Path, help="folder for the student notebooks")
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path, help="default: every chapter of book/")
    parser.add_argument("--clear-all", action="store_true", help="clear every stored output")
    args = parser.parse_args(argv)
    sources = args.notebooks or chapters()
    if args.out.resolve() == (ROOT / "book").resolve():
        parser.error("OUT must not be book/: the student versions would overwrite the solutions")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        student = student_version(nb, clear_all=args.clear_all)
        exercises = sum(CODE_TAG in tags(c) for c in student.cells)
        nbformat.write(student, args.out / path.name)
        print(f"{path.name}: {exercises} coding exercise(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
