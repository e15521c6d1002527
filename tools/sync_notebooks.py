"""Keep the first cell of every chapter notebook in line with _config.yml.

Each chapter starts with a cell (tag ``colab-install``) that, only inside Google Colab,
installs ``ibea_lib`` from the book's repository without touching Colab's own torch.
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
        "# In Google Colab only: install ibea_lib from the book's repository.\n"
        "# Colab's own torch is kept (ibea_lib asks for torch>=2.1). Elsewhere this cell does nothing.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install --quiet "ibea_lib @ git+{url}@{branch}"'
    )


def notebooks() -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / "book").glob("*.ipynb"))


def sync(path: pathlib.Path, source: str, write: bool) -> bool:
    """Return True if the notebook was (or would be) changed."""
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    first = cells[0] if cells else None
    if first is not None and TAG in first.get("metadata", {}).get("tags", []):
        if "".join(first["source"]) == source:
            return False
        first["source"] = source.splitlines(keepends=True)
    else:
        cells.insert(
            0,
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "colab-install",
                "metadata": {"tags": [TAG, "remove-cell"]},
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
