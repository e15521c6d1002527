"""Explicit regularizers and corrected updates: the implicit biases of the book, made explicit.

Each objective here is differentiable in ``params`` when they require grad (for instance a
model's own parameters), so it can be minimized with any ``torch.optim`` optimizer:

* :func:`conflict_free_loss`: Σ_i L_i − (h/2) Σ_{i<j} ⟨∇L_i, ∇L_j⟩ (Part II), GD on it keeps the
  flatness term of multitask GD and cancels its conflict term;
* :func:`sgd_modified_loss`: L + h/(4m) Σ_k ‖∇L_k‖², the per-epoch modified loss of SGD with
  random reshuffling over m batches (Smith et al. 2021);
* :func:`bracket_corrected_steps`: one step per task, minus (h²/2) Σ_{i<j} [∇L_i, ∇L_j], an update
  that follows the order-free field to O(h³);
* :func:`pcgrad`: the gradient surgery of Yu et al. (2020), a baseline for the conflict term.

(:func:`ibea_lib.modified_loss`, L + (h/4)‖∇L‖², is the one-loss case and lives in ``bea``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .autodiff import Loss, _grads, _leaves, check_losses, evaluate
from .bea import bracket_sum
from .integrate import gd_step
from .pytree import Params, add, check_lr, check_params, dot


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def conflict_free_loss(losses: Sequence[Loss], params: Params, lr: float) -> Tensor:
    """L_cf = Σ_i L_i − (h/2) Σ_{i<j} ⟨∇L_i, ∇L_j⟩ (differentiable in ``params``).

    GD with step h on L_cf has the modified loss
    L_cf + (h/4)‖∇L_cf‖² = Σ_i L_i + (h/4) Σ_i ‖∇L_i‖² + O(h²): the explicit term cancels the
    implicit conflict term (h/2)Σ_{i<j}⟨∇L_i, ∇L_j⟩ and keeps the flatness term.
    When ``params`` require grad (a model's parameters) the result keeps its graph, so
    ``grad(lambda p: conflict_free_loss(Ls, p, h), θ)`` is its gradient (one double backward).
    """
    h = check_lr(lr)
    losses = check_losses(losses)
    if len(losses) < 2:
        raise ValueError("the conflict term needs at least two task losses")
    leaves, attached = _leaves(params)
    values = [evaluate(f, leaves, f"losses[{i}]") for i, f in enumerate(losses)]
    gs = [_grads(v, leaves, create_graph=True) for v in values]
    out = sum(values) - (h / 2) * sum(dot(gs[i], gs[j]) for i, j in _pairs(len(gs)))
    if not torch.isfinite(out):
        raise FloatingPointError("the conflict-free loss is not finite")
    return out if attached else out.detach()


def pcgrad(grads: Sequence[Params], *, generator: torch.Generator | None = None) -> list[Params]:
    """PCGrad (Yu et al., 2020): remove from each task gradient its conflicting components.

    For each task i, start from g_i and, for every other task j (in a random order drawn from
    ``generator``; in the order 0, 1, … when ``generator`` is None), if ⟨g_i', g_j⟩ < 0 replace
    g_i' ← g_i' − (⟨g_i', g_j⟩ / ‖g_j‖²) g_j (projection onto the normal plane of g_j; the
    *original* g_j are used). Returns the list of projected gradients; the PCGrad update
    direction is their sum. For two tasks with ⟨g_1, g_2⟩ < 0 the result is
    g_1 − (⟨g_1,g_2⟩/‖g_2‖²) g_2 and g_2 − (⟨g_1,g_2⟩/‖g_1‖²) g_1; otherwise the g_i unchanged.
    """
    grads = list(grads)
    if len(grads) < 2:
        raise ValueError(f"pcgrad needs at least two task gradients, got {len(grads)}")
    for i, g in enumerate(grads):
        check_params(g, f"grads[{i}]")
    sq = [dot(g, g) for g in grads]
    out = []
    for i, g in enumerate(grads):
        others = [j for j in range(len(grads)) if j != i]
        if generator is not None:
            others = [others[k] for k in torch.randperm(len(others), generator=generator).tolist()]
        projected = g
        for j in others:
            inner = dot(projected, grads[j])
            if inner < 0 and sq[j] > 0:
                projected = add(projected, grads[j], alpha=-float(inner / sq[j]))
        out.append(projected)
    return out


@torch.enable_grad()
def sgd_modified_loss(batch_losses: Sequence[Loss], params: Params, lr: float) -> Tensor:
    """L + h/(4m) Σ_k ‖∇L_k‖² with L the mean of the m batch losses (differentiable in params)."""
    h = check_lr(lr)
    losses = check_losses(batch_losses)
    leaves, attached = _leaves(params)
    m = len(losses)
    total = 0.0
    penalty = 0.0
    for i, f in enumerate(losses):
        value = evaluate(f, leaves, f"batch_losses[{i}]")
        g = _grads(value, leaves, create_graph=attached)
        total = total + value
        penalty = penalty + dot(g, g)
    out = total / m + (h / (4 * m)) * penalty
    if not torch.isfinite(out):
        raise FloatingPointError("the SGD modified loss is not finite")
    return out if attached else out.detach()


def bracket_corrected_steps(
    losses: Sequence[Loss], params: Params, lr: float, at: str = "start"
) -> Params:
    """One GD step per task in order, then −(h²/2) Σ_{i<j} [∇L_i, ∇L_j].

    ``at`` is where the brackets are evaluated: ``"start"`` (θ, before the sweep) or ``"end"``
    (after it). Both make the update follow the flow of ``multitask.flatness_field`` for time h
    to O(h³), because moving the evaluation point by O(h) changes the correction by O(h³).
    For two tasks the result equals the average of the two orders, (θ_12 + θ_21)/2, to O(h³)
    (exactly, for quadratics with ``at="start"``).
    """
    h = check_lr(lr)
    losses = check_losses(losses)
    if at not in ("start", "end"):
        raise ValueError(f"at must be 'start' or 'end', got {at!r}")
    theta = params
    for loss in losses:
        theta = gd_step(loss, theta, h)
    where = params if at == "start" else theta
    return add(theta, bracket_sum(losses, where), alpha=-(h * h) / 2)
