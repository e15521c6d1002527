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
    log_ticks(ax)
    return slopes


def log_ticks(ax: plt.Axes, *, minimum: int = 2) -> None:
    """Make sure every log-scaled axis of ``ax`` shows at least ``minimum`` tick labels.

    Matplotlib labels only the powers of ten; a range shorter than a decade then shows one label
    or none. Such an axis gets labelled ticks at 1, 2 and 5 times the powers of ten in its range
    (and at every integer multiple if that is still too few).
    """
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    def label(v, _pos=None):
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or not (lo > 0 and hi > 0):
            continue
        lo, hi = min(lo, hi), max(lo, hi)
        powers = [10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
        if sum(lo <= p <= hi for p in powers) >= minimum:
            continue
        for mults in ((1, 2, 5), range(1, 10)):
            ticks = [m * p for p in powers for m in mults if lo <= m * p <= hi]
            if len(ticks) >= minimum:
                break
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(label))
        axis.set_minor_formatter(NullFormatter())
