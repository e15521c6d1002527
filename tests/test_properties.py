"""Algebraic properties of the Lie bracket of gradient fields, as property-based tests.

[·,·] is antisymmetric and bilinear, [∇L, ∇L] = 0, and it satisfies the Jacobi identity.
The Jacobi identity needs brackets of general vector fields (a bracket of gradient fields is
not a gradient field), so it is checked with a tiny independent reference, [X, Y] = DY·X − DX·Y
with Jacobians from ``torch.func.jacrev`` on flat vectors; the library's bracket is checked
against that reference too. Random losses: ``ibea_refs.smooth_loss`` (non-quadratic, nonzero
third derivatives) on single tensors, and small MLP tasks on dict params.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ibea_refs import F64, bracket, flat, grad_field, mlp_problem, quadratic, rel_err, smooth_loss

import ibea_lib as ib

seeds = st.integers(min_value=0, max_value=2**31 - 1)
dims = st.integers(min_value=1, max_value=6)
coefs = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False, allow_infinity=False)


def point(d: int, seed: int) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed + 7), dtype=F64)


def close(a, b, rtol=1e-9, scale=None) -> bool:
    """‖a − b‖ ≤ rtol · scale, with scale = max(‖a‖, ‖b‖, 1) unless given."""
    a = a if isinstance(a, torch.Tensor) else flat(a)
    b = b if isinstance(b, torch.Tensor) else flat(b)
    s = scale if scale is not None else max(float(a.norm()), float(b.norm()), 1.0)
    return float((a - b).norm()) <= rtol * s


@settings(max_examples=25, deadline=None)
@given(seed=seeds, d=dims)
def test_antisymmetry(seed, d):
    fa, fb, th = smooth_loss(d, seed), smooth_loss(d, seed + 1), point(d, seed)
    ab, ba = ib.lie_bracket(fa, fb, th), ib.lie_bracket(fb, fa, th)
    assert close(ab, -ba, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, d=dims)
def test_bracket_of_a_gradient_with_itself_is_zero(seed, d):
    f, th = smooth_loss(d, seed), point(d, seed)
    g = ib.grad(f, th)
    hg = ib.hvp(f, th, g)
    # compare with the size of the two terms H g that cancel
    zero = torch.zeros(d, dtype=F64)
    assert close(ib.lie_bracket(f, f, th), zero, rtol=1e-12, scale=float(hg.norm()) + 1e-300)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, d=dims, alpha=coefs, beta=coefs)
def test_bilinearity(seed, d, alpha, beta):
    fa, fb, fc = (smooth_loss(d, seed + k) for k in range(3))
    th = point(d, seed)
    combo = lambda p: alpha * fa(p) + beta * fc(p)
    left = ib.lie_bracket(combo, fb, th)
    expected = alpha * ib.lie_bracket(fa, fb, th) + beta * ib.lie_bracket(fc, fb, th)
    scale = (abs(alpha) + abs(beta) + 1) * max(
        float(ib.lie_bracket(fa, fb, th).norm()), float(ib.lie_bracket(fc, fb, th).norm()), 1.0
    )
    assert close(left, expected, rtol=1e-10, scale=scale)
    right = ib.lie_bracket(fb, combo, th)
    assert close(right, -expected, rtol=1e-10, scale=scale)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, d=st.integers(min_value=2, max_value=5))
def test_library_bracket_matches_the_general_reference(seed, d):
    fa, fb, th = smooth_loss(d, seed), smooth_loss(d, seed + 1), point(d, seed)
    reference = bracket(grad_field(fa, th), grad_field(fb, th))(th)
    assert rel_err(ib.lie_bracket(fa, fb, th), reference) < 1e-10


@settings(max_examples=20, deadline=None)
@given(seed=seeds, d=st.integers(min_value=2, max_value=5))
def test_jacobi_identity_on_three_gradient_fields(seed, d):
    X, Y, Z = (grad_field(smooth_loss(d, seed + k), point(d, 0)) for k in range(3))
    th = point(d, seed)
    terms = [bracket(X, bracket(Y, Z))(th), bracket(Y, bracket(Z, X))(th), bracket(Z, bracket(X, Y))(th)]
    size = max(float(t.norm()) for t in terms)
    assert size > 1e-6  # the identity is not checked on zeros
    assert float(sum(terms).norm()) <= 1e-10 * size


def test_reference_bracket_detects_a_non_jacobi_combination():
    """The Jacobi check can fail: dropping one cyclic term leaves a clearly nonzero vector."""
    d = 4
    X, Y, Z = (grad_field(smooth_loss(d, k), point(d, 0)) for k in range(3))
    th = point(d, 1)
    partial = bracket(X, bracket(Y, Z))(th) + bracket(Y, bracket(Z, X))(th)
    assert float(partial.norm()) > 1e-3 * float(bracket(Z, bracket(X, Y))(th).norm())


def test_properties_on_mlp_dict_params():
    """The same identities for three MLP tasks on dict params (a 2-3-1 tanh MLP, 13 parameters)."""
    problem = mlp_problem(n_tasks=3, sizes=(2, 3, 1), seed=5)
    fa, fb, fc = problem.losses
    p = problem.params
    ab = ib.lie_bracket(fa, fb, p)
    assert close(ab, ib.scale(ib.lie_bracket(fb, fa, p), -1.0), rtol=1e-12)
    assert close(ib.lie_bracket(fa, fa, p), ib.zeros_like(p), rtol=1e-12, scale=float(ib.norm(ab)))
    combo = lambda q: 2.0 * fa(q) - 0.5 * fc(q)
    lin = ib.add(ib.scale(ab, 2.0), ib.scale(ib.lie_bracket(fc, fb, p), -0.5))
    assert close(ib.lie_bracket(combo, fb, p), lin, rtol=1e-10)
    # the library's bracket matches the jacrev reference on the flattened parameters
    th = flat(p)
    X, Y, Z = (grad_field(f, p) for f in (fa, fb, fc))
    assert rel_err(ab, bracket(X, Y)(th)) < 1e-10
    terms = [bracket(X, bracket(Y, Z))(th), bracket(Y, bracket(Z, X))(th), bracket(Z, bracket(X, Y))(th)]
    size = max(float(t.norm()) for t in terms)
    assert size > 1e-6
    assert float(sum(terms).norm()) <= 1e-10 * size


def test_a_bracket_of_gradients_is_not_a_gradient():
    """Its Jacobian is not symmetric in general (FORMULAS.md): a reason the sequential field
    has no modified loss."""
    d = 4
    X, Y = (grad_field(smooth_loss(d, k), point(d, 0)) for k in range(2))
    J = torch.func.jacrev(bracket(X, Y))(point(d, 3))
    assert float((J - J.T).norm()) > 1e-3 * float(J.norm())


@settings(max_examples=25, deadline=None)
@given(seed=seeds, d=dims, h=st.floats(min_value=1e-3, max_value=0.5))
def test_quadratic_closed_forms(seed, d, h):
    """Random quadratics: bracket (A_bA_a − A_aA_b)θ + A_b b_a − A_a b_b and the sequential field."""
    (Aa, ba, fa), (Ab, bb, fb) = quadratic(d, seed), quadratic(d, seed + 1)
    th = point(d, seed)
    ga, gb = Aa @ th + ba, Ab @ th + bb
    closed = (Ab @ Aa - Aa @ Ab) @ th + Ab @ ba - Aa @ bb
    scale = float((Ab @ ga).norm() + (Aa @ gb).norm()) + 1e-300
    assert close(ib.lie_bracket(fa, fb, th), closed, rtol=1e-12, scale=scale)
    field = -(ga + gb) - h / 2 * (Aa @ ga + Ab @ gb) + h / 2 * closed
    assert close(ib.sequential_field([fa, fb], th, h), field, rtol=1e-12)
