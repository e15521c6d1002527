"""Widgets that also work in the static HTML book.

A slider that runs Python needs a live kernel. :func:`frame_slider` instead renders one
figure per slider position in advance and links the slider to the shown figure in the
browser (``jslink``), so it works the same in JupyterLab, Colab and the built HTML.

Where no widget can be shown (the PDF edition, an untrusted notebook), the output falls back to
the figure at the start position and a line naming the slider, not to the widget's ``repr``.

ipywidgets 8 has a ``Stack`` widget (one child shown at a time) that the slider is linked to.
ipywidgets 7 (Google Colab ships 7.7.1) has none: there the slider swaps the value of one
``Image`` from Python, which needs the live kernel that Colab and Jupyter have.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt


def figure_png(fig: plt.Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (the figure is then closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _with_fallback(box, png: bytes, text: str):
    """Add a static PNG and a readable text/plain to the widget's display data."""
    import base64

    plain_bundle = type(box)._repr_mimebundle_ if hasattr(type(box), "_repr_mimebundle_") else None
    if plain_bundle is None:  # ipywidgets 7 displays through _ipython_display_: keep it
        return box

    class FrameSlider(type(box)):
        def _repr_mimebundle_(self, **kwargs):
            bundle = plain_bundle(self, **kwargs) or {}
            if "application/vnd.jupyter.widget-view+json" in bundle:
                bundle["image/png"] = base64.b64encode(png).decode("ascii")
                bundle["text/plain"] = text
            return bundle

    box.__class__ = FrameSlider
    return box


def frame_slider(
    draw: Callable[[float], plt.Figure],
    values: Sequence[float],
    description: str,
    *,
    fmt: str = "{:.3g}",
    start: int = 0,
    dpi: int = 80,
):
    """A slider over ``values``; each position shows ``draw(value)``, rendered in advance."""
    import ipywidgets as widgets

    if not values:
        raise ValueError("values is empty")
    images = [widgets.Image(value=figure_png(draw(v), dpi), format="png") for v in values]
    slider = widgets.SelectionSlider(
        options=[(fmt.format(v), i) for i, v in enumerate(values)],
        value=start,
        description=description,
        continuous_update=True,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="420px"),
    )
    if hasattr(widgets, "Stack"):  # ipywidgets >= 8: linked in the browser, no kernel needed
        stack = widgets.Stack(images, selected_index=start)
        widgets.jslink((slider, "index"), (stack, "selected_index"))
        label = f"[a slider, {description}: {len(values)} positions; shown at {fmt.format(values[start])}]"
        return _with_fallback(widgets.VBox([slider, stack]), images[start].value, label)
    # ipywidgets 7: one Image whose PNG is swapped by the kernel when the slider moves
    frames = [image.value for image in images]
    shown = widgets.Image(value=frames[start], format="png")

    def show(change):
        shown.value = frames[change["new"]]

    slider.observe(show, names="index")
    return widgets.VBox([slider, shown])
