"""Helpers of the book's chapters: not part of ``ibea_lib``'s contract.

The library proper (``import ibea_lib``) is the core: autodiff, BEA terms and fields, brackets,
integrators, regularizers, pytrees, data and models. What only the chapters need lives here, one
module per theme, and may change with the chapters (each imported on first use):

====================  ===========================================================================
``landscapes``        2-D losses, trajectories and contour plots (Part I)
``sgd``               minibatch SGD as a sequence of tasks (ch. 03, 10)
``multitask``         conflict gradients, multitask updates, two-task digits (Part II)
``continual``         brackets of general vector fields, parallelograms, shifted tasks (Part III)
``forgetting``        forgetting of an earlier task, its second-order terms (ch. 08)
``experiments``       the protocols of Part IV
``ordering``          task-order prediction and replay (ch. 11, 12)
``stats``             intervals (Student t, paired, cluster bootstrap), rank correlations, regressions
``training``          a functional training loop with a progress bar, ``pick_device``
``plotting``          the book's figure style and log-log order plots
``widgets``           sliders whose frames are rendered in advance (work in the static HTML)
``grading``           ``forbid``: check cells of the coding exercises reject a bare library call
``saved``             the code the chapters teach, generated from their ``#@save`` cells
====================  ===========================================================================
"""

import importlib

__all__ = [
    "continual",
    "experiments",
    "forgetting",
    "grading",
    "landscapes",
    "multitask",
    "ordering",
    "plotting",
    "saved",
    "sgd",
    "stats",
    "training",
    "widgets",
]


def __getattr__(name: str):
    """Import a helper module on first use (``ib.book.stats``): a chapter loads only what it uses,
    and its stored outputs depend only on those modules (tools/outputs.py)."""
    if name in __all__:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
