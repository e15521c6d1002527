"""ibea_lib: implicit biases of gradient descent, by backward error analysis, in PyTorch.

A *loss* is a callable ``loss(params) -> 0-dim tensor``; ``params`` is a tensor or a dict of
tensors, and every vector returned has the same structure, device and dtype. The main calls:

==========================================  ====================================================
``grad(L, θ)``, ``hvp(L, θ, v)``             ∇L and ∇²L·v
``lie_bracket(La, Lb, θ)``                   [∇La, ∇Lb] = H_b ∇La − H_a ∇Lb
``alignment``, ``cosine``                    ⟨∇La, ∇Lb⟩ and its normalized version
``modified_loss(L, θ, h)``                   L + (h/4)‖∇L‖²  (differentiable)
``multitask_terms(Ls, θ, h)``                loss, flatness, conflict and modified loss
``gd_field``, ``multitask_field``,           modified vector fields of GD, of GD on Σ L_i,
``sequential_field``                         and of one step per task in a fixed order
``order_averaged_field``, ``bracket_sum``    the field without brackets, and Σ_{i<j} [∇L_i, ∇L_j]
``hessian_terms(Ls, θ, coefficients)``       Σ_k H_k u_k for any rule u_k(g, G): one reverse pass
``data_loss(model, criterion, batches)``     a loss over a whole data set, in passes over batches
``flow``, ``gd_step``, ``sequential_steps``  reference RK4 flow and the discrete updates
==========================================  ====================================================

Submodules of the library: ``pytree``, ``integrate``, ``data`` (tasks), ``models``, ``dataloss``
(data-set losses), ``distributed`` (all-reduce over ``torch.distributed`` ranks, ``shard``),
``factored`` (the Gram-matrix bracket for MLPs, used automatically), and
``regularizers`` (the explicit regularizers, also exported here).

``ibea_lib.book`` holds the helpers of the book's chapters (2-D landscapes, plotting, widgets,
training loops of the experiments, statistics). They are not part of the library's contract: they
may change with the chapters. It is imported on first use (``ib.book`` or
``import ibea_lib.book``), so ``import ibea_lib`` does not load matplotlib.

Conventions (sign of the bracket, time normalization) are those of the book's FORMULAS page.
"""

from . import data, distributed, factored, integrate, models, pytree
from .autodiff import (
    Loss,
    grad,
    hvp,
    load_params,
    model_loss,
    params_of,
    sum_losses,
    value_and_grad,
)
from .bea import (
    alignment,
    bracket_sum,
    cosine,
    gd_field,
    hessian_terms,
    lie_bracket,
    modified_loss,
    multitask_field,
    multitask_terms,
    order_averaged_field,
    sequential_field,
)
from .dataloss import DataLoss, data_loss  # scale (issue 11): data-set losses
from .integrate import fit_order, flow, gd_step, geometric_lrs, local_errors, order_gap, sequential_steps
from .pytree import Params, add, clone, dot, flatten, norm, scale, sub, unflatten, zeros_like
from .regularizers import bracket_corrected_steps, conflict_free_loss, pcgrad, sgd_modified_loss

__version__ = "0.1.0"

__all__ = [
    "bracket_corrected_steps",
    "bracket_sum",
    "conflict_free_loss",
    "order_averaged_field",
    "order_gap",
    "pcgrad",
    "sgd_modified_loss",
    "data",
    "data_loss",
    "DataLoss",
    "distributed",
    "factored",
    "integrate",
    "models",
    "pytree",
    "Loss",
    "Params",
    "add",
    "alignment",
    "clone",
    "cosine",
    "dot",
    "fit_order",
    "flatten",
    "flow",
    "gd_field",
    "gd_step",
    "geometric_lrs",
    "grad",
    "hessian_terms",
    "hvp",
    "lie_bracket",
    "load_params",
    "local_errors",
    "model_loss",
    "modified_loss",
    "multitask_field",
    "multitask_terms",
    "norm",
    "params_of",
    "scale",
    "sequential_field",
    "sequential_steps",
    "sub",
    "sum_losses",
    "unflatten",
    "value_and_grad",
    "zeros_like",
]


def __getattr__(name: str):
    """Import ``ibea_lib.book`` lazily (it loads matplotlib)."""
    if name == "book":
        import importlib

        return importlib.import_module(".book", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
