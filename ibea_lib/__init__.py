"""ibea_lib: implicit biases of gradient descent, by backward error analysis, in PyTorch.

A *loss* is a callable ``loss(params) -> 0-dim tensor``; ``params`` is a tensor or a dict of
tensors, and every vector returned has the same structure, device and dtype. The main calls:

================================================  ==================================================
``grad(L, θ)``, ``hvp(L, θ, v)``                  ∇L and ∇²L·v
``sharpness(L, θ)``                               λ_max(∇²L), by power iteration on HVPs
``lie_bracket(La, Lb, θ)``                        [∇La, ∇Lb] = H_b ∇La − H_a ∇Lb
``alignment``, ``cosine``                         ⟨∇La, ∇Lb⟩ and its normalized version
``modified_loss(L, θ, lr)``                       L + (h/4)‖∇L‖²  (differentiable)
``implicit_penalty``, ``conflict_term``           the penalty alone: (h/4)‖∇L‖²; the conflict term
``multitask_terms(Ls, θ, lr)``                    loss, flatness, conflict and modified loss
``gd_field``, ``multitask_field``                 modified fields of GD and of GD on Σ L_i
``sequential_field``                              modified field of one step per task, in order
``order_averaged_field``, ``bracket_sum``         the field without brackets; Σ_{i<j} [∇L_i, ∇L_j]
``conflict_free_loss``, ``sgd_modified_loss``     explicit regularizers (differentiable)
``bracket_correction``, ``pcgrad``                corrections of a sweep, of conflicting gradients
``gd_step``, ``sequential_steps``                 the updates: one step; one step per task
``flow``, ``flow_path``                           reference RK4 flow: end point; all states
``local_errors``, ``fit_order``                   local errors against a flow; their order
``value_and_grad``, ``gradient_terms``            the pipeline every call above is built on ...
``hessian_terms``                                 ... (Σ_k H_k u_k in one extra reverse pass)
``model_loss``, ``params_of``, ``load_params``    losses of modules, and their parameters
``accumulate_grad``, ``update_buffers``           ``.grad`` and BatchNorm buffers in ``torch.optim`` loops
================================================  ==================================================

Submodules: ``autodiff`` (the pipeline, module losses), ``bea`` (modified losses and fields,
brackets), ``regularizers`` (explicit regularizers and corrections), ``integrate`` (updates,
flows, order fits), ``optim`` (training loops with ``torch.optim``), ``pytree``, ``data``,
``models``, ``dataloss`` (:func:`data_loss`: a loss over a whole data set, computed in passes over
its batches), ``distributed`` (the all-reduce over ``torch.distributed`` ranks; ``shard``) and
``factored`` (the Gram-matrix bracket for MLPs, used automatically by :func:`lie_bracket`,
:func:`sequential_field` and :func:`bracket_sum`).

Conventions (the same in every function):

* **Step size**: ``lr`` is the h of the formula a function computes (the step of the plain
  gradient-descent update modeled), never the learning rate of an optimizer such as Adam.
* **Pairs vs sequences**: a function defined for exactly two tasks takes two positional losses
  ``(loss_a, loss_b, params)``; one defined for any number of tasks takes one sequence
  ``losses`` (or ``batch_losses``).
* **Numbers**: every number returned is a 0-dim tensor (dicts of them for several named numbers,
  a 1-D tensor for a list of numbers, e.g. :func:`local_errors`, :func:`geometric_lrs`).
* **Seeds**: randomness is controlled by a keyword ``seed: int``, turned into a local
  ``torch.Generator``; torch's global RNG is never used or advanced (module initialization runs in
  ``torch.random.fork_rng``).
* **Flows**: ``flow(field, params, t, *, steps=100)`` and ``flow_path(field, params, t, *, steps=100)``.
* **Zero gradients**: :func:`cosine` is NaN when a gradient is zero (0/0).
* **params**: a tensor or a dict; for a model, ``dict(model.named_parameters())`` (the model's own
  tensors: results that are objectives stay differentiable, for training) or
  ``params_of(model)`` (a detached copy). ``model.parameters()`` is refused with that hint.
* **Nothing of the caller's changes**: tensors, ``requires_grad`` flags, ``.grad``, modules,
  buffers and RNG state are left as they were. Every call works under ``torch.no_grad()``; under
  ``torch.inference_mode()`` it raises (autograd records nothing there).
* **Errors**: ``TypeError``/``ValueError`` naming the argument and what to pass;
  ``FloatingPointError`` when a loss or a result is not finite.

The bracket's sign and the time normalization are those of the book's FORMULAS page:
[X, Y] = DY·X − DX·Y, and a sweep of one step per task over time h.

``ibea_lib.book`` holds the helpers of the book's chapters (2-D landscapes, plotting, widgets,
training loops of the experiments, statistics). They are not part of the library's contract: they
may change with the chapters. It is imported on first use (``ib.book`` or
``import ibea_lib.book``), so ``import ibea_lib`` does not load matplotlib.
"""

from . import (
    autodiff,
    bea,
    data,
    dataloss,
    distributed,
    factored,
    integrate,
    models,
    optim,
    pytree,
    regularizers,
)
from .autodiff import (
    Loss,
    ModelLoss,
    allow_constant,
    grad,
    gradient_terms,
    hessian_terms,
    hvp,
    load_params,
    model_loss,
    params_of,
    sharpness,
    sum_losses,
    value_and_grad,
)
from .bea import (
    alignment,
    bracket_sum,
    conflict_term,
    cosine,
    gd_field,
    implicit_penalty,
    lie_bracket,
    modified_loss,
    multitask_field,
    multitask_terms,
    order_averaged_field,
    sequential_field,
)
from .dataloss import DataLoss, data_loss
from .integrate import (
    fit_order,
    flow,
    flow_path,
    gd_step,
    geometric_lrs,
    local_errors,
    order_gap,
    sequential_steps,
)
from .optim import accumulate_grad, update_buffers
from .pytree import Params, add, clone, dot, flatten, norm, scale, sub, unflatten, zeros_like
from .regularizers import (
    bracket_corrected_steps,
    bracket_correction,
    conflict_free_loss,
    pcgrad,
    sgd_modified_loss,
)

__version__ = "0.2.0"

__all__ = [
    "DataLoss",
    "data_loss",
    "dataloss",
    "distributed",
    "factored",
    # submodules
    "autodiff",
    "bea",
    "data",
    "integrate",
    "models",
    "optim",
    "pytree",
    "regularizers",
    # types
    "Loss",
    "ModelLoss",
    "Params",
    # the pipeline and module losses
    "value_and_grad",
    "grad",
    "gradient_terms",
    "hessian_terms",
    "hvp",
    "sharpness",
    "model_loss",
    "params_of",
    "load_params",
    "sum_losses",
    "allow_constant",
    # backward error analysis
    "alignment",
    "cosine",
    "lie_bracket",
    "modified_loss",
    "implicit_penalty",
    "conflict_term",
    "multitask_terms",
    "gd_field",
    "multitask_field",
    "sequential_field",
    "order_averaged_field",
    "bracket_sum",
    # explicit regularizers and corrections
    "conflict_free_loss",
    "sgd_modified_loss",
    "bracket_correction",
    "bracket_corrected_steps",
    "pcgrad",
    "accumulate_grad",
    "update_buffers",
    # updates, flows, orders
    "gd_step",
    "sequential_steps",
    "flow",
    "flow_path",
    "local_errors",
    "fit_order",
    "geometric_lrs",
    "order_gap",
    # pytree arithmetic
    "add",
    "sub",
    "scale",
    "dot",
    "norm",
    "zeros_like",
    "clone",
    "flatten",
    "unflatten",
]


def __getattr__(name: str):
    """Import ``ibea_lib.book`` lazily (it loads matplotlib)."""
    if name == "book":
        import importlib

        return importlib.import_module(".book", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# the bracket tournament: pairwise order predictions for many source tasks (ibea_lib.transfer)
from . import transfer  # noqa: E402
from .transfer import bracket_matrix, rank_by_bracket, sequence_score  # noqa: E402

__all__ += ["transfer", "bracket_matrix", "rank_by_bracket", "sequence_score"]
