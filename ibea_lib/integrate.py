"""Discrete updates, a reference ODE solver, and order-of-accuracy measurements.

Backward error analysis is checked numerically by comparing one discrete update (a GD step,
one step per task in turn) with the exact flow of a candidate vector field over the same
time h. The exact flow is approximated by :func:`flow`, classical Runge-Kutta (RK4) with
many small sub-steps, whose own error is O((h/steps)^4) and negligible at float64.
If the local error shrinks like h^(p+1), the field is the right one up to order p.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .autodiff import Loss, check_finite, check_losses, grad
from .pytree import (
    Params,
    add,
    check_lr,
    check_params,
    check_positive_int,
    clone,
    norm,
    rebuild,
    sub,
    tensors,
)

Field = Callable[[Params], Params]
"""A vector field θ ↦ F(θ), with the structure of θ."""


def gd_step(loss: Loss, params: Params, lr: float) -> Params:
    """θ⁺ = θ − h ∇L(θ) (a new pytree; ``params`` is not modified)."""
    h = check_lr(lr)
    return add(params, grad(loss, params), alpha=-h)


def sequential_steps(
    losses: Sequence[Loss], params: Params, lr: float, *, order: Sequence[int] | None = None
) -> Params:
    """One GD step per task: θ_k = θ_{k-1} − h ∇L_{σ(k)}(θ_{k-1}), for σ = ``order``.

    ``order`` lists the task indices in the order the steps are taken (default 0, 1, …, n−1;
    an index may repeat or be left out). The one primitive for "one step per task": an SGD
    epoch is ``sequential_steps(batch_losses, θ, h, order=perm)``, order-dependence is
    ``sequential_steps([La, Lb], …)`` vs ``sequential_steps([Lb, La], …)``.
    """
    h = check_lr(lr)
    losses = check_losses(losses)
    if order is not None:
        order = [_check_index(i, len(losses)) for i in order]
        losses = [losses[i] for i in order]
    theta = params
    for loss in losses:
        theta = add(theta, grad(loss, theta), alpha=-h)
    return theta


def _check_index(i: object, n: int) -> int:
    if isinstance(i, Tensor) and i.numel() == 1:
        i = i.item()
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
        raise ValueError(f"order must hold task indices in 0..{n - 1}, got {i!r}")
    return i


def _rk4_states(field: Field, params: Params, t: float, steps: int) -> Iterator[Params]:
    """θ(0), θ(t/steps), …, θ(t) for θ' = F(θ), by classical Runge-Kutta."""
    check_params(params)
    check_positive_int(steps, "steps")
    if isinstance(t, Tensor):
        t = t.item()
    if not math.isfinite(float(t)):
        raise ValueError(f"t must be finite, got {t}")
    dt = float(t) / steps
    theta = clone(params)
    yield theta
    for _ in range(steps):
        k1 = field(theta)
        k2 = field(add(theta, k1, alpha=dt / 2))
        k3 = field(add(theta, k2, alpha=dt / 2))
        k4 = field(add(theta, k3, alpha=dt))
        theta = add(theta, k1, alpha=dt / 6)
        theta = add(theta, k2, alpha=dt / 3)
        theta = add(theta, k3, alpha=dt / 3)
        theta = add(theta, k4, alpha=dt / 6)
        yield theta


def flow(field: Field, params: Params, t: float, *, steps: int = 100) -> Params:
    """θ(t) for θ' = F(θ), θ(0) = params, by RK4 with ``steps`` equal sub-steps."""
    for state in _rk4_states(field, params, t, steps):
        theta = state
    return check_finite(theta, "the flow")


def flow_path(field: Field, params: Params, t: float, *, steps: int = 100) -> Params:
    """The ``steps + 1`` states θ(k·t/steps), k = 0…steps, of :func:`flow`, stacked.

    The result has the structure of ``params`` with a leading time axis: a tensor of shape
    ``(steps + 1, *params.shape)``, or a dict of such tensors. ``path[0]`` is ``params``,
    ``path[-1]`` is ``flow(field, params, t, steps=steps)``.
    """
    states = list(_rk4_states(field, params, t, steps))
    path = rebuild(states[0], [torch.stack(column) for column in zip(*(tensors(s) for s in states))])
    return check_finite(path, "the flow")


def local_errors(
    update: Callable[[Params, float], Params],
    field: Callable[[Params, float], Params],
    params: Params,
    lrs: Sequence[float],
    *,
    steps: int = 64,
) -> Tensor:
    """‖update(θ, h) − flow(F_h, θ, h)‖ for each h in ``lrs``, as a 1-D tensor.

    ``update(params, h)`` is one discrete update; ``field(params, h)`` the candidate modified
    field at learning rate h (pass ``lambda p, h: -grad(loss, p)`` for the plain flow).
    """
    errors = []
    for h in lrs:
        h = check_lr(h, "every entry of lrs")
        reference = flow(lambda p, h=h: field(p, h), params, h, steps=steps)
        errors.append(norm(sub(update(params, h), reference)).detach())
    if not errors:
        raise ValueError("lrs is empty; give at least one learning rate")
    return torch.stack(errors)


def _numbers(values: Sequence[float] | Tensor, name: str) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().to("cpu", torch.float64).reshape(-1)
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def fit_order(lrs: Sequence[float] | Tensor, errors: Sequence[float] | Tensor) -> Tensor:
    """Slope of the least-squares line through (log h, log error): the observed order (0-dim tensor).

    A local error O(h^k) gives a slope ≈ k. ``lrs`` and ``errors`` may be sequences of numbers
    or 1-D tensors (for instance the result of :func:`local_errors`).
    """
    x, y = _numbers(lrs, "lrs"), _numbers(errors, "errors")
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("fit_order needs two equally long sequences with at least 2 entries")
    if bool((y <= 0).any()) or bool((x <= 0).any()):
        raise ValueError("fit_order needs positive learning rates and errors (a zero error has no log)")
    x, y = torch.log(x), torch.log(y)
    xc = x - x.mean()
    return (xc * (y - y.mean())).sum() / (xc * xc).sum()


def geometric_lrs(largest: float, count: int = 5, ratio: float = 0.5) -> Tensor:
    """``count`` learning rates ``largest, largest·ratio, …`` (a 1-D float64 tensor) for order fits."""
    largest = check_lr(largest, "largest")
    check_positive_int(count, "count")
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio!r}")
    return largest * ratio ** torch.arange(count, dtype=torch.float64)


def order_gap(loss_a: Loss, loss_b: Loss, params: Params, lr: float) -> Params:
    """θ_AB − θ_BA: one step on A then one on B, minus B then A. Equals h²[∇L_A, ∇L_B] + O(h³)."""
    h = check_lr(lr)
    return sub(sequential_steps([loss_a, loss_b], params, h), sequential_steps([loss_b, loss_a], params, h))
