"""Discrete updates, a reference ODE solver, and order-of-accuracy measurements.

Backward error analysis is checked numerically by comparing one discrete update (a GD step,
one step per task in turn) with the exact flow of a candidate vector field over the same
time h. The exact flow is approximated by :func:`flow`, classical Runge-Kutta (RK4) with
many small sub-steps, whose own error is O((h/steps)^4) and negligible at float64.
If the local error shrinks like h^(p+1), the field is the right one up to order p.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .autodiff import Loss, check_finite, check_losses, grad
from .pytree import Params, add, check_lr, check_params, check_positive_int, clone, norm, sub

Field = Callable[[Params], Params]
"""A vector field θ ↦ F(θ), with the structure of θ."""


def gd_step(loss: Loss, params: Params, lr: float) -> Params:
    """θ⁺ = θ − h ∇L(θ) (a new pytree; ``params`` is not modified)."""
    h = check_lr(lr)
    return add(params, grad(loss, params), alpha=-h)


def sequential_steps(losses: Sequence[Loss], params: Params, lr: float) -> Params:
    """One GD step per task in the given order: θ_i = θ_{i-1} − h ∇L_i(θ_{i-1})."""
    h = check_lr(lr)
    theta = params
    for loss in check_losses(losses):
        theta = gd_step(loss, theta, h)
    return theta


def flow(field: Field, params: Params, t: float, steps: int = 100) -> Params:
    """θ(t) for θ' = F(θ), θ(0) = params, by RK4 with ``steps`` equal sub-steps."""
    check_params(params)
    check_positive_int(steps, "steps")
    if not math.isfinite(float(t)):
        raise ValueError(f"t must be finite, got {t}")
    dt = float(t) / steps
    theta = clone(params)
    for _ in range(steps):
        k1 = field(theta)
        k2 = field(add(theta, k1, alpha=dt / 2))
        k3 = field(add(theta, k2, alpha=dt / 2))
        k4 = field(add(theta, k3, alpha=dt))
        theta = add(theta, k1, alpha=dt / 6)
        theta = add(theta, k2, alpha=dt / 3)
        theta = add(theta, k3, alpha=dt / 3)
        theta = add(theta, k4, alpha=dt / 6)
    return check_finite(theta, "the flow")


def local_errors(
    update: Callable[[Params, float], Params],
    field: Callable[[Params, float], Params],
    params: Params,
    lrs: Sequence[float],
    steps: int = 64,
) -> list[float]:
    """‖update(θ, h) − flow(F_h, θ, h)‖ for each h in ``lrs``.

    ``update(params, h)`` is one discrete update; ``field(params, h)`` the candidate modified
    field at learning rate h (pass ``lambda p, h: -grad(loss, p)`` for the plain flow).
    """
    errors = []
    for h in lrs:
        h = check_lr(h, "every entry of lrs")
        reference = flow(lambda p, h=h: field(p, h), params, h, steps)
        errors.append(float(norm(sub(update(params, h), reference)).detach()))
    return errors


def fit_order(lrs: Sequence[float], errors: Sequence[float]) -> float:
    """Slope of the least-squares line through (log h, log error): the observed order.

    A local error O(h^k) gives a slope ≈ k.
    """
    if len(lrs) != len(errors) or len(lrs) < 2:
        raise ValueError("fit_order needs two equally long sequences with at least 2 entries")
    if min(errors) <= 0 or min(lrs) <= 0:
        raise ValueError("fit_order needs positive learning rates and errors (a zero error has no log)")
    x = torch.log(torch.tensor(lrs, dtype=torch.float64))
    y = torch.log(torch.tensor(errors, dtype=torch.float64))
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def geometric_lrs(largest: float, count: int = 5, ratio: float = 0.5) -> list[float]:
    """``count`` learning rates ``largest, largest·ratio, …`` for order-of-accuracy fits."""
    return [largest * ratio**i for i in range(count)]


def order_gap(loss_a: Loss, loss_b: Loss, params: Params, lr: float) -> Params:
    """θ_AB − θ_BA: one step on A then one on B, minus B then A. Equals h²[∇L_A, ∇L_B] + O(h³)."""
    h = check_lr(lr)
    return sub(sequential_steps([loss_a, loss_b], params, h), sequential_steps([loss_b, loss_a], params, h))
