"""ib.book.widgets.frame_slider with ipywidgets 8 (Stack, linked in the browser) and 7 (Colab's
7.7.1 has no Stack: the kernel swaps one Image), and its fallback for the PDF edition."""

from __future__ import annotations

import pytest

widgets = pytest.importorskip("ipywidgets")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ibea_lib.book.widgets import frame_slider  # noqa: E402


def draw(v):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, v])
    return fig


@pytest.mark.skipif(not hasattr(widgets, "Stack"), reason="ipywidgets < 8")
def test_frame_slider_links_a_stack_and_falls_back_to_a_figure():
    box = frame_slider(draw, [1.0, 2.0, 3.0], "h", start=1)
    slider, stack = box.children
    assert isinstance(stack, widgets.Stack) and stack.selected_index == 1 and slider.index == 1
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["image/png"] and "3 positions" in bundle["text/plain"]
    assert "VBox" not in bundle["text/plain"]


def test_frame_slider_without_stack_swaps_the_image(monkeypatch):
    monkeypatch.delattr(widgets, "Stack", raising=False)  # as in ipywidgets 7
    box = frame_slider(draw, [1.0, 2.0, 3.0], "h", start=0)
    slider, image = box.children
    assert isinstance(image, widgets.Image)
    first = image.value
    slider.index = 2
    assert image.value != first
    slider.index = 0
    assert image.value == first


def test_frame_slider_rejects_no_values():
    with pytest.raises(ValueError, match="values is empty"):
        frame_slider(draw, [], "h")
