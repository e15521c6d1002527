"""Continual learning through Lie brackets: order gaps, flows of vector fields, task shifts.

Conventions are those of FORMULAS.md: the Lie bracket of two vector fields is
[X, Y] = DY·X − DX·Y, so for gradient fields [∇L_a, ∇L_b] = H_b ∇L_a − H_a ∇L_b, and

* flowing along X for time s and then along Y, versus Y then X, ends at points that differ by
  s²[X, Y] + O(s³) (:func:`parallelogram`);
* one GD step on task A then one on task B, versus B then A, ends at points that differ by
  θ_AB − θ_BA = h²[∇L_A, ∇L_B] + O(h³) (:func:`order_gap`);
* averaging the sequential modified field over all task orders removes every bracket and
  leaves −∇(Σ_i L_i + (h/4) Σ_i ‖∇L_i‖²) (:func:`order_averaged_field`);
* after one step of task B from θ, task A's loss changes by
  −h⟨g_A, g_B⟩ + (h²/2) g_Bᵀ H_A g_B + O(h³), and g_Bᵀ H_A g_B = ⟨g_B, H_B g_A⟩ − ⟨g_B, [g_A, g_B]⟩,
  so at a minimum of task A (g_A = 0) the first forgetting is −(h²/2)⟨g_B, [g_A, g_B]⟩
  (:func:`ibea_lib.book.forgetting.forgetting_terms`; the forgetting helpers live in
  :mod:`ibea_lib.book.forgetting`, the correlations in :mod:`ibea_lib.book.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..autodiff import Loss, check_losses
from ..bea import bracket_sum, lie_bracket, order_averaged_field, sequential_field  # noqa: F401 (re-exported)
from ..pytree import Params, check_positive_int, scale, sub
from . import saved

VectorField = Callable[[Tensor], Tensor]
"""A vector field x ↦ X(x) on R^d (a single tensor of shape (d,))."""


def _check_point(x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 1 or not x.is_floating_point():
        raise ValueError(f"{name} must be a 1-D floating-point tensor, got shape {tuple(x.shape)}, {x.dtype}")
    return x


# --------------------------------------------------------------------------- vector fields


def field_jacobian(field: VectorField, x: Tensor) -> Tensor:
    """DX(x), the d×d Jacobian matrix (row i = ∇X_i), by autograd."""
    _check_point(x)
    return torch.autograd.functional.jacobian(field, x.detach())


def field_bracket(X: VectorField, Y: VectorField, x: Tensor) -> Tensor:
    """[X, Y](x) = DY(x)·X(x) − DX(x)·Y(x), with two Jacobian-vector products (torch.func.jvp).

    Written in chapter 06 (``ibea_lib.book.saved.field_bracket``); this adds the argument check.
    For any smooth fields written with torch operations, not only gradients; ``X`` and ``Y``
    must be differentiable by ``torch.func`` (write a gradient field as ``torch.func.grad(L)``,
    not with :func:`ibea_lib.grad`, which detaches). For X = ∇L_a, Y = ∇L_b it equals
    :func:`ibea_lib.lie_bracket` (H_b ∇L_a − H_a ∇L_b).
    """
    return saved.field_bracket(X, Y, _check_point(x))


def parallelogram(
    X: VectorField, Y: VectorField, x0: Tensor, s: float, steps: int = 50
) -> dict[str, Tensor]:
    """Flow along X for time s then along Y, and along Y then X, from x0 (chapter 06's code).

    Returns the two polygonal paths ``"xy"`` and ``"yx"`` (each (2·steps+1, d)) and
    ``"gap"`` = end(X then Y) − end(Y then X), which is s²[X, Y](x0) + O(s³).
    """
    _check_point(x0, "x0")
    check_positive_int(steps, "steps")
    return saved.parallelogram(X, Y, x0.detach(), s, steps)


# --------------------------------------------------------------------------- task order


def mean_over_orders(
    fn: Callable[[Sequence[Loss], Params, float], Params],
    losses: Sequence[Loss],
    params: Params,
    lr: float,
) -> Params:
    """The mean of ``fn(losses in order σ, params, lr)`` over all n! orders σ (n ≤ 6; chapter 07's code)."""
    losses = check_losses(losses)
    if len(losses) > 6:
        raise ValueError(f"mean_over_orders enumerates n! orders; n = {len(losses)} is too many (≤ 6)")
    return saved.mean_over_orders(fn, losses, params, lr)


def flipped_sequential_field(losses: Sequence[Loss], params: Params, lr: float) -> Params:
    """The sequential modified field with the sign of its bracket term flipped (a wrong candidate).

    −∇(Σ L_i + (h/4)Σ‖g_i‖²) − (h/2)Σ_{i<j}[g_i, g_j] = 2 F̄ − F_seq (the library's one-pass fields;
    chapter 07 writes it term by term, ``ibea_lib.book.saved.flipped_sequential_field``).
    """
    return sub(scale(order_averaged_field(losses, params, lr), 2.0), sequential_field(losses, params, lr))


# --------------------------------------------------------------------------- 2-D task families


def rotation(angle: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """The 2×2 rotation matrix by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=dtype)


def rotated_quadratic(
    angle: float,
    shift: Sequence[float] = (0.0, 0.0),
    eigs: Sequence[float] = (1.0, 0.1),
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """(A, b) of the 2-D task L(θ) = ½(θ − c)ᵀA(θ − c), A = R(angle) diag(eigs) R(angle)ᵀ, c = shift.

    In the form ½θᵀAθ + bᵀθ (+ const) of :func:`ibea_lib.data.quadratic_loss`: b = −A c.
    angle = 0 and shift = 0 give the reference task; turning the knobs shifts the task.
    """
    if len(eigs) != 2 or min(eigs) <= 0:
        raise ValueError(f"eigs must be two positive numbers, got {list(eigs)}")
    if len(shift) != 2:
        raise ValueError(f"shift must have two entries, got {list(shift)}")
    R = rotation(angle, dtype)
    A = R @ torch.diag(torch.tensor(list(eigs), dtype=dtype)) @ R.T
    c = torch.tensor(list(shift), dtype=dtype)
    return A, -(A @ c)


def quadratic_bracket(A_a: Tensor, b_a: Tensor, A_b: Tensor, b_b: Tensor, theta: Tensor) -> Tensor:
    """Closed form [∇L_a, ∇L_b](θ) = A_b(A_aθ + b_a) − A_a(A_bθ + b_b) for quadratic tasks."""
    return A_b @ (A_a @ theta + b_a) - A_a @ (A_b @ theta + b_b)
