"""Two-dimensional losses, trajectories and contour pictures for Part I of the book.

Every loss here is an ``ibea_lib`` loss on a tensor ``θ`` of shape ``(2,)`` (any float dtype),
so :func:`ibea_lib.grad`, :func:`ibea_lib.gd_field`, :func:`ibea_lib.flow` apply directly.

* :func:`quadratic_2d`: ½(λ₁θ₁² + λ₂θ₂²), an ill-conditioned bowl.
* :func:`rosenbrock`: (a − θ₁)² + b(θ₂ − θ₁²)², a curved valley.
* :func:`two_parameter_model`: ½(η − θ₁θ₂ξ)² for one data point (ξ, η), the model of Barrett &
  Dherin (2021, Fig. 1); the book writes θ = (x, y): its minima form the hyperbola xy = η/ξ, and
  the sharpness ξ²(x² + y²) of a minimum is smallest where x = y.
* :func:`rosenbrock_hessian`: the closed-form Hessian of :func:`rosenbrock` (independent of autograd).
* :func:`modified_2d`: L + (h/4)‖∇L‖² as a loss that ``torch.func.vmap`` can evaluate on a grid.

Trajectories are tensors of shape ``(n + 1, d)``: :func:`gd_trajectory` (the iterates); a flow
sampled at the times 0, h, …, nh is ``ib.flow_path(field, θ0, n * h, steps=n * s)[::s]`` (RK4 with s
sub-steps per interval). The sharpness of a small problem: ``torch.linalg.eigvalsh(hessian(L, θ))[-1]``
or ``ib.sharpness``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ..autodiff import Loss, grad
from ..pytree import check_lr, check_positive_int
from .saved import gd_field_second_order, global_errors

__all__ = [
    "contour",
    "gd_field_second_order",
    "gd_trajectory",
    "global_errors",
    "grid_values",
    "hessian",
    "hyperbola",
    "max_distance",
    "modified_2d",
    "plot_trajectory",
    "quadratic_2d",
    "rosenbrock",
    "rosenbrock_hessian",
    "two_parameter_model",
    "two_parameter_sharpness",
]


def _check_vector(theta: Tensor, name: str = "theta") -> None:
    if not isinstance(theta, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(theta).__name__}")
    if theta.dim() != 1 or not theta.is_floating_point():
        raise ValueError(
            f"{name} must be a 1-dim floating-point tensor, got shape {tuple(theta.shape)}, "
            f"dtype {theta.dtype}"
        )


def _check_2d(theta: Tensor) -> None:
    _check_vector(theta)
    if theta.shape != (2,):
        raise ValueError(f"this loss takes a tensor of shape (2,), got {tuple(theta.shape)}")


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------- test losses


def quadratic_2d(lam1: float = 1.0, lam2: float = 10.0) -> Loss:
    """L(θ) = ½(λ₁θ₁² + λ₂θ₂²): ∇L = (λ₁θ₁, λ₂θ₂), H = diag(λ₁, λ₂), minimum at 0."""
    l1, l2 = _positive(lam1, "lam1"), _positive(lam2, "lam2")

    def loss(theta: Tensor) -> Tensor:
        _check_2d(theta)
        return 0.5 * (l1 * theta[0] ** 2 + l2 * theta[1] ** 2)

    return loss


def rosenbrock(a: float = 1.0, b: float = 10.0) -> Loss:
    """L(θ) = (a − θ₁)² + b(θ₂ − θ₁²)²: a curved valley, minimum at (a, a²)."""
    a = float(a)
    b = _positive(b, "b")

    def loss(theta: Tensor) -> Tensor:
        _check_2d(theta)
        return (a - theta[0]) ** 2 + b * (theta[1] - theta[0] ** 2) ** 2

    return loss


def rosenbrock_hessian(theta: Tensor, a: float = 1.0, b: float = 10.0) -> Tensor:
    """The Hessian of :func:`rosenbrock` in closed form (the parameter ``a`` does not enter it).

    ∂²L/∂θ₁² = 2 − 4b(θ₂ − θ₁²) + 8bθ₁², ∂²L/∂θ₁∂θ₂ = −4bθ₁, ∂²L/∂θ₂² = 2b.
    """
    _check_2d(theta)
    b = _positive(b, "b")
    t1, t2 = theta[0], theta[1]
    h11 = 2 - 4 * b * (t2 - t1**2) + 8 * b * t1**2
    h12 = -4 * b * t1
    return torch.stack([torch.stack([h11, h12]), torch.stack([h12, 2 * b + 0 * t1])])


def two_parameter_model(xi: float = 1.0, eta: float = 1.0) -> Loss:
    """E(x, y) = ½(η − x·y·ξ)², one data point (ξ, η) fitted by the prediction x·y·ξ.

    The model of Barrett & Dherin (2021, Fig. 1), with the two parameters θ = (x, y) (the book's
    notation, the same as in Part II). Its global minima are the hyperbola x·y = η/ξ; the Hessian
    there is ξ²·(y, x)(y, x)ᵀ, with largest eigenvalue (sharpness) ξ²(x² + y²)
    (see :func:`two_parameter_sharpness`), smallest at the balanced point x = y.
    Gradient flow conserves x² − y²; gradient descent does not.
    """
    xi = _positive(xi, "xi")
    eta = float(eta)

    def loss(theta: Tensor) -> Tensor:
        _check_2d(theta)
        return 0.5 * (eta - theta[0] * theta[1] * xi) ** 2

    return loss


def two_parameter_sharpness(theta: Tensor, xi: float = 1.0) -> Tensor:
    """ξ²(x² + y²): the largest Hessian eigenvalue of :func:`two_parameter_model` at a minimum."""
    _check_2d(theta)
    return _positive(xi, "xi") ** 2 * (theta[0] ** 2 + theta[1] ** 2)


def modified_2d(loss: Loss, lr: float) -> Loss:
    """θ ↦ L(θ) + (h/4)‖∇L(θ)‖², h = ``lr``, written with ``torch.func.grad`` so that it can be
    vmapped (for :func:`contour`); it agrees with :func:`ibea_lib.modified_loss`."""
    h = check_lr(lr)
    grad_fn = torch.func.grad(loss)

    def modified(theta: Tensor) -> Tensor:
        return loss(theta) + (h / 4) * (grad_fn(theta) ** 2).sum()

    return modified


# ---------------------------------------------------------------------------- derivatives


def hessian(loss: Loss, theta: Tensor) -> Tensor:
    """The d×d Hessian ∇²L(θ) of a loss on a 1-dim tensor (small d only)."""
    _check_vector(theta)
    return torch.autograd.functional.hessian(loss, theta.detach())


# gd_field_second_order is written and derived in chapter 02 (book/02_backward_error_analysis.ipynb)
# and collected into ibea_lib.book.saved; it is re-exported here.


# ---------------------------------------------------------------------------- trajectories


def gd_trajectory(loss: Loss, theta0: Tensor, lr: float, steps: int) -> Tensor:
    """The iterates θ_0, …, θ_n of θ_{k+1} = θ_k − h∇L(θ_k), as a tensor (n + 1, d)."""
    _check_vector(theta0, "theta0")
    h = check_lr(lr)
    steps = check_positive_int(steps, "steps")
    out = [theta0.detach().clone()]
    for _ in range(steps):
        out.append(out[-1] - h * grad(loss, out[-1]))
        if not bool(torch.isfinite(out[-1]).all()):
            raise FloatingPointError(f"gradient descent diverged at step {len(out) - 1} (lower lr={h})")
    return torch.stack(out)


def max_distance(a: Tensor, b: Tensor) -> Tensor:
    """max_k ‖a_k − b_k‖ between two trajectories of the same shape (n + 1, d), a 0-dim tensor."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"trajectories must have the same shape (n + 1, d), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return (a - b).norm(dim=1).max()


# global_errors is written in chapter 01 (book/01_gd_is_euler.ipynb), re-exported from ibea_lib.book.saved.


# ---------------------------------------------------------------------------- pictures


def grid_values(loss: Loss, xlim: tuple[float, float], ylim: tuple[float, float], n: int = 120):
    """(X, Y, Z) on an n×n grid, Z[i, j] = L((X[i, j], Y[i, j])) (float64)."""
    n = check_positive_int(n, "n")
    xs = torch.linspace(*xlim, n, dtype=torch.float64)
    ys = torch.linspace(*ylim, n, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([X.reshape(-1), Y.reshape(-1)], dim=1)
    with torch.no_grad():
        try:
            Z = torch.func.vmap(loss)(points)
        except Exception:  # a loss that vmap cannot trace: evaluate point by point
            Z = torch.stack([loss(p) for p in points])
    Z = Z.reshape(X.shape)
    return X.numpy(), Y.numpy(), Z.numpy()


def contour(
    loss: Loss,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    ax: plt.Axes | None = None,
    *,
    levels: int = 20,
    log: bool = True,
    n: int = 120,
) -> plt.Axes:
    """Filled contour plot of a 2-D loss (log-spaced levels by default); returns the axes."""
    import numpy as np

    if ax is None:
        _, ax = plt.subplots()
    X, Y, Z = grid_values(loss, xlim, ylim, n)
    if log:
        lo = max(float(Z.min()), 1e-6 * float(Z.max()), 1e-12)
        lv = np.geomspace(lo, float(Z.max()), levels)
        ax.contourf(
            X,
            Y,
            np.maximum(Z, lo),
            levels=lv,
            cmap="Greys_r",
            alpha=0.35,
            norm=plt.matplotlib.colors.LogNorm(),
        )
        ax.contour(X, Y, np.maximum(Z, lo), levels=lv, colors="k", linewidths=0.3, alpha=0.4)
    else:
        ax.contourf(X, Y, Z, levels=levels, cmap="Greys_r", alpha=0.35)
        ax.contour(X, Y, Z, levels=levels, colors="k", linewidths=0.3, alpha=0.4)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel(r"$\theta_1$")
    ax.set_ylabel(r"$\theta_2$")
    ax.grid(False)
    return ax


def plot_trajectory(
    ax: plt.Axes, trajectory: Tensor, label: str, color: str, *, marker: str | None = None, **kwargs
) -> None:
    """Draw a trajectory (n + 1, 2) on ``ax``: a line, optional markers, a dot at the start."""
    if trajectory.dim() != 2 or trajectory.shape[1] != 2:
        raise ValueError(f"trajectory must have shape (n + 1, 2), got {tuple(trajectory.shape)}")
    t = trajectory.detach().cpu().numpy()
    ax.plot(t[:, 0], t[:, 1], color=color, marker=marker, markersize=3.5, label=label, **kwargs)
    ax.plot(t[0, 0], t[0, 1], "o", color="k", markersize=5)


def hyperbola(ax: plt.Axes, c: float, xlim: tuple[float, float], **kwargs) -> None:
    """Draw the curve θ₁θ₂ = c (c > 0) for θ₁ in xlim ∩ (0, ∞): the minima of the two-parameter model."""
    import numpy as np

    lo = max(xlim[0], 1e-3)
    a = np.linspace(lo, xlim[1], 400)
    kwargs = {"color": "k", "linestyle": ":", "linewidth": 1.2, **kwargs}
    ax.plot(a, c / a, **kwargs)
