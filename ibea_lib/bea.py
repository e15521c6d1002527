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

from . import factored
from .autodiff import Loss, check_finite, check_losses, detach, gradient_terms, hessian_terms
from .pytree import Params, add, check_lr, check_params, dot, scale, sum_trees, zeros_like


def _prefix_sums(gs: list[Params]) -> list[Params]:
    """P_k = Σ_{i<k} g_i for k = 1, …, n−1 (P_0 = 0 is left out: no zeros are formed)."""
    out, prefix = [], gs[0]
    for k in range(1, len(gs)):
        out.append(prefix)
        if k + 1 < len(gs):
            prefix = add(prefix, gs[k])
    return out


def _field(
    losses: Sequence[Loss],
    params: Params,
    coefficients: Callable[[list[Params], Params], list[Params]],
    what: str,
) -> Params:
    """−G + Σ_k H_k u_k with u = coefficients(gs, G) and G = Σ_k g_k (formed once): every modified field."""
    total: list[Params] = []

    def with_total(gs: list[Params]) -> list[Params]:
        total.append(sum_trees(gs))
        return coefficients(gs, total[0])

    hv, _ = hessian_terms(losses, params, with_total)
    return check_finite(add(hv, total[0], alpha=-1.0), what)


def lie_bracket(loss_a: Loss, loss_b: Loss, params: Params) -> Params:
    """[∇L_a, ∇L_b](θ) = H_b ∇L_a − H_a ∇L_b.

    Antisymmetric, bilinear, zero for loss_a = loss_b. Computed as
    ∇_θ(⟨∇L_b(θ), sg(∇L_a)⟩ − ⟨∇L_a(θ), sg(∇L_b)⟩): two gradients plus one reverse pass. The two
    halves are summed inside one backward pass, so for equal but distinct loss objects the result
    is zero to round-off; for the same object (``lie_bracket(L, L, θ)``) it is exactly zero.
    """
    if loss_a is not loss_b:  # the Gram-matrix path for MLPs, when it applies and is cheaper
        fast = factored.hessian_terms([loss_a, loss_b], params, [[0.0, -1.0], [1.0, 0.0]])
        if fast is not None:
            return check_finite(fast, "the Lie bracket")
    hv, _ = hessian_terms([loss_a, loss_b], params, lambda gs: [(-1.0, gs[1]), gs[0]])
    if loss_a is loss_b:  # [X, X] = 0 exactly (the computation above checked the inputs)
        return zeros_like(hv)
    return check_finite(hv, "the Lie bracket")


def alignment(loss_a: Loss, loss_b: Loss, params: Params) -> Tensor:
    """⟨∇L_a, ∇L_b⟩, the gradient alignment (a detached 0-dim tensor)."""
    check_params(params)
    return gradient_terms([loss_a, loss_b], detach(params), lambda v, g: dot(g[0], g[1]))


def cosine(loss_a: Loss, loss_b: Loss, params: Params) -> Tensor:
    """⟨∇L_a, ∇L_b⟩ / (‖∇L_a‖ ‖∇L_b‖) (a detached 0-dim tensor); NaN when a gradient is zero.

    A zero gradient has no direction, so the cosine is 0/0 = NaN (as in IEEE arithmetic, and as
    in the book's task metrics); test it with ``torch.isnan``.
    """
    check_params(params)
    t = gradient_terms(
        [loss_a, loss_b],
        detach(params),
        lambda v, g: {"ab": dot(g[0], g[1]), "aa": dot(g[0], g[0]), "bb": dot(g[1], g[1])},
    )
    return t["ab"] / torch.sqrt(t["aa"] * t["bb"])


def modified_loss(loss: Loss, params: Params, lr: float) -> Tensor:
    """L̃ = L + (h/4)‖∇L‖², the loss that gradient descent with step h = ``lr`` follows to O(h³).

    ``lr`` is the h of the formula: the step of the plain gradient-descent update whose implicit
    bias is modeled (or, used as an explicit regularizer, its strength), *not* the learning rate
    of the optimizer you train with (Adam's ``lr``, say); the two are independent. Differentiable
    in ``params`` when they require grad (e.g. ``dict(model.named_parameters())``), so it can be
    minimized directly as an explicitly regularized objective:
    ``ib.modified_loss(loss, dict(model.named_parameters()), lr=h).backward()``. The penalty alone
    is :func:`implicit_penalty`. BatchNorm running statistics are not updated by such a loop
    (see :func:`ibea_lib.update_buffers`).
    """
    h = check_lr(lr)
    return gradient_terms([loss], params, lambda v, g: v[0] + (h / 4) * dot(g[0], g[0]))


def implicit_penalty(loss: Loss | Sequence[Loss], params: Params, lr: float) -> Tensor:
    """The implicit penalty alone: what gradient descent with step h adds to the loss.

    For one loss, (h/4)‖∇L‖²; for a sequence of task losses trained together by one step on
    their sum, (h/4)‖Σ_i ∇L_i‖² = (h/4) Σ_i ‖∇L_i‖² + (h/2) Σ_{i<j} ⟨∇L_i, ∇L_j⟩ (flatness plus
    conflict; the conflict term alone is :func:`conflict_term`). ``lr`` is the h of the formula
    (the step of the plain GD update modeled, or the strength of the explicit regularizer), not the
    learning rate of the optimizer that trains with it. Differentiable like :func:`modified_loss`,
    so a ``torch.optim`` loop can add it to any objective::

        params = dict(model.named_parameters())
        objective = loss(params) + ib.implicit_penalty(loss, params, lr=h)   # h ≠ Adam's lr
        opt.zero_grad(); objective.backward(); opt.step()
    """
    h = check_lr(lr)
    if callable(loss):
        return gradient_terms([loss], params, lambda v, g: (h / 4) * dot(g[0], g[0]))
    losses = check_losses(loss)

    def combine(values: list[Tensor], gs: list[Params]) -> Tensor:
        total = gs[0] if len(gs) == 1 else sum_trees(gs)
        return (h / 4) * dot(total, total)

    return gradient_terms(losses, params, combine)


def conflict_term(losses: Sequence[Loss], params: Params, lr: float) -> Tensor:
    """(h/2) Σ_{i<j} ⟨∇L_i, ∇L_j⟩: the conflict term of one GD step of size h on Σ_i L_i.

    The part of :func:`implicit_penalty` that couples the tasks (Part II of the book); ``lr`` is
    the h of the formula. Differentiable like :func:`modified_loss`.
    """
    h = check_lr(lr)
    losses = check_losses(losses)
    if len(losses) < 2:
        raise ValueError(f"the conflict term needs at least two task losses, got {len(losses)}")

    def combine(values: list[Tensor], gs: list[Params]) -> Tensor:
        return (h / 2) * sum(dot(gs[i], gs[j]) for i in range(len(gs)) for j in range(i + 1, len(gs)))

    return gradient_terms(losses, params, combine)


def multitask_terms(losses: Sequence[Loss], params: Params, lr: float) -> dict[str, Tensor]:
    """The modified loss of one GD step on L = Σ_i L_i, split into its three parts.

    Returns ``loss`` = Σ_i L_i, ``flatness`` = (h/4) Σ_i ‖∇L_i‖²,
    ``conflict`` = (h/2) Σ_{i<j} ⟨∇L_i, ∇L_j⟩ and ``modified`` = their sum, which equals
    ``modified_loss`` of the summed loss, L + (h/4)‖Σ_i ∇L_i‖². Differentiable like
    :func:`modified_loss`; ``lr`` is the h of the formula (not an optimizer's learning rate). The
    penalty alone (flatness + conflict) is :func:`implicit_penalty`, the conflict term alone
    :func:`conflict_term`.
    """
    h = check_lr(lr)

    def combine(values: list[Tensor], gs: list[Params]) -> dict[str, Tensor]:
        total = sum(values)
        conflict = sum(
            (dot(gs[i], gs[j]) for i in range(len(gs)) for j in range(i + 1, len(gs))),
            torch.zeros_like(total),
        )
        terms = {
            "loss": total,
            "flatness": (h / 4) * sum(dot(g, g) for g in gs),
            "conflict": (h / 2) * conflict,
        }
        terms["modified"] = terms["loss"] + terms["flatness"] + terms["conflict"]
        return terms

    return gradient_terms(losses, params, combine)


def multitask_field(losses: Sequence[Loss], params: Params, lr: float) -> Params:
    """F = −∇(L + (h/4)‖∇L‖²) = −G − (h/2) H G with L = Σ_i L_i, G = ∇L, H = ∇²L.

    One GD step of size h on the summed loss follows the flow of F for time h to O(h³).
    """
    h = check_lr(lr)
    return _field(losses, params, lambda gs, G: [(-h / 2, G)] * len(gs), "the multitask modified field")


def gd_field(loss: Loss, params: Params, lr: float) -> Params:
    """F = −∇L − (h/2) H ∇L = −∇(L + (h/4)‖∇L‖²): the modified field of gradient descent."""
    return multitask_field([loss], params, lr)


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
    n = len(losses)  # the Gram-matrix path: u_k = Σ_j C_kj g_j, C_kj = h/2 (j < k), −h/2 (j ≥ k)
    fast = factored.hessian_terms(losses, params, factored.sequential_coefficients(n, h), [-1.0] * n)
    if fast is not None:
        return check_finite(fast, "the sequential modified field")

    def coefficients(gs: list[Params], G: Params) -> list[Params]:
        # u_k = (h/2)(2 P_k − G) = −(h/2)(G − 2 P_k); u_0 = −(h/2) G
        return [(-h / 2, G), *((-h / 2, add(G, p, alpha=-2.0)) for p in _prefix_sums(gs))]

    return _field(losses, params, coefficients, "the sequential modified field")


def order_averaged_field(losses: Sequence[Loss], params: Params, lr: float) -> Params:
    """F̄ = −∇(Σ_i L_i + (h/4) Σ_i ‖∇L_i‖²) = −Σ_i g_i − (h/2) Σ_i H_i g_i.

    The sequential field without its brackets: the mean of :func:`sequential_field` over all
    task orders (random reshuffling), and the multitask field without the conflict term.
    One reverse pass for all the Hessian terms.
    """
    h = check_lr(lr)
    return _field(losses, params, lambda gs, G: [(-h / 2, g) for g in gs], "the order-averaged field")


def bracket_sum(losses: Sequence[Loss], params: Params) -> Params:
    """Σ_{i<j} [∇L_i, ∇L_j] for the tasks in the given order (one reverse pass).

    The coefficient of H_k is Σ_{i<k} g_i − Σ_{j>k} g_j = 2 P_k + g_k − G (prefix sum
    P_k = Σ_{i<k} g_i, total G). A sweep in this order follows
    :func:`order_averaged_field` + (h/2)·bracket_sum (that is, :func:`sequential_field`).
    """
    losses = check_losses(losses)
    if len(losses) < 2:
        raise ValueError("bracket_sum needs at least two losses")
    fast = factored.hessian_terms(losses, params, factored.bracket_sum_coefficients(len(losses)))
    if fast is not None:  # the Gram-matrix path for MLPs
        return check_finite(fast, "the bracket sum")

    def coefficients(gs: list[Params]) -> list[Params]:
        minus = scale(sum_trees(gs), -1.0)
        bases = [add(minus, g) for g in gs]  # u_k = (g_k − G) + 2 P_k
        return [bases[0], *(add(b, p, alpha=2.0) for b, p in zip(bases[1:], _prefix_sums(gs)))]

    hv, _ = hessian_terms(losses, params, coefficients)
    return check_finite(hv, "the bracket sum")
