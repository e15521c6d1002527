"""The chapters' Colab cell, simulated: Colab's ipywidgets 7.7.1 is kept and two chapters run.

What is simulated, and what "fresh" means here:
- a new virtual environment (no system site packages) gets a Colab-like base from the package
  registry: a recent pip, ipywidgets 7.7.1 (Colab's default), ipykernel, numpy, matplotlib,
  scikit-learn, tqdm.
  torch, the one multi-GB package, is not installed again: the book environment's torch and its
  dependencies are linked into the new environment (a .pth file on a folder of links), as Colab
  too comes with its torch preinstalled;
- the repository is a temporary git clone of this working tree (its files as they are now);
- every chapter's first cell is replaced by the Colab cell that tools/sync_notebooks.py writes,
  with the clone's address (git+file://...) in place of the address of _config.yml;
- a fake ``google.colab`` module is imported when the kernel starts (sitecustomize), so the
  cell takes its Colab branch: ``%pip install "ibea_lib @ git+file://...@main"``;
- two chapters with widgets (00, 02: frame_slider) run to completion with nbclient in a kernel of
  the new environment, from an empty working directory (the clone is not on the path).
The test asserts that ipywidgets is still 7.7.1 afterwards, that the cell asked for no restart,
and that ibea_lib was imported from the new environment.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sync_notebooks  # noqa: E402

CHAPTERS = ["00_preface.ipynb", "02_backward_error_analysis.ipynb"]
BASE = ["ipywidgets==7.7.1", "ipykernel", "numpy", "matplotlib", "scikit-learn", "tqdm"]
TORCH_AND_DEPS = ["torch", "sympy", "mpmath", "networkx", "filelock", "typing_extensions", "jinja2",
                  "markupsafe", "fsspec"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("git") is None or importlib.util.find_spec("nbclient") is None,
        reason="needs git and nbclient (the book environment)",
    ),
]


def run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def link_torch(venv: pathlib.Path, overlay: pathlib.Path) -> None:
    """Make the book environment's torch (and what it imports) visible in the new environment."""
    from importlib.metadata import distribution

    overlay.mkdir()
    for name in TORCH_AND_DEPS:
        dist = distribution(name)
        top = {pathlib.Path(str(f)).parts[0] for f in dist.files or []}
        for entry in top:
            src = pathlib.Path(dist.locate_file(entry))
            if src.exists() and not (overlay / entry).exists() and entry != "..":
                (overlay / entry).symlink_to(src)
    site = run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    pathlib.Path(site.strip(), "zz_torch_from_book_env.pth").write_text(str(overlay) + "\n")


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colab")
    # The repository: a clone of this working tree as it is now.
    clone = tmp / "repo"
    skip = shutil.ignore_patterns(".git", ".venv", "venv", "_build", "vendor", "*.egg-info", "__pycache__",
                                  ".*cache", "build")
    shutil.copytree(ROOT, clone, ignore=skip)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    run([*git, "init", "-q"], cwd=clone)
    run([*git, "add", "-A"], cwd=clone)
    run([*git, "commit", "-q", "-m", "snapshot"], cwd=clone)
    # The Colab-like environment.
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    link_torch(venv, tmp / "torch-overlay")
    # Colab's pip is recent; the pip bundled with an older Python rejects "name @ git+file://..."
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip>=24"])
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *BASE])
    fake = tmp / "fake-colab"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text('"""A stand-in for Colab\'s module."""\n')
    (fake / "sitecustomize.py").write_text("import google.colab  # noqa: F401  (Colab imports it at start)\n")
    kernels = tmp / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fake Colab", "language": "python",
        "env": {"PYTHONPATH": str(fake), "MPLBACKEND": "Agg"},
    }))
    return {"tmp": tmp, "clone": clone, "venv": venv, "jupyter_path": tmp / "jupyter"}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_in_fake_colab(colab, chapter, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(colab["jupyter_path"]))
    nb = nbformat.read(colab["clone"] / "book" / chapter, as_version=4)
    first = nb.cells[0]
    assert sync_notebooks.TAG in first.metadata.get("tags", [])
    first.source = sync_notebooks.colab_source(f"file://{colab['clone']}", "main")
    probe = nbformat.v4.new_code_cell(
        "import ibea_lib, ipywidgets\n"
        "print('ibea_lib from', ibea_lib.__file__)\nprint('ipywidgets', ipywidgets.__version__)"
    )
    nb.cells.append(probe)
    workdir = colab["tmp"] / f"content-{chapter}"
    workdir.mkdir()
    where = {"metadata": {"path": str(workdir)}}
    client = NotebookClient(nb, kernel_name="colab", timeout=600, resources=where)
    client.execute()
    install = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert "Restart the session" not in install, install
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert "ipywidgets 7.7.1" in printed, printed
    assert str(colab["venv"]) in printed and str(colab["clone"]) not in printed, printed
