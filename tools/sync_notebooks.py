"""Keep the first cell of every chapter notebook in line with _config.yml.

Each chapter starts with a cell (tag ``colab-install``) that, only inside Google Colab,
installs ``ibea_lib`` from the book's repository without upgrading Colab's own packages
(torch, ipywidgets 7.7, ...), and says when a restart is needed all the same.
The repository's address and branch live in one place, ``_config.yml`` (``repository:``);
this script writes them into that cell of every notebook (inserting the cell if missing).

    python tools/sync_notebooks.py                      # rewrite the cells of every chapter
    python tools/sync_notebooks.py book/05_x.ipynb      # only these notebooks
    python tools/sync_notebooks.py --check              # exit 1 if any notebook is out of date
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TAG = "colab-install"


def repository() -> tuple[str, str]:
    """(url, branch) from _config.yml (read with a regex: no YAML dependency)."""
    text = (ROOT / "_config.yml").read_text()
    block = re.search(r"^repository:\n((?:[ \t]+.*\n)+)", text, re.M)
    if block is None:
        raise SystemExit("_config.yml has no 'repository:' block")
    url = re.search(r"url:\s*(\S+)", block.group(1)).group(1)
    branch = re.search(r"branch:\s*(\S+)", block.group(1)).group(1)
    return url, branch


def colab_source(url: str, branch: str) -> str:
    return (
        "# In Google Colab only: install ibea_lib from the book's repository. Colab's own packages are\n"
        "# kept (ibea_lib asks for torch>=2.1 and ipywidgets>=7.7, which Colab has): pip adds only what is\n"
        "# missing. If it had to change a package that Colab had loaded, it says so: then restart the\n"
        "# session (Runtime > Restart session) and run the chapter again. Elsewhere this cell does nothing.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    from importlib.metadata import version\n"
        "\n"
        '    kept = {name: version(name) for name in ("torch", "numpy", "matplotlib", "ipywidgets")}\n'
        f'    %pip install --quiet "ibea_lib @ git+{url}@{branch}"\n'
        '    changed = [f"{n} {v} -> {version(n)}" for n, v in kept.items() if version(n) != v]\n'
        "    if changed:\n"
        '        print("Restart the session (Runtime > Restart session) and run again:", ", ".join(changed))'
    )


def notebooks() -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / "book").glob("*.ipynb"))


def sync(path: pathlib.Path, source: str, write: bool) -> bool:
    """Return True if the notebook was (or would be) changed."""
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    first = cells[0] if cells else None
    if first is not None and TAG in first.get("metadata", {}).get("tags", []):
        hidden = first["metadata"].get("jupyter", {}).get("source_hidden") is True
        if "".join(first["source"]) == source and hidden:
            return False
        first["source"] = source.splitlines(keepends=True)
        # JupyterLab shows the cell folded (the HTML book removes it: tag remove-cell)
        first["metadata"].setdefault("jupyter", {})["source_hidden"] = True
    else:
        cells.insert(
            0,
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "colab-install",
                "metadata": {"tags": [TAG, "remove-cell"], "jupyter": {"source_hidden": True}},
                "outputs": [],
                "source": source.splitlines(keepends=True),
            },
        )
    if write:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def main() -> int:
    check = "--check" in sys.argv
    chosen = [pathlib.Path(a).resolve() for a in sys.argv[1:] if a != "--check"]
    source = colab_source(*repository())
    stale = [p.name for p in (chosen or notebooks()) if sync(p, source, write=not check)]
    if check and stale:
        print("out of date (run python tools/sync_notebooks.py):", ", ".join(stale))
        return 1
    if stale:
        print("updated:", ", ".join(stale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
