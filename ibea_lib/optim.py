"""Training loops: the book's explicit regularizers with an ``nn.Module`` and any ``torch.optim`` optimizer.

Give the library the model's own parameters, ``params = dict(model.named_parameters())``
(not ``model.parameters()``, which has no names, and not ``ib.params_of(model)``, which is a
detached copy). Losses of the model (:func:`ibea_lib.model_loss`) evaluated at these tensors
are the model's usual forward pass, and every objective of the library is then differentiable
in them: ``objective.backward()`` fills the parameters' ``.grad`` as for any loss.

Explicit regularizers (one optimizer step each)::

    params = dict(model.named_parameters())
    opt.zero_grad()
    ib.modified_loss(loss, params, lr=h).backward()             # L + (h/4)‖∇L‖²
    # or ib.conflict_free_loss(task_losses, params, lr=h)       # Σ L_i − (h/2) Σ_{i<j} ⟨g_i, g_j⟩
    # or ib.sgd_modified_loss(micro_batch_losses, params, lr=h) # L + h/(4m) Σ_k ‖∇L_k‖²
    opt.step()

Bracket-corrected sweep (one step per task, then the correction, evaluated after the sweep)::

    for loss in task_losses:
        opt.zero_grad(); loss(params).backward(); opt.step()
    opt.zero_grad()
    ib.accumulate_grad(params, ib.bracket_correction(task_losses, params, lr=h))
    opt.step()                        # with SGD(lr=h): θ ← θ − (h²/2) Σ_{i<j} [∇L_i, ∇L_j]

With another optimizer (Adam, say), ``lr=`` of the library is still the h of the formula, the
step of the plain gradient-descent update whose implicit bias is made explicit (the strength of the
regularizer), and has nothing to do with the optimizer's learning rate::

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)           # Adam's step
    objective = loss(params) + ib.implicit_penalty(loss, params, lr=0.05)   # h of (h/4)‖∇L‖²

BatchNorm. The ``ib.*`` losses never change the model: a model loss in train mode normalizes
with the batch statistics but works on copies of the buffers, so ``running_mean``,
``running_var`` and ``num_batches_tracked`` are **never updated** by a loop that trains through
them. Update them with a plain forward pass in train mode, e.g. once per step or once before
evaluation: :func:`update_buffers` (``with torch.no_grad(): model.train(); model(x)``).

The modified losses are in :mod:`ibea_lib.bea` and :mod:`ibea_lib.regularizers`; this module
adds the pieces a loop needs besides ``.backward()``: writing a direction into ``.grad``, and
updating the buffers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .pytree import Params, check_same_structure, not_params_message, tensors

__all__ = ["accumulate_grad", "update_buffers"]


def update_buffers(model: torch.nn.Module, *inputs) -> None:
    """Update the model's buffers (BatchNorm running statistics) with one plain forward pass.

    ``model(*inputs)`` in train mode under ``torch.no_grad()``; the model's mode is restored
    afterwards, and no gradient is recorded. This is the documented way to keep BatchNorm's
    running statistics current while training through ``ib.*`` losses, which never update them.
    (A model that draws random numbers, e.g. Dropout, draws them here as in any forward pass.)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"update_buffers takes a torch.nn.Module, got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad():
            model.train()
            model(*inputs)
    finally:
        for m, mode in modes:
            m.training = mode


def accumulate_grad(params: Params, direction: Params) -> None:
    """``p.grad += d`` for every tensor p of ``params`` and d of ``direction``, as ``backward()`` does.

    ``params`` are the model's own parameters (leaf tensors that require grad, e.g.
    ``dict(model.named_parameters())``); a missing ``.grad`` is created. Then
    ``optimizer.step()`` takes the step along ``direction`` (for SGD with learning rate h:
    θ ← θ − h·direction).
    """
    if not isinstance(params, (Tensor, Mapping)):
        raise TypeError(not_params_message("params", params))
    check_same_structure(params, direction, ("params", "direction"))
    with torch.no_grad():
        for i, (p, d) in enumerate(zip(tensors(params), tensors(direction))):
            if not (p.is_leaf and p.requires_grad):
                raise ValueError(
                    f"params tensor {i} is not a leaf that requires grad; pass the model's own "
                    "parameters, dict(model.named_parameters())"
                )
            if p.grad is None:
                p.grad = d.detach().clone()
            else:
                p.grad.add_(d)
