"""Tests of ibea_lib.book.continual against closed forms and independent computations."""

import math

import pytest
import torch

import ibea_lib as ib
from ibea_lib.book import continual as cl


def _quads(d=4, seeds=(1, 2, 3)):
    tasks = [ib.data.random_quadratic(d, s) for s in seeds]
    return tasks, [ib.data.quadratic_loss(A, b) for A, b in tasks]


def test_field_bracket_matches_lie_bracket_and_closed_form():
    (ta, tb, _), (la, lb, _) = _quads()
    theta = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X, Y = torch.func.grad(la), torch.func.grad(lb)
    closed = cl.quadratic_bracket(*ta, *tb, theta)
    assert torch.allclose(cl.field_bracket(X, Y, theta), closed, atol=1e-12)
    assert torch.allclose(ib.lie_bracket(la, lb, theta), closed, atol=1e-12)


def test_field_jacobian_linear_field():
    M = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    J = cl.field_jacobian(lambda x: M @ x, torch.ones(2, dtype=torch.float64))
    assert torch.allclose(J, M)


def test_parallelogram_gap_is_s_squared_bracket():
    X = lambda x: torch.stack([torch.ones_like(x[0]), torch.zeros_like(x[0])])  # noqa: E731
    Y = lambda x: torch.stack([torch.zeros_like(x[0]), x[0]])  # noqa: E731  [X,Y] = (0, 1)
    x0 = torch.zeros(2, dtype=torch.float64)
    for s in (0.1, 0.3):
        out = cl.parallelogram(X, Y, x0, s, steps=20)
        # exact here: X then Y ends at (s, s²), Y then X at (s, 0)
        assert torch.allclose(out["gap"], torch.tensor([0.0, s * s], dtype=torch.float64), atol=1e-12)
        assert out["xy"].shape == (41, 2)


def test_parallelogram_paths_follow_the_flows():
    # X = −x (contraction), Y = rotation: the first half of "xy" is e^{−t} x0, exactly to RK4 accuracy
    X = lambda x: -x  # noqa: E731
    Y = lambda x: torch.stack([-x[1], x[0]])  # noqa: E731
    x0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    out = cl.parallelogram(X, Y, x0, 1.0, steps=40)
    assert torch.allclose(out["xy"][40], math.exp(-1) * x0, atol=1e-7)
    # the two fields commute ([X, Y] = 0: rotations commute with scalings), so the gap vanishes
    assert float(out["gap"].norm()) < 1e-7


def test_order_gap_exact_for_quadratics():
    (ta, tb, _), (la, lb, _) = _quads()
    theta = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = 0.1
    gap = ib.order_gap(la, lb, theta, h)
    assert torch.allclose(gap, h * h * cl.quadratic_bracket(*ta, *tb, theta), atol=1e-13)


def test_order_averaged_field_is_mean_of_sequential_fields():
    _, losses = _quads()
    theta = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mean = cl.mean_over_orders(ib.sequential_field, losses, theta, 0.05)
    assert torch.allclose(cl.order_averaged_field(losses, theta, 0.05), mean, atol=1e-12)
    # and the flipped field is off from the true one by exactly h Σ brackets
    diff = ib.sequential_field(losses, theta, 0.05) - cl.flipped_sequential_field(losses, theta, 0.05)
    assert torch.allclose(diff, 0.05 * cl.bracket_sum(losses, theta), atol=1e-12)


def test_rotated_quadratic_minimum_and_eigs():
    A, b = cl.rotated_quadratic(0.7, (1.0, -2.0), (2.0, 0.5))
    assert torch.allclose(torch.linalg.solve(A, -b), torch.tensor([1.0, -2.0], dtype=torch.float64))
    assert torch.allclose(torch.linalg.eigvalsh(A), torch.tensor([0.5, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        cl.rotated_quadratic(0.0, eigs=(1.0, -1.0))


def test_bad_inputs():
    with pytest.raises(ValueError):
        cl.parallelogram(lambda x: x, lambda x: x, torch.zeros(2, dtype=torch.float64), 1.0, steps=0)
    with pytest.raises(TypeError):
        cl.field_jacobian(lambda x: x, [1.0, 2.0])
    with pytest.raises(ValueError):
        cl.bracket_sum([lambda p: p.sum()], torch.zeros(2))


def _fixed_point(first, second, h):
    (A1, b1), (A2, b2) = first, second
    eye = torch.eye(len(b1), dtype=torch.float64)
    M = (eye - h * A2) @ (eye - h * A1)
    c = -(eye - h * A2) @ (h * b1) - h * b2
    return torch.linalg.solve(eye - M, c)


def test_fixed_point_gap_predicted_by_bracket_at_compromise():
    """Chapter 07: θ*_AB − θ*_BA = h (A_A + A_B)⁻¹ [∇L_A, ∇L_B](θ*) + O(h²), checked on random 4-D
    quadratics (the chapter uses rotated 2-D valleys): the relative error shrinks like h."""
    (ta, tb, _), (la, lb, _) = _quads()
    star = torch.linalg.solve(ta[0] + tb[0], -(ta[1] + tb[1]))
    lrs, rel = [0.04, 0.02, 0.01], []
    for h in lrs:
        gap = _fixed_point(ta, tb, h) - _fixed_point(tb, ta, h)
        pred = h * torch.linalg.solve(ta[0] + tb[0], ib.lie_bracket(la, lb, star))
        rel.append(float((gap - pred).norm() / gap.norm()))
    assert abs(ib.fit_order(lrs, rel) - 1) < 0.2 and rel[-1] < 0.1
    p = torch.zeros(4, dtype=torch.float64)  # the fixed point is the limit of the sweeps
    for _ in range(3000):
        p = ib.sequential_steps([la, lb], p, 0.04)
    assert torch.allclose(p, _fixed_point(ta, tb, 0.04), atol=1e-8)
