"""Which task first? The bracket tournament: pairwise order predictions for many source tasks at once.

Training task i for time t and then task j (one gradient step of size t each) ends at θ_ij; the other
order ends at θ_ji, and for any target loss L_T (FORMULAS §3, "order dependence")

    L_T(θ_ij) − L_T(θ_ji) = t² ⟨∇L_T, [∇L_i, ∇L_j]⟩ + O(t³),   [∇L_i, ∇L_j] = H_j g_i − H_i g_j.

A positive value means that j then i ends lower on the target (i is better trained last). The
inner product needs no bracket vector: with u_j = H_j ∇L_T (one Hessian-vector product per task,
Hessians are symmetric),

    ⟨∇L_T, [∇L_i, ∇L_j]⟩ = ⟨g_i, u_j⟩ − ⟨g_j, u_i⟩,

so all N(N − 1)/2 pairs cost N gradients, the target gradient and N Hessian-vector products
(:func:`bracket_matrix`), instead of one bracket per pair. This is the pairwise order preference of
Sweeney (2026, "The Geometry of Sequential Learning: Lie-Bracket Prediction of Transfer Order"), to
first order in the bracket term. For a whole sequence σ of the N tasks (one step each), the same
expansion gives L_T(θ_σ) = const + (t²/2) Σ_{i before j in σ} M_ij + O(t³) with M the matrix below,
so :func:`rank_by_bracket` orders the tasks to make that sum small.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from .autodiff import Loss, check_losses, grad, hvp
from .pytree import Params, check_params, dot

__all__ = ["bracket_matrix", "rank_by_bracket", "sequence_score"]


def bracket_matrix(losses: Sequence[Loss], params: Params, *, target: Loss, time: float = 1.0) -> Tensor:
    """Predicted order gaps M_ij = t² ⟨∇L_T, [∇L_i, ∇L_j]⟩(θ) for all pairs of source tasks.

    M_ij is the leading term of L_T(θ_ij) − L_T(θ_ji), where θ_ij trains ``losses[i]`` and then
    ``losses[j]`` (one step of size t = ``time`` each, or k steps of h with t = k·h, where the
    prediction is an extrapolation in t) from θ = ``params``. Positive: task i is better trained
    last for the target. Bracket convention [∇L_i, ∇L_j] = H_j ∇L_i − H_i ∇L_j (FORMULAS), computed as

        M_ij = t² (⟨g_i, H_j g_T⟩ − ⟨g_j, H_i g_T⟩),   g_T = ∇L_T(θ).

    Cost: N + 1 gradients and N Hessian-vector products (reverse over reverse), for all N(N − 1)/2
    pairs. Returns an antisymmetric N × N float64 tensor (on the CPU) with zero diagonal.
    """
    losses = check_losses(losses)
    check_params(params)
    t = float(time)
    if not t > 0:
        raise ValueError(f"time must be positive, got {time!r}")
    if not callable(target):
        raise TypeError("target must be a loss: a callable params -> 0-dim tensor")
    g_t = grad(target, params)
    gs = [grad(loss, params) for loss in losses]
    us = [hvp(loss, params, g_t) for loss in losses]
    n = len(losses)
    c = torch.tensor([[float(dot(gs[i], us[j])) for j in range(n)] for i in range(n)], dtype=torch.float64)
    return t * t * (c - c.T)


def sequence_score(matrix: Tensor, order: Sequence[int]) -> float:
    """Σ_{i before j in ``order``} M_ij / 2: the bracket's prediction of L_T after the sequence, up to a
    constant common to all orders (in units of the matrix, which already holds t²)."""
    m = _check_matrix(matrix)
    order = [int(i) for i in order]
    if sorted(order) != list(range(m.shape[0])):
        raise ValueError(f"order must be a permutation of 0 … {m.shape[0] - 1}, got {order}")
    return float(sum(m[order[a], order[b]] for a in range(len(order)) for b in range(a + 1, len(order)))) / 2


def rank_by_bracket(matrix: Tensor, *, exact_up_to: int = 8) -> list[int]:
    """The order of the tasks (first trained first) that the bracket predicts to end lowest on the target.

    Minimizes :func:`sequence_score` over all permutations when N ≤ ``exact_up_to``; beyond, orders the
    tasks by their score s_i = Σ_j M_ij (ascending: the task that gains most from coming last comes
    last), which is exact whenever the pairwise preferences are transitive. Ties keep index order.
    ``matrix`` is the output of :func:`bracket_matrix`.
    """
    m = _check_matrix(matrix)
    n = m.shape[0]
    if n <= exact_up_to:
        return list(min(itertools.permutations(range(n)), key=lambda p: sequence_score(m, p)))
    score = m.sum(1)
    return sorted(range(n), key=lambda i: (float(score[i]), i))


def _check_matrix(matrix: Tensor) -> Tensor:
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
        raise ValueError(f"matrix must be square N × N, got shape {tuple(m.shape)}")
    return m
