"""Keep the HTML build honest: every chapter must have been executed successfully.

Jupyter Book executes the notebooks through jupyter-cache (`execute_notebooks: cache`) and
Sphinx re-reads only the pages whose source changed. A chapter that failed to execute is not
cached, but a second build does not read it again: it would report success with the page and
its traceback still published. This script closes that hole (tools/book.sh runs it):

    python tools/check_build.py --before [--toc _toc.yml]  # exit 3 if some chapter is not cached
                                                           # (book.sh then rebuilds every page)
    python tools/check_build.py --after  [--toc _toc.yml]  # exit 1 if some chapter is not cached:
                                                           # names it, shows its error log and removes
                                                           # its HTML page

A chapter counts as executed when jupyter-cache holds a record matching its current code cells.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from outputs import chapters  # noqa: E402  (the notebooks of the table of contents, one home)


def not_executed(nbs: list[pathlib.Path], cache_path: pathlib.Path) -> list[pathlib.Path]:
    """The notebooks without a matching successful record in jupyter-cache."""
    if not cache_path.exists():
        return list(nbs)
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_path))
    missing = []
    for nb in nbs:
        try:
            cache.match_cache_notebook(nbformat.read(nb, as_version=4))
        except KeyError:
            missing.append(nb)
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toc", default=str(ROOT / "_toc.yml"))
    parser.add_argument("--build", default=str(ROOT / "_build"))
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--before", action="store_true")
    when.add_argument("--after", action="store_true")
    args = parser.parse_args()
    build = pathlib.Path(args.build)
    missing = not_executed(chapters(pathlib.Path(args.toc)), build / ".jupyter_cache")
    if not missing:
        return 0
    names = ", ".join(nb.name for nb in missing)
    if args.before:
        print(f"[book] not executed successfully yet: {names} (every page is read again)")
        return 3
    print(f"[book] BUILD FAILED: these chapters did not execute: {names}")
    for nb in missing:
        rel = nb.relative_to(ROOT).with_suffix("")
        for log in sorted((build / "html" / "reports").glob(f"**/{nb.stem}*.log")):
            print(f"----- {log.relative_to(ROOT)} (last lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        page = build / "html" / f"{rel}.html"
        if page.exists():  # never publish a page with a traceback in place of the chapter
            page.unlink()
            print(f"[book] removed {page.relative_to(ROOT)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
