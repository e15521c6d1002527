"""Explicit regularizers and corrected updates: the implicit biases of the book, made explicit.

Each objective here is differentiable in ``params`` when they require grad (for instance a
model's own parameters), so it can be minimized with any ``torch.optim`` optimizer:

* :func:`conflict_free_loss`: Σ_i L_i − (h/2) Σ_{i<j} ⟨∇L_i, ∇L_j⟩ (Part II), GD on it keeps the
  flatness term of multitask GD and cancels its conflict term;
* :func:`sgd_modified_loss`: L + h/(4m) Σ_k ‖∇L_k‖², the per-epoch modified loss of SGD with
  random reshuffling over m batches (Smith et al. 2021);
* :func:`bracket_correction`, :func:`bracket_corrected_steps`: one step per task, minus
  (h²/2) Σ_{i<j} [∇L_i, ∇L_j], an update that follows the order-free field to O(h³);
* :func:`pcgrad`: the gradient surgery of Yu et al. (2020), a baseline for the conflict term.

(:func:`ibea_lib.modified_loss`, L + (h/4)‖∇L‖², is the one-loss case and lives in ``bea``.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .autodiff import Loss, check_losses, gradient_terms
from .bea import bracket_sum
from .integrate import sequential_steps
from .pytree import Params, add, check_lr, check_params, dot, scale


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _at_least_two(losses: Sequence[Loss], what: str) -> list[Loss]:
    losses = check_losses(losses)
    if len(losses) < 2:
        raise ValueError(f"{what} needs at least two task losses, got {len(losses)}")
    return losses


def conflict_free_loss(losses: Sequence[Loss], params: Params, lr: float) -> Tensor:
    """L_cf = Σ_i L_i − (h/2) Σ_{i<j} ⟨∇L_i, ∇L_j⟩ (differentiable in ``params``).

    GD with step h on L_cf has the modified loss
    L_cf + (h/4)‖∇L_cf‖² = Σ_i L_i + (h/4) Σ_i ‖∇L_i‖² + O(h²): the explicit term cancels the
    implicit conflict term (h/2)Σ_{i<j}⟨∇L_i, ∇L_j⟩ and keeps the flatness term.
    When ``params`` require grad (``dict(model.named_parameters())``) the result keeps its graph:
    ``conflict_free_loss(Ls, params, h).backward()`` (one double backward).
    """
    h = check_lr(lr)
    losses = _at_least_two(losses, "the conflict term")

    def combine(values: list[Tensor], gs: list[Params]) -> Tensor:
        return sum(values) - (h / 2) * sum(dot(gs[i], gs[j]) for i, j in _pairs(len(gs)))

    return gradient_terms(losses, params, combine)


def sgd_modified_loss(batch_losses: Sequence[Loss], params: Params, lr: float) -> Tensor:
    """L + h/(4m) Σ_k ‖∇L_k‖² with L the mean of the m batch losses (differentiable in params).

    The per-epoch modified loss of SGD with step h over m (micro-)batches with random
    reshuffling (Smith et al. 2021); minimized with the model's parameters it is the explicit
    SGD regularizer.
    """
    h = check_lr(lr)
    losses = check_losses(batch_losses)
    m = len(losses)

    def combine(values: list[Tensor], gs: list[Params]) -> Tensor:
        return sum(values) / m + (h / (4 * m)) * sum(dot(g, g) for g in gs)

    return gradient_terms(losses, params, combine)


def pcgrad(grads: Sequence[Params], *, seed: int | None = None) -> list[Params]:
    """PCGrad (Yu et al., 2020): remove from each task gradient its conflicting components.

    For each task i, start from g_i and, for every other task j, if ⟨g_i', g_j⟩ < 0 replace
    g_i' ← g_i' − (⟨g_i', g_j⟩ / ‖g_j‖²) g_j (projection onto the normal plane of g_j; the
    *original* g_j are used). The other tasks are visited in the order 0, 1, … when ``seed`` is
    None, in a random order drawn from a local generator seeded with ``seed`` otherwise (pass a
    different seed at each training step, e.g. ``seed=step``). Returns the list of projected
    gradients; the PCGrad update direction is their sum. For two tasks with ⟨g_1, g_2⟩ < 0 the
    result is g_1 − (⟨g_1,g_2⟩/‖g_2‖²) g_2 and g_2 − (⟨g_1,g_2⟩/‖g_1‖²) g_1; otherwise the g_i.
    """
    if isinstance(grads, Mapping) or not isinstance(grads, Sequence):
        raise TypeError(f"grads must be a list of task gradients, got {type(grads).__name__}")
    grads = list(grads)
    if len(grads) < 2:
        raise ValueError(f"pcgrad needs at least two task gradients, got {len(grads)}")
    for i, g in enumerate(grads):
        check_params(g, f"grads[{i}]")
    generator = None if seed is None else torch.Generator().manual_seed(seed)
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


def bracket_correction(losses: Sequence[Loss], params: Params, lr: float) -> Params:
    """c = (h/2) Σ_{i<j} [∇L_i, ∇L_j]: the step θ ← θ − h·c removes the brackets of a sweep.

    A sweep of one GD step per task in the given order (:func:`ibea_lib.sequential_steps`)
    followed by θ ← θ − h·c (c evaluated before or after the sweep: the difference is O(h³))
    follows the order-free field :func:`ibea_lib.order_averaged_field` to O(h³). With a
    ``torch.optim`` optimizer, write c into ``.grad`` (:func:`ibea_lib.accumulate_grad`) and call
    ``optimizer.step()``: for plain SGD with learning rate h that is exactly this correction.
    Detached, with the structure of ``params``.
    """
    h = check_lr(lr)
    return scale(bracket_sum(_at_least_two(losses, "a bracket correction"), params), h / 2)


def bracket_corrected_steps(
    losses: Sequence[Loss], params: Params, lr: float, *, at: str = "start"
) -> Params:
    """One GD step per task in order, then −(h²/2) Σ_{i<j} [∇L_i, ∇L_j] (:func:`bracket_correction`).

    ``at`` is where the brackets are evaluated: ``"start"`` (θ, before the sweep) or ``"end"``
    (after it). Both make the update follow the flow of :func:`ibea_lib.order_averaged_field`
    for time h to O(h³), because moving the evaluation point by O(h) changes the correction by
    O(h³). For two tasks the result equals the average of the two orders, (θ_12 + θ_21)/2, to
    O(h³) (exactly, for quadratics with ``at="start"``).
    """
    h = check_lr(lr)
    if at not in ("start", "end"):
        raise ValueError(f"at must be 'start' or 'end', got {at!r}")
    theta = sequential_steps(_at_least_two(losses, "a bracket-corrected sweep"), params, h)
    return add(theta, bracket_correction(losses, params if at == "start" else theta, h), alpha=-h)
