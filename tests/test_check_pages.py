"""tools/check_pages.py finds each defect a reader would see, and passes a clean page."""

from __future__ import annotations

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

pytest.importorskip("bs4")
import check_pages  # noqa: E402

CLEAN_BODY = """
<section><h1>A chapter</h1>
<p>The modified loss <span class="math notranslate nohighlight">\\(L + \\frac h4\\|\\nabla L\\|^2\\)</span> is
a sum.</p>
<div class="math notranslate nohighlight">\\[\\tilde L = L + \\frac{h}{4}\\|\\nabla L\\|^2\\]</div>
<div class="cell docutils container"><div class="cell_input"><pre>print("$x$ \\\\frac")</pre></div>
<div class="cell_output"><pre>loss 0.25   | a | b |</pre></div></div>
<table><tr><td>a</td><td>b</td></tr></table>
<script type="application/vnd.jupyter.widget-view+json">{"version_major": 2, "model_id": "abc123"}</script>
<a href="other.html#x">other</a> <img src="_images/fig.png"/> <a href="https://example.org">out</a>
</section>
"""


def page(tmp_path: pathlib.Path, body: str, head: str = "") -> list[str]:
    (tmp_path / "other.html").write_text("<html><body><article></article></body></html>")
    (tmp_path / "_images").mkdir(exist_ok=True)
    (tmp_path / "_images" / "fig.png").write_bytes(b"png")
    (tmp_path / "_static").mkdir(exist_ok=True)
    (tmp_path / "_static" / "a.js").write_text("")
    html = (f"<html><head><script src='_static/a.js?v=1'></script>{head}</head>"
            f"<body><main><article class='bd-article'>{body}</article></main></body></html>")
    (tmp_path / "chapter.html").write_text(html)
    return check_pages.check_html_page(tmp_path / "chapter.html", tmp_path)


def test_a_clean_page_passes(tmp_path):
    assert page(tmp_path, CLEAN_BODY) == []


@pytest.mark.parametrize(
    "body, head, expected",
    [
        # a line of display math that Markdown made a list item: the rest is raw TeX
        ("<p>so $L_{\\rm SGD} = \\underbrace{L}</p><ul><li><p>\\frac h4 \\sum_k$:</p></li></ul>", "",
         "raw TeX outside math"),
        ("<p>costs $5 a month</p>", "", "raw TeX outside math"),
        ("<p>| method | time |\n| --- | --- |\n| a | 1 |</p>", "", "Markdown table printed as text"),
        ("<div class='cell_output'><pre>train:  0%|          | 0/50 [00:00&lt;?, ?it/s]</pre></div>", "",
         "progress-bar text"),
        ("<div class='cell_output'><pre>Traceback (most recent call last):\n  x</pre></div>", "",
         "traceback"),
        ("<p>x</p>", "<script>const A = 1</script><script>const A = 1</script>", "inline script is loaded 2"),
        ('<script type="application/vnd.jupyter.widget-view+json">{"model_id": "aa11"}</script>'
         '<script type="application/vnd.jupyter.widget-view+json">{"model_id": "aa11"}</script>', "",
         "widget aa11 shown 2 times"),
        ("<p>x</p>", "<script src='_static/a.js'></script>", "script _static/a.js loaded 2 times"),
        ("<p><a href='../ibea.pdf'>the PDF</a></p>", "", "links ../ibea.pdf, which is not in the build"),
        ("<p><img src='_images/missing.png'/></p>", "", "not in the build"),
    ],
    ids=["list-item-math", "dollar", "table", "progress", "traceback", "inline-twice", "widget-twice",
         "script-twice",
         "missing-pdf", "missing-image"],
)
def test_each_defect_is_found(tmp_path, body, head, expected):
    found = page(tmp_path, body, head)
    assert any(expected in f for f in found), found


def test_pdf_text_and_latex_log():
    assert check_pages.check_pdf_text("Chapter 1\nall fine, see (2.1)") == []
    found = check_pages.check_pdf_text("train: 0%| | 0/50 [00:00<?, ?it/s]\n| a | b |\n| --- | --- |\nsee ??")
    assert len(found) == 3
    log = ("Missing character: There is no ᵀ (U+1D40) in font [FreeMono.otf]/OT:script=latn;language=dflt;!\n"
           "Overfull \\hbox (391.5pt too wide) in paragraph at lines 10--12\n[]\\OML/cmm/m/it/10 over\n"
           "Overfull \\hbox (3.2pt too wide) in paragraph at lines 20--21\n")
    found = check_pages.check_latex_log(log)
    assert any("ᵀ (U+1D40)" in f for f in found) and any("391.5 pt" in f for f in found)
    assert len(found) == 2  # a 3 pt overflow is not a defect


def test_an_empty_build_is_a_defect(tmp_path):
    assert check_pages.check_html(tmp_path) != []
