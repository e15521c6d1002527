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
``flow``, ``gd_step``, ``sequential_steps``  reference RK4 flow and the discrete updates
==========================================  ====================================================

Conventions (sign of the bracket, time normalization) are those of the book's FORMULAS page.
"""

from . import data, integrate, models, plotting, pytree, training, widgets
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
    cosine,
    gd_field,
    lie_bracket,
    modified_loss,
    multitask_field,
    multitask_terms,
    sequential_field,
)
from .integrate import fit_order, flow, gd_step, geometric_lrs, local_errors, sequential_steps
from .pytree import Params, add, axpy, clone, dot, flatten, norm, scale, sub, unflatten, zeros_like

__version__ = "0.1.0"

__all__ = [
    "data",
    "integrate",
    "models",
    "plotting",
    "pytree",
    "training",
    "widgets",
    "Loss",
    "Params",
    "add",
    "alignment",
    "axpy",
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
