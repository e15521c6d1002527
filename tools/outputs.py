"""The stored outputs of the chapters: execute and stamp them, check that they are current, time them.

The book is built from the outputs stored in the notebooks (fast, and what a reader of the repository
sees on GitHub or in JupyterLab). They stay honest because every execution through this tool writes a
*stamp* into the notebook's metadata (``metadata.ibea.outputs``): a fingerprint of

* the chapter's code cells (their sources, in order; the Colab install cell excluded),
* the library it imports: every module of ``ibea_lib`` that the kernel had loaded at the end of the run
  (recorded by the run itself), each as a syntax tree without docstrings (so that comments and
  docstrings may change, code may not),
* the pinned environment (``requirements.txt``),

and ``check`` fails for a chapter whose stamp is missing or differs from the current fingerprint,
whose stored outputs contain an error, or whose code cells did not run once, top to bottom, in order
(execution counts 1, 2, 3, ...). CI re-executes every chapter besides (nbval), so a chapter that no
longer runs fails there, and a chapter that runs but whose stored outputs are old fails here.

    python tools/outputs.py execute book/07_sequential_theorem.ipynb [more] [--jobs 2]
    python tools/outputs.py check                # every chapter of _toc.yml; exit 1 if any is stale
    python tools/outputs.py time [chapters]      # run each chapter in a copy, print the time table
    python tools/outputs.py times                # the times recorded by the last executions

Budgets (CPU seconds on an idle 2-core machine, one thread per process; reported, not enforced):
Part I 90 s, Parts II-III and the appendix 120 s, ch. 05 and Part IV 240 s.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP_TAG = "colab-install"  # the Colab cell runs only in Colab (tools/sync_notebooks.py writes it)
PROBE_MARK = "IBEA_LOADED_MODULES"
PROBE = ("import json as _json, sys as _sys\n"
         "_loaded = sorted(m for m in _sys.modules if m.split('.')[0] == 'ibea_lib')\n"
         f"print({PROBE_MARK!r}, _json.dumps(_loaded))")
BUDGETS = {"00": 90, "01": 90, "02": 90, "03": 90, "04": 120, "05": 240, "06": 120, "07": 120,
           "08": 240, "09": 240, "10": 240, "11": 240, "12": 240, "13": 120}


def chapters(toc: pathlib.Path = ROOT / "_toc.yml") -> list[pathlib.Path]:
    """The notebooks listed in the table of contents, in its order."""
    files = re.findall(r"^\s*(?:-\s*)?(?:file|root):\s*(\S+)", toc.read_text(), re.M)
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                        ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def module_path(name: str, root: pathlib.Path = ROOT) -> pathlib.Path:
    """The file of an ``ibea_lib`` module (``ibea_lib.book.stats`` -> ibea_lib/book/stats.py)."""
    base = root.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def module_fingerprint(name: str, root: pathlib.Path = ROOT) -> str:
    """sha256 of a module's syntax tree without docstrings ("missing" if the module is gone)."""
    path = module_path(name, root)
    if not path.exists():
        return "missing"
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()[:16]


def environment_fingerprint(root: pathlib.Path = ROOT) -> str:
    lines = [ln.strip() for ln in (root / "requirements.txt").read_text().splitlines()]
    pins = sorted(ln for ln in lines if ln and not ln.startswith("#"))
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()[:16]


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"
            and SKIP_TAG not in c.get("metadata", {}).get("tags", [])]


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def code_fingerprint(nb: dict) -> str:
    digest = hashlib.sha256()
    for cell in code_cells(nb):
        digest.update(_source(cell).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def fingerprint(nb: dict, modules: list[str], root: pathlib.Path = ROOT) -> dict:
    return {"code": code_fingerprint(nb), "environment": environment_fingerprint(root),
            "modules": {name: module_fingerprint(name, root) for name in sorted(modules)}}


def problems(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """Why the stored outputs of ``path`` are not those of one fresh run of the current code ([] if none)."""
    nb = json.loads(path.read_text())
    found = []
    stamp = nb.get("metadata", {}).get("ibea", {}).get("outputs")
    if not stamp or "modules" not in stamp:
        found.append("never executed through tools/outputs.py (no stamp)")
    else:
        changed = []
        if stamp.get("code") != code_fingerprint(nb):
            changed.append("its code cells")
        modules = [name for name, digest in stamp["modules"].items()
                   if module_fingerprint(name, root) != digest]
        if modules:
            changed.append(", ".join(modules))
        if stamp.get("environment") != environment_fingerprint(root):
            changed.append("requirements.txt")
        if changed:
            found.append("changed since its outputs were stored: " + "; ".join(changed))
    counts = []
    for i, cell in enumerate(code_cells(nb)):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"code cell {i} stores an error ({out.get('ename')})")
        if _source(cell).strip():
            counts.append(cell.get("execution_count"))
    if counts and counts != list(range(counts[0] or 1, (counts[0] or 1) + len(counts))):
        found.append("its cells were not run once, in order, on a fresh kernel (execution counts "
                     f"{counts[:6]}{' ...' if len(counts) > 6 else ''})")
    return found


def execute(path: pathlib.Path, stamp: bool = True) -> None:
    """Run ``path`` top to bottom on a fresh kernel (cwd book/, also for a copy elsewhere); store outputs,
    widget state and the stamp."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    probe = nbformat.v4.new_code_cell(PROBE)  # which ibea_lib modules did the chapter load?
    nb.cells.append(probe)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=None, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(ROOT / "book")}})
    client.execute()
    nb.cells.pop()
    text = "".join(out.get("text", "") for out in probe.get("outputs", [])
                   if out.get("output_type") == "stream")
    modules = json.loads(text.split(PROBE_MARK, 1)[1])
    if stamp:
        stamp_now = fingerprint(json.loads(nbformat.writes(nb)), modules)
        stamp_now["wall_seconds"] = round(time.perf_counter() - start, 1)
        nb.metadata.setdefault("ibea", {})["outputs"] = stamp_now
    nbformat.write(nb, path)


def _run(name: str, offset: int | None, stamp: bool) -> tuple[str, float, float, str]:
    """Execute one chapter in a child process; (name, wall s, CPU s of the child and its kernel, error)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    if offset is not None:
        env["IBEA_SEED_OFFSET"] = str(offset)
    cmd = [sys.executable, __file__, "_one", name] + ([] if stamp else ["--no-stamp"])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # usage includes the kernel (a waited-for grandchild)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    cpu = usage.ru_utime + usage.ru_stime
    err = "" if proc.returncode == 0 else out[-3000:]
    if stamp and not err:  # record the CPU time beside the wall time of the stamp
        import nbformat

        nb = nbformat.read(name, as_version=4)
        nb.metadata["ibea"]["outputs"]["cpu_seconds"] = round(cpu, 1)
        nbformat.write(nb, name)
    return name, wall, cpu, err


def _table(rows: list[tuple[str, float, float, str]]) -> str:
    lines = ["| chapter | wall s | kernel CPU s | budget s | status |", "| --- | ---: | ---: | ---: | --- |"]
    for name, wall, cpu, err in rows:
        stem = pathlib.Path(name).stem
        budget = BUDGETS.get(stem[:2], "")
        status = "FAILED" if err else ("over budget" if budget and cpu > budget else "ok")
        lines.append(f"| {stem} | {wall:.0f} | {cpu:.0f} | {budget} | {status} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="execute chapters in place and stamp them")
    ex.add_argument("notebooks", nargs="+")
    ex.add_argument("--jobs", type=int, default=1)
    ch = sub.add_parser("check", help="fail if a chapter's stored outputs are not current")
    ch.add_argument("notebooks", nargs="*")
    ch.add_argument("--toc", default=str(ROOT / "_toc.yml"))
    tm = sub.add_parser("time", help="execute chapters in a temporary copy and print the time table")
    tm.add_argument("notebooks", nargs="*")
    tm.add_argument("--jobs", type=int, default=1)
    tm.add_argument("--offset", type=int, default=None, help="IBEA_SEED_OFFSET for the runs")
    sub.add_parser("times", help="print the times recorded in the stamps")
    one = sub.add_parser("_one")  # internal: one chapter, in this process
    one.add_argument("notebook")
    one.add_argument("--no-stamp", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "check":
        nbs = [pathlib.Path(n).resolve() for n in args.notebooks] or chapters(pathlib.Path(args.toc))
        stale = {nb: problems(nb) for nb in nbs}
        stale = {nb: p for nb, p in stale.items() if p}
        if not stale:
            print(f"[outputs] the stored outputs of {len(nbs)} chapters are current")
            return 0
        for nb, found in stale.items():
            print(f"[outputs] {nb.relative_to(ROOT)}: " + "; ".join(found))
        names = " ".join(str(nb.relative_to(ROOT)) for nb in stale)
        print(f"[outputs] STALE: re-execute with `.venv/bin/python tools/outputs.py execute {names}` "
              "(or build with `bash tools/book.sh --execute`)")
        return 1

    if args.command == "times":
        rows = []
        for nb in chapters():
            stamp = json.loads(nb.read_text()).get("metadata", {}).get("ibea", {}).get("outputs", {})
            nan = float("nan")
            rows.append((str(nb), stamp.get("wall_seconds", nan), stamp.get("cpu_seconds", nan), ""))
        print(_table(rows))
        return 0

    if args.command == "_one":
        execute(pathlib.Path(args.notebook), stamp=not args.no_stamp)
        return 0

    nbs = [pathlib.Path(n).resolve() for n in args.notebooks] or chapters()
    offset, stamp = None, True
    if args.command == "time":  # copies: the chapters themselves are not touched
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ibea-time-"))
        copies = []
        for nb in nbs:
            shutil.copy(nb, tmp / nb.name)
            copies.append(tmp / nb.name)
        nbs, offset, stamp = copies, args.offset, False
    rows = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(_run, str(nb), offset, stamp) for nb in nbs]
        for future in futures:
            row = future.result()
            name, wall, cpu, err = row
            print(f"[outputs] {pathlib.Path(name).name}: {'FAILED' if err else 'ok'} "
                  f"({wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
            if err:
                print(err)
            rows.append(row)
    print(_table(rows))
    return 1 if any(err for *_, err in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
