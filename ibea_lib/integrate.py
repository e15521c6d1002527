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
from .pytree import Params, axpy, check_lr, check_params, check_positive_int, clone, norm, sub

Field = Callable[[Params], Params]
"""A vector field θ ↦ F(θ), with the structure of θ."""


def gd_step(loss: Loss, params: Params, lr: float) -> Params:
    """θ⁺ = θ − h ∇L(θ) (a new pytree; ``params`` is not modified)."""
    h = check_lr(lr)
    return axpy(-h, grad(loss, params), params)


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
        k2 = field(axpy(dt / 2, k1, theta))
        k3 = field(axpy(dt / 2, k2, theta))
        k4 = field(axpy(dt, k3, theta))
        theta = axpy(dt / 6, k1, theta)
        theta = axpy(dt / 3, k2, theta)
        theta = axpy(dt / 3, k3, theta)
        theta = axpy(dt / 6, k4, theta)
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
