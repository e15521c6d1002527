"""Order-of-accuracy tests of backward error analysis (float64, RK4 reference flows).

The local error ‖update(θ, h) − φ_h^F(θ)‖ of one discrete update against the flow of a field F
over time h is O(h³) when F is the right modified field (fitted log-log slope ≈ 3) and O(h²)
for the plain gradient flow or a wrong field (slope ≈ 2). The thresholds (≥ 2.8 for the right
field, < 2.3 for wrong ones) make each test able to fail in both directions.
"""

from __future__ import annotations

import pytest
import torch
from ibea_refs import F64, mlp_problem, quadratic, rel_err

import ibea_lib as ib

LRS = ib.geometric_lrs(0.05, count=4, ratio=0.5)  # 0.05 … 0.00625
STEPS = 4  # RK4 sub-steps: the flow's own error (≲ h⁵/STEPS⁴) is far below the local errors


def slope(update, field, params) -> float:
    return ib.fit_order(LRS, ib.local_errors(update, field, params, LRS, steps=STEPS))


def plain_flow(loss):
    return lambda p, h: ib.scale(ib.grad(loss, p), -1.0)


def flipped_sequential_field(losses):
    """The sequential field with the sign of every bracket term flipped (a wrong field)."""

    def field(p, h):
        F = ib.sequential_field(losses, p, h)
        for i in range(len(losses)):
            for j in range(i + 1, len(losses)):
                F = ib.add(F, ib.lie_bracket(losses[i], losses[j], p), alpha=-h)  # +h/2 → −h/2
        return F

    return field


def test_gd_modified_field_is_second_order():
    problem = mlp_problem(n_tasks=1, seed=0)
    f, p = problem.losses[0], problem.params
    update = lambda q, h: ib.gd_step(f, q, h)
    assert slope(update, lambda q, h: ib.gd_field(f, q, h), p) >= 2.8
    assert 1.8 <= slope(update, plain_flow(f), p) < 2.3


def test_gd_on_a_quadratic():
    """Quadratics (single-tensor params): the same orders, with the closed-form field."""
    A, b, _ = quadratic(5, seed=3)
    A = A / torch.linalg.matrix_norm(A, 2)  # ‖A‖ = 1 keeps hA small
    f = lambda q: 0.5 * q @ (A @ q) + b @ q
    th = torch.randn(5, dtype=F64, generator=torch.Generator().manual_seed(0))
    update = lambda q, h: ib.gd_step(f, q, h)
    closed = lambda q, h: -(A @ q + b) - h / 2 * A @ (A @ q + b)
    assert slope(update, closed, th) >= 2.8
    assert 1.8 <= slope(update, plain_flow(f), th) < 2.3


def test_multitask_modified_field_is_second_order(mlp3):
    total = ib.sum_losses(mlp3.losses)
    update = lambda q, h: ib.gd_step(total, q, h)
    assert slope(update, lambda q, h: ib.multitask_field(mlp3.losses, q, h), mlp3.params) >= 2.8
    assert 1.8 <= slope(update, plain_flow(total), mlp3.params) < 2.3


@pytest.mark.parametrize("n_tasks", [2, 3])
def test_sequential_modified_field_is_second_order(n_tasks):
    problem = mlp_problem(n_tasks=n_tasks, seed=n_tasks)
    Ls, p = problem.losses, problem.params
    update = lambda q, h: ib.sequential_steps(Ls, q, h)
    assert slope(update, lambda q, h: ib.sequential_field(Ls, q, h), p) >= 2.8
    # wrong fields are only first order: the plain flow of Σ L_i, the bracket with its sign
    # flipped, and the multitask field (no bracket at all)
    assert 1.8 <= slope(update, plain_flow(ib.sum_losses(Ls)), p) < 2.3
    assert slope(update, flipped_sequential_field(Ls), p) < 2.3
    assert slope(update, lambda q, h: ib.multitask_field(Ls, q, h), p) < 2.3


def test_averaging_both_orders_removes_the_bracket(mlp2):
    """The mean iterate of the orders AB and BA follows −∇(L_A + L_B + (h/4)Σ‖g_i‖²) to O(h³)."""
    La, Lb = mlp2.losses

    def mean_update(q, h):
        return ib.scale(ib.add(ib.sequential_steps([La, Lb], q, h), ib.sequential_steps([Lb, La], q, h)), 0.5)

    no_conflict = lambda q, h: ib.add(ib.gd_field(La, q, h), ib.gd_field(Lb, q, h))
    assert slope(mean_update, no_conflict, mlp2.params) >= 2.8
    # a single order against the same field is off by (h²/2)[∇L_A, ∇L_B]: first order only
    single = lambda q, h: ib.sequential_steps([La, Lb], q, h)
    assert slope(single, no_conflict, mlp2.params) < 2.3


def test_order_dependence_is_h_squared_times_the_bracket(mlp2):
    """θ_AB − θ_BA = h²[∇L_A, ∇L_B] + O(h³): the relative error of the prediction shrinks like h."""
    La, Lb = mlp2.losses
    p = mlp2.params
    bracket = ib.lie_bracket(La, Lb, p)
    lrs = [0.02, 0.01, 0.005]
    errs = []
    for h in lrs:
        diff = ib.sub(ib.sequential_steps([La, Lb], p, h), ib.sequential_steps([Lb, La], p, h))
        errs.append(rel_err(ib.scale(diff, 1 / h**2), bracket))
    assert errs[-1] < 0.02
    assert 0.8 < ib.fit_order(lrs, errs) < 1.2
    # the opposite sign is wrong by 200%
    diff = ib.sub(ib.sequential_steps([La, Lb], p, 0.005), ib.sequential_steps([Lb, La], p, 0.005))
    assert rel_err(ib.scale(diff, -1 / 0.005**2), bracket) > 1.9


def test_order_dependence_is_exact_for_quadratics():
    (Aa, ba, fa), (Ab, bb, fb) = quadratic(4, seed=20), quadratic(4, seed=21)
    th = torch.randn(4, dtype=F64, generator=torch.Generator().manual_seed(1))
    h = 0.01
    diff = ib.sequential_steps([fa, fb], th, h) - ib.sequential_steps([fb, fa], th, h)
    closed = (Ab @ Aa - Aa @ Ab) @ th + Ab @ ba - Aa @ bb
    assert rel_err(diff / h**2, closed) < 1e-8
    assert rel_err(diff / h**2, ib.lie_bracket(fa, fb, th)) < 1e-8
