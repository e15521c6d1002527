"""One plotting style for the whole book, and the plots that several chapters draw."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt

from ..integrate import fit_order

COLORS = {
    "gd": "#1f77b4",
    "flow": "#7f7f7f",
    "modified": "#d62728",
    "task_a": "#2ca02c",
    "task_b": "#9467bd",
    "bracket": "#ff7f0e",
}


def use_style() -> None:
    """The book's matplotlib settings (readable in HTML and in notebooks)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 11,
            "legend.frameon": False,
        }
    )


def order_plot(
    lrs: Sequence[float],
    errors: Mapping[str, Sequence[float]],
    ax: plt.Axes | None = None,
    title: str | None = None,
) -> dict[str, float]:
    """Log-log plot of local error vs h, one line per candidate flow, slopes in the legend.

    Returns the fitted slope of each line.
    """
    if ax is None:
        _, ax = plt.subplots()
    slopes = {}
    for label, errs in errors.items():
        slopes[label] = fit_order(lrs, errs)
        ax.loglog(lrs, errs, "o-", label=f"{label} (slope {slopes[label]:.2f})")
    ax.set_xlabel("learning rate h")
    ax.set_ylabel("local error after one update")
    if title:
        ax.set_title(title)
    ax.legend()
    return slopes
