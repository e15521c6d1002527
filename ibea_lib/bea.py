"""Backward error analysis: modified losses, modified vector fields and Lie brackets.

Conventions follow FORMULAS.md (shared with the book):

* Lie bracket of vector fields: [X, Y] = DY·X − DX·Y; for gradients
  [∇L_a, ∇L_b] = H_b ∇L_a − H_a ∇L_b.
* A discrete update with learning rate h is compared with the flow of a modified vector
  field F over time h (for sequential updates: the whole sweep over the tasks, time h).

Every Hessian term here is a Hessian-vector product, and all the ones a formula needs are
taken in *one* extra reverse pass: for fixed vectors u_k (stop-gradient),
∇_θ Σ_k ⟨∇L_k(θ), u_k⟩ = Σ_k H_k u_k. So a bracket or a sequential field costs about two
gradients' worth of extra work, and memory stays linear in the number of parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from . import factored as _factored  # scale (issue 11): the factored bracket for MLPs
from .autodiff import Loss, _detach, _grads, _leaves, check_finite, check_losses, evaluate, grad
from .pytree import Params, add, check_lr, dot, norm, rebuild, scale, tensors, tree_map, zeros_like


def _sum_of_hvps(leaves: Params, gs: list[Params], us: list[Params]) -> Params:
    """Σ_k H_k u_k = ∇_θ Σ_k ⟨∇L_k(θ), sg(u_k)⟩, in one reverse pass."""
    s = sum(dot(g, _detach(u)) for g, u in zip(gs, us))
    if not s.requires_grad:  # every loss is (at most) linear in params: all Hessians vanish
        return rebuild(leaves, [torch.zeros_like(t) for t in tensors(leaves)])
    return _grads(s, leaves, create_graph=False)


def _total(trees: list[Params]) -> Params:
    out = trees[0]
    for t in trees[1:]:
        out = tree_map(torch.add, out, t)
    return out


def _prefix_sums(trees: list[Params]) -> list[Params]:
    """P_k = Σ_{i<k} trees[i] for k = 0, …, n−1 (P_0 = 0)."""
    prefix, out = zeros_like(trees[0]), []
    for t in trees:
        out.append(prefix)
        prefix = tree_map(torch.add, prefix, t)
    return out


Coefficients = Callable[[list[Params]], list[Params]]
"""Task gradients g_1…g_n -> the vectors u_1…u_n that multiply H_1…H_n."""


@torch.enable_grad()
def hessian_terms(
    losses: Sequence[Loss], params: Params, coefficients: Coefficients
) -> tuple[Params, list[Params]]:
    """(Σ_k H_k u_k, [g_1, …, g_n]): all the Hessian terms of a formula, in one extra reverse pass.

    ``coefficients(gs)`` maps the task gradients g_k = ∇L_k(θ) to the vectors u_k; then
    Σ_k H_k u_k = ∇_θ Σ_k ⟨∇L_k(θ), sg(u_k)⟩. Every modified field and bracket of this module is
    such a sum with its own u_k. The gradients are returned too (detached).
    """
    leaves, _ = _leaves(params)
    values = [evaluate(f, leaves, f"losses[{i}]") for i, f in enumerate(check_losses(losses))]
    gs = [_grads(v, leaves, create_graph=True) for v in values]
    detached = [_detach(g) for g in gs]
    return _detach(_sum_of_hvps(leaves, gs, coefficients(detached))), detached


@torch.enable_grad()
def lie_bracket(loss_a: Loss, loss_b: Loss, params: Params) -> Params:
    """[∇L_a, ∇L_b](θ) = H_b ∇L_a − H_a ∇L_b.

    Antisymmetric, bilinear, zero for loss_a = loss_b. Computed as
    ∇_θ(⟨∇L_b(θ), sg(∇L_a)⟩ − ⟨∇L_a(θ), sg(∇L_b)⟩): two gradients plus one reverse pass.
    """
    fast = _factored.hessian_terms([loss_a, loss_b], params, [[0.0, -1.0], [1.0, 0.0]])  # scale (issue 11)
    if fast is not None:  # scale (issue 11)
        return check_finite(fast, "the Lie bracket")  # scale (issue 11)
    hv, _ = hessian_terms([loss_a, loss_b], params, lambda gs: [scale(gs[1], -1.0), gs[0]])
    return check_finite(hv, "the Lie bracket")


def alignment(loss_a: Loss, loss_b: Loss, params: Params) -> Tensor:
    """⟨∇L_a, ∇L_b⟩, the gradient alignment (a 0-dim tensor)."""
    return dot(grad(loss_a, params), grad(loss_b, params))


def cosine(loss_a: Loss, loss_b: Loss, params: Params) -> Tensor:
    """⟨∇L_a, ∇L_b⟩ / (‖∇L_a‖ ‖∇L_b‖); raises if a gradient is zero."""
    ga, gb = grad(loss_a, params), grad(loss_b, params)
    na, nb = norm(ga), norm(gb)
    if na == 0 or nb == 0:
        raise ZeroDivisionError(
            "the cosine is undefined: the gradient of loss_"
            + ("a" if na == 0 else "b")
            + " is zero at these params"
        )
    return dot(ga, gb) / (na * nb)


@torch.enable_grad()
def modified_loss(loss: Loss, params: Params, lr: float) -> Tensor:
    """L̃ = L + (h/4)‖∇L‖², the loss that gradient descent with step h follows to O(h³).

    Differentiable in ``params`` when they require grad (e.g. a model's parameters), so it can
    be minimized directly as an explicitly regularized objective.
    """
    h = check_lr(lr)
    leaves, attached = _leaves(params)
    value = evaluate(loss, leaves)
    g = _grads(value, leaves, create_graph=attached)
    out = value + (h / 4) * dot(g, g)
    if not torch.isfinite(out):
        raise FloatingPointError("the modified loss is not finite (the gradient overflowed)")
    return out if attached else out.detach()


@torch.enable_grad()
def multitask_terms(losses: Sequence[Loss], params: Params, lr: float) -> dict[str, Tensor]:
    """The modified loss of one GD step on L = Σ_i L_i, split into its three parts.

    Returns ``loss`` = Σ_i L_i, ``flatness`` = (h/4) Σ_i ‖∇L_i‖²,
    ``conflict`` = (h/2) Σ_{i<j} ⟨∇L_i, ∇L_j⟩ and ``modified`` = their sum, which equals
    ``modified_loss`` of the summed loss, L + (h/4)‖Σ_i ∇L_i‖². Differentiable like
    :func:`modified_loss`.
    """
    h = check_lr(lr)
    losses = check_losses(losses)
    leaves, attached = _leaves(params)
    values = [evaluate(f, leaves, f"losses[{i}]") for i, f in enumerate(losses)]
    gs = [_grads(v, leaves, create_graph=attached) for v in values]
    total = sum(values)
    flatness = (h / 4) * sum(dot(g, g) for g in gs)
    conflict = (h / 2) * sum(
        (dot(gs[i], gs[j]) for i in range(len(gs)) for j in range(i + 1, len(gs))),
        torch.zeros((), dtype=total.dtype, device=total.device),
    )
    terms = {"loss": total, "flatness": flatness, "conflict": conflict}
    terms["modified"] = total + flatness + conflict
    if not all(torch.isfinite(t) for t in terms.values()):
        raise FloatingPointError(f"non-finite multitask terms: { {k: t.item() for k, t in terms.items()} }")
    return terms if attached else {k: t.detach() for k, t in terms.items()}


@torch.enable_grad()
def multitask_field(losses: Sequence[Loss], params: Params, lr: float) -> Params:
    """F = −∇(L + (h/4)‖∇L‖²) = −G − (h/2) H G with L = Σ_i L_i, G = ∇L, H = ∇²L.

    One GD step of size h on the summed loss follows the flow of F for time h to O(h³).
    """
    h = check_lr(lr)
    hv, gs = hessian_terms(losses, params, lambda gs: [scale(_total(gs), -h / 2)] * len(gs))
    return check_finite(add(hv, _total(gs), alpha=-1.0), "the multitask modified field")


def gd_field(loss: Loss, params: Params, lr: float) -> Params:
    """F = −∇L − (h/2) H ∇L = −∇(L + (h/4)‖∇L‖²): the modified field of gradient descent."""
    return multitask_field([loss], params, lr)


@torch.enable_grad()
def sequential_field(losses: Sequence[Loss], params: Params, lr: float) -> Params:
    """The modified field of one GD step per task, in the given order 1, …, n.

    F = −∇(Σ_i L_i + (h/4) Σ_i ‖∇L_i‖²) + (h/2) Σ_{i<j} [∇L_i, ∇L_j]
    (the whole sweep follows its flow for time h, to O(h³)). All the Hessian terms are
    gathered into one reverse pass: the coefficient of H_k is
    u_k = (h/2)(Σ_{i<k} g_i − g_k − Σ_{j>k} g_j) = (h/2)(2 P_k − G), with the prefix sum
    P_k = Σ_{i<k} g_i and the total G = Σ_i g_i.
    """
    h = check_lr(lr)
    losses = check_losses(losses)
    n = len(losses)  # scale (issue 11): u_k = Σ_j C_kj g_j, C_kj = h/2 (j<k), −h/2 (j≥k)
    fast = _factored.hessian_terms(losses, params, _factored.sequential_coefficients(n, h), [-1.0] * n)
    if fast is not None:  # scale (issue 11)
        return check_finite(fast, "the sequential modified field")  # scale (issue 11)

    def coefficients(gs: list[Params]) -> list[Params]:
        total = _total(gs)
        return [add(scale(p, h), total, alpha=-h / 2) for p in _prefix_sums(gs)]

    hv, gs = hessian_terms(losses, params, coefficients)
    return check_finite(add(hv, _total(gs), alpha=-1.0), "the sequential modified field")


@torch.enable_grad()
def order_averaged_field(losses: Sequence[Loss], params: Params, lr: float) -> Params:
    """F̄ = −∇(Σ_i L_i + (h/4) Σ_i ‖∇L_i‖²) = −Σ_i g_i − (h/2) Σ_i H_i g_i.

    The sequential field without its brackets: the mean of :func:`sequential_field` over all
    task orders (random reshuffling), and the multitask field without the conflict term.
    One reverse pass for all the Hessian terms.
    """
    h = check_lr(lr)
    hv, gs = hessian_terms(losses, params, lambda gs: [scale(g, -h / 2) for g in gs])
    return check_finite(add(hv, _total(gs), alpha=-1.0), "the order-averaged field")


@torch.enable_grad()
def bracket_sum(losses: Sequence[Loss], params: Params) -> Params:
    """Σ_{i<j} [∇L_i, ∇L_j] for the tasks in the given order (one reverse pass).

    The coefficient of H_k is Σ_{i<k} g_i − Σ_{j>k} g_j = 2 P_k + g_k − G (prefix sum
    P_k = Σ_{i<k} g_i, total G). A sweep in this order follows
    :func:`order_averaged_field` + (h/2)·bracket_sum (that is, :func:`sequential_field`).
    """
    losses = check_losses(losses)
    if len(losses) < 2:
        raise ValueError("bracket_sum needs at least two losses")
    fast = _factored.hessian_terms(losses, params, _factored.bracket_sum_coefficients(len(losses)))  # scale
    if fast is not None:  # scale (issue 11)
        return check_finite(fast, "the bracket sum")  # scale (issue 11)

    def coefficients(gs: list[Params]) -> list[Params]:
        total = _total(gs)
        return [add(add(g, p, alpha=2.0), total, alpha=-1.0) for p, g in zip(_prefix_sums(gs), gs)]

    hv, _ = hessian_terms(losses, params, coefficients)
    return check_finite(hv, "the bracket sum")
