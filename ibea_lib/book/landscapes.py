"""Two-dimensional losses, trajectories and contour pictures for Part I of the book.

Every loss here is an ``ibea_lib`` loss on a tensor ``θ`` of shape ``(2,)`` (any float dtype),
so :func:`ibea_lib.grad`, :func:`ibea_lib.gd_field`, :func:`ibea_lib.flow` apply directly.

* :func:`quadratic_2d`: ½(λ₁θ₁² + λ₂θ₂²), an ill-conditioned bowl.
* :func:`rosenbrock`: (a − θ₁)² + b(θ₂ − θ₁²)², a curved valley.
* :func:`two_parameter_model`: ½(y − θ₁θ₂x)², the model of Barrett & Dherin (2021, Fig. 1):
  its minima form the hyperbola θ₁θ₂ = y/x, and the sharpness x²(θ₁² + θ₂²) of a minimum is
  smallest where θ₁ = θ₂.

Trajectories are tensors of shape ``(n + 1, d)``: :func:`gd_trajectory` (the iterates) and
:func:`flow_trajectory` (a flow sampled at equally spaced times, by :func:`ibea_lib.flow`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ..autodiff import Loss, grad
from ..integrate import flow
from ..pytree import check_lr, check_positive_int

Field = Callable[[Tensor], Tensor]


def _check_vector(theta: Tensor, name: str = "theta") -> None:
    if not isinstance(theta, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(theta).__name__}")
    if theta.dim() != 1 or not theta.is_floating_point():
        raise ValueError(f"{name} must be a 1-dim floating-point tensor, got shape {tuple(theta.shape)}, "
                         f"dtype {theta.dtype}")


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


def two_parameter_model(x: float = 1.0, y: float = 1.0) -> Loss:
    """E(a, b) = ½(y − a·b·x)², one data point (x, y) fitted by the prediction a·b·x.

    The model of Barrett & Dherin (2021, Fig. 1). Its global minima are the hyperbola
    a·b = y/x; the Hessian there is x²·(b, a)(b, a)ᵀ, with largest eigenvalue (sharpness)
    x²(a² + b²) (see :func:`two_parameter_sharpness`), smallest at the balanced point a = b.
    Gradient flow conserves a² − b²; gradient descent does not.
    """
    x = _positive(x, "x")
    y = float(y)

    def loss(theta: Tensor) -> Tensor:
        _check_2d(theta)
        return 0.5 * (y - theta[0] * theta[1] * x) ** 2

    return loss


def two_parameter_sharpness(theta: Tensor, x: float = 1.0) -> Tensor:
    """x²(a² + b²): the largest Hessian eigenvalue of :func:`two_parameter_model` at a minimum."""
    _check_2d(theta)
    return _positive(x, "x") ** 2 * (theta[0] ** 2 + theta[1] ** 2)


# ---------------------------------------------------------------------------- derivatives


def hessian(loss: Loss, theta: Tensor) -> Tensor:
    """The d×d Hessian ∇²L(θ) of a loss on a 1-dim tensor (small d only)."""
    _check_vector(theta)
    return torch.autograd.functional.hessian(loss, theta.detach())


def sharpness(loss: Loss, theta: Tensor) -> Tensor:
    """The largest eigenvalue of ∇²L(θ) (small d only)."""
    return torch.linalg.eigvalsh(hessian(loss, theta))[-1]


def gd_field_second_order(loss: Loss, theta: Tensor, lr: float) -> Tensor:
    """The GD modified field to second order in h, for a loss on a 1-dim tensor θ.

    F = −g − (h/2) H g + h² (−⅓ H² g − (1/12) T[g, g]), with g = ∇L, H = ∇²L and
    T[g, g] = ∇_θ(gᵀ ∇²L(θ) g) at fixed g (the third derivative applied twice). One GD step
    follows the flow of F over time h to O(h⁴) per step (FORMULAS §1).
    """
    _check_vector(theta)
    h = check_lr(lr)
    p = theta.detach().requires_grad_(True)
    g = torch.autograd.grad(loss(p), p, create_graph=True)[0]
    g0 = g.detach()
    hg = torch.autograd.grad(g @ g0, p, create_graph=True)[0]  # H g, still a function of θ
    hg0 = hg.detach()
    t_gg = torch.autograd.grad(hg @ g0, p, retain_graph=True)[0]  # ∇(gᵀ H(θ) g) = T[g, g]
    h2g = torch.autograd.grad(g @ hg0, p)[0]  # H (H g)
    return -g0 - (h / 2) * hg0 + h**2 * (-h2g / 3 - t_gg / 12)


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


def flow_trajectory(field: Field, theta0: Tensor, dt: float, points: int, substeps: int = 10) -> Tensor:
    """θ(0), θ(dt), …, θ(points·dt) of θ' = F(θ), as a tensor (points + 1, d).

    Each interval of length dt is integrated by RK4 with ``substeps`` sub-steps
    (:func:`ibea_lib.flow`). Use ``field = lambda p: -ib.grad(L, p)`` for the gradient flow and
    ``lambda p: ib.gd_field(L, p, h)`` for the modified flow of GD with step h.
    """
    _check_vector(theta0, "theta0")
    dt = _positive(dt, "dt")
    points = check_positive_int(points, "points")
    out = [theta0.detach().clone()]
    for _ in range(points):
        out.append(flow(field, out[-1], dt, steps=substeps))
    return torch.stack(out)


def max_distance(a: Tensor, b: Tensor) -> float:
    """max_k ‖a_k − b_k‖ between two trajectories of the same shape (n + 1, d)."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"trajectories must have the same shape (n + 1, d), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return float((a - b).norm(dim=1).max())


def global_errors(
    loss: Loss, theta0: Tensor, lrs: Sequence[float], t_end: float, substeps: int = 20
) -> list[float]:
    """‖θ_n − θ(t_end)‖ for each h in ``lrs``, with n = t_end / h GD steps (must be an integer).

    θ(t) is the gradient flow from θ0, sampled at the same times by RK4 (``substeps`` per step).
    """
    errors = []
    for h in lrs:
        h = check_lr(h, "every entry of lrs")
        n = round(t_end / h)
        if n < 1 or abs(n * h - t_end) > 1e-9 * max(1.0, t_end):
            raise ValueError(f"t_end / h must be a positive integer; got t_end={t_end}, h={h}")
        gd = gd_trajectory(loss, theta0, h, n)[-1]
        exact = flow(lambda p: -grad(loss, p), theta0, t_end, steps=n * substeps)
        errors.append(float((gd - exact).norm()))
    return errors


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
        ax.contourf(X, Y, np.maximum(Z, lo), levels=lv, cmap="Greys_r", alpha=0.35,
                    norm=plt.matplotlib.colors.LogNorm())
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
