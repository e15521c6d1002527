"""The book's structure: table of contents, Colab cells, configuration."""

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import sync_notebooks  # noqa: E402


def chapters() -> list[pathlib.Path]:
    return sorted((ROOT / "book").glob("*.ipynb"))


def toc_files() -> list[str]:
    return re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text())


def test_every_toc_entry_exists_and_every_chapter_is_listed():
    listed = toc_files()
    for entry in listed:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".ipynb", ".md")), entry
    for nb in chapters():
        assert str(nb.relative_to(ROOT).with_suffix("")) in listed, f"{nb.name} is not in _toc.yml"


def test_colab_cells_follow_the_repository_setting():
    url, branch = sync_notebooks.repository()
    assert url.startswith("https://github.com/") and branch
    expected = sync_notebooks.colab_source(url, branch)
    for nb_path in chapters():
        first = json.loads(nb_path.read_text())["cells"][0]
        assert sync_notebooks.TAG in first["metadata"].get("tags", []), nb_path.name
        assert "".join(first["source"]) == expected, f"{nb_path.name}: run tools/sync_notebooks.py"


def test_colab_cell_does_nothing_outside_colab():
    source = sync_notebooks.colab_source("https://github.com/x/y", "main")
    assert source.count('if "google.colab" in sys.modules:') == 1
    # The install must not replace Colab's packages: no pin, no --upgrade, no -r requirements.
    (install,) = [line for line in source.splitlines() if "%pip" in line]
    assert "torch" not in install and "--upgrade" not in install and "requirements" not in install
    assert "-U " not in install and "ipywidgets" not in install
    assert "Restart the session" in source


def test_no_repository_address_outside_the_config():
    # The address lives in _config.yml; the Colab cells get it from tools/sync_notebooks.py.
    url, _ = sync_notebooks.repository()
    slug = url.removeprefix("https://github.com/")
    texts = []
    for nb_path in chapters():
        for i, cell in enumerate(json.loads(nb_path.read_text())["cells"]):
            if sync_notebooks.TAG not in cell["metadata"].get("tags", []):
                texts.append((f"{nb_path.name} cell {i}", "".join(cell["source"])))
    others = [*(ROOT / "ibea_lib").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"),
              *(ROOT / "tools").glob("*"), *(ROOT / "book").glob("*.md"),
              ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "pyproject.toml"]
    texts += [(str(p.relative_to(ROOT)), p.read_text()) for p in others if p.is_file()]
    bad = [where for where, text in texts if slug in text]
    assert not bad, "hard-coded repository address (read it from _config.yml): " + ", ".join(bad)


def test_package_keeps_colabs_ipywidgets():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"ipywidgets>=7.7"' in text and '"torch>=2.1"' in text


def test_sync_check_passes():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "sync_notebooks.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_offline_assets_are_configured():
    config = (ROOT / "_config.yml").read_text()
    assert 'mathjax_path: "mathjax/tex-chtml.js"' in config
    assert '"widgets/embed-amd.js"' in config and '"widgets/require.js"' in config
    assert 'html_static_path: ["vendor", "assets"]' in config
    assert not (ROOT / "_static").exists(), "a _static folder makes Jupyter Book load every vendor .js twice"
    fetch = (ROOT / "tools" / "fetch_assets.sh").read_text()
    assert "tex-chtml.js" in fetch and "embed-amd.js" in fetch and "require.js" in fetch


def markdown_sources():
    for nb_path in chapters():
        for i, cell in enumerate(json.loads(nb_path.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                yield nb_path.name, i, "".join(cell["source"])
    for md in (ROOT / "book").glob("*.md"):
        yield md.name, 0, md.read_text()


def test_directive_titles_contain_no_backticks():
    # A backtick fence's info string cannot contain backticks (CommonMark): a title like
    # ```{prf:theorem} Name {cite:p}`key` is silently shown as a code block. Use :::{prf:theorem}.
    bad = [
        f"{name} cell {i}: {line.strip()[:60]}"
        for name, i, text in markdown_sources()
        for line in text.splitlines()
        if re.match(r"\s*```+\{", line) and "`" in re.sub(r"^\s*```+", "", line)
    ]
    assert not bad, "directive fences with backticks in their title:\n" + "\n".join(bad)


def test_directive_fences_are_balanced():
    bad = []
    for name, i, text in markdown_sources():
        fences = [line.strip() for line in text.splitlines() if re.match(r"\s*(```|:::)", line)]
        opened = [f for f in fences if re.match(r"(```+|:::+)\{", f)]
        closed = [f for f in fences if re.fullmatch(r"```+|:::+", f)]
        plain_code = [f for f in fences if re.match(r"```+\w", f)]
        n_open = len(opened) + len(plain_code)
        if n_open != len(closed):
            bad.append(f"{name} cell {i}: {n_open} fences opened, {len(closed)} closed")
    assert not bad, "\n".join(bad)


def test_markdown_has_no_mangled_latex():
    # "\frac", "\nabla", "\theta" written through a non-raw Python string become control
    # characters or newlines followed by "rac", "abla", "heta": MathJax then shows an error.
    bad = []
    for name, i, text in markdown_sources():
        if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text):
            bad.append(f"{name} cell {i}: control character")
        for m in re.finditer(r"(?<![\\A-Za-z])(abla|heta|arphi)\b|^rac\b", text, re.M):
            bad.append(f"{name} cell {i}: {text[max(0, m.start() - 20):m.end() + 10]!r}")
    assert not bad, "\n".join(bad)


def test_every_stored_widget_has_its_state():
    # JupyterLab and the HTML book show a stored widget only from the widget state saved in the
    # notebook when it was executed (nbclient's store_widget_state, on by default in nbconvert).
    bad = []
    for nb_path in chapters():
        nb = json.loads(nb_path.read_text())
        state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        models = state.get("state", {})
        for i, cell in enumerate(nb["cells"]):
            for out in cell.get("outputs", []):
                view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
                if view and view["model_id"] not in models:
                    bad.append(f"{nb_path.name} cell {i}")
    assert not bad, "widget outputs without saved state (re-execute with nbconvert): " + ", ".join(bad)


def test_chapters_open_unmodified_in_jupyterlab():
    # JupyterLab marks a notebook modified (and autosaves it) when it has to fill in its kernelspec.
    for nb_path in chapters():
        meta = json.loads(nb_path.read_text())["metadata"]
        assert meta.get("kernelspec", {}).get("name") == "python3", nb_path.name
        assert meta.get("language_info", {}).get("name") == "python", nb_path.name


def _math_continuation_lines(text: str) -> list[str]:
    """Lines that continue an inline formula ($...$ over several lines) and start like a Markdown list
    item ("+ ", "- ", "* "): Markdown then ends the paragraph there and prints the formula as raw TeX.
    (A $$ ... $$ block on lines of its own is parsed as math first, so its lines may start with "+".)"""
    bad, in_display, in_inline, in_fence = [], False, False, False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", ":::")):
            in_fence = not in_fence if not re.match(r"(```|:::)\{", stripped) else in_fence
            continue
        if in_inline and not in_display and re.match(r"[+\-*] ", stripped):
            bad.append(stripped[:60])
        rest = line
        for _ in range(rest.count("$$")):
            in_display = not in_display
        rest = rest.replace("$$", "")
        singles = len(re.findall(r"(?<!\\)\$", rest))
        if not in_display and singles % 2:
            in_inline = not in_inline
        if not stripped:
            in_inline = False  # a blank line ends a paragraph, and any inline formula with it
    return bad


def test_no_formula_line_starts_like_a_list_item():
    assert _math_continuation_lines("so $a = b\n+ c$ holds") == ["+ c$ holds"]
    assert _math_continuation_lines("$$\nx = 1\n- y\n$$") == []
    assert _math_continuation_lines("- a list $x$\n- item $y$") == []
    bad = [f"{name} cell {i}: {line}" for name, i, text in markdown_sources()
           for line in _math_continuation_lines(text)]
    assert not bad, "move the operator to the end of the line before:\n" + "\n".join(bad)


def test_code_cells_carry_no_linter_comments():
    # readers see every code cell: a linter comment is noise there (ruff does not lint the notebooks)
    bad = [f"{nb_path.name} cell {i}"
           for nb_path in chapters()
           for i, cell in enumerate(json.loads(nb_path.read_text())["cells"])
           if cell["cell_type"] == "code" and "# noqa" in "".join(cell["source"])]
    assert not bad, "remove '# noqa' from: " + ", ".join(bad)
