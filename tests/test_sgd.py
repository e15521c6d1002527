"""Tests of ibea_lib.book.sgd: epochs, random reshuffling, the per-epoch modified field."""

import itertools

import pytest
import torch

import ibea_lib as ib
from ibea_lib.book import sgd

DT = torch.float64


def _least_squares(m=3, b=2, d=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(m * b, d, generator=gen, dtype=DT)
    y = torch.randn(m * b, generator=gen, dtype=DT)

    def batch(k):
        xs, ys = X[k * b : (k + 1) * b], y[k * b : (k + 1) * b]
        return lambda th: 0.5 * ((xs @ th - ys) ** 2).mean()

    return [batch(k) for k in range(m)], torch.randn(d, generator=gen, dtype=DT)


def test_epoch_is_sequential_steps_in_order():
    losses, th = _least_squares()
    out = sgd.epoch(losses, th, 0.1, order=[2, 0, 1])
    ref = th
    for k in [2, 0, 1]:
        ref = ref - 0.1 * ib.grad(losses[k], ref)
    assert torch.allclose(out, ref, rtol=1e-14)


def test_reshuffled_mean_is_mean_over_permutations():
    losses, th = _least_squares()
    mean = sgd.reshuffled_mean_epoch(losses, th, 0.1)
    ref = torch.stack([sgd.epoch(losses, th, 0.1, o) for o in itertools.permutations(range(3))]).mean(0)
    assert torch.allclose(mean, ref, rtol=1e-14)


def test_reshuffling_field_closed_form_for_least_squares():
    losses, th = _least_squares()
    h = 0.07
    # For quadratics, −∇(Σ L_k + h/4 Σ ‖∇L_k‖²) = −Σ (g_k + h/2 H_k g_k).
    expected = -sum(ib.grad(f, th) + h / 2 * ib.hvp(f, th, ib.grad(f, th)) for f in losses)
    assert torch.allclose(sgd.reshuffling_field(losses, th, h), expected, rtol=1e-12)


def test_bracket_sum_is_the_order_gap_of_the_modified_fields():
    losses, th = _least_squares()
    h = 0.05
    order = [1, 2, 0]
    gap = ib.sequential_field([losses[k] for k in order], th, h) - sgd.reshuffling_field(losses, th, h)
    assert torch.allclose(gap, h / 2 * sgd.bracket_sum(losses, th, order), rtol=1e-10, atol=1e-14)


def test_reshuffled_mean_order_three_fixed_order_two():
    losses, th = _least_squares()
    lrs = ib.geometric_lrs(0.04, 4)
    field = lambda p, h: sgd.reshuffling_field(losses, p, h)  # noqa: E731
    rr = ib.local_errors(lambda p, h: sgd.reshuffled_mean_epoch(losses, p, h), field, th, lrs, steps=32)
    fixed = ib.local_errors(lambda p, h: sgd.epoch(losses, p, h), field, th, lrs, steps=32)
    assert ib.fit_order(lrs, rr) > 2.8
    assert 1.8 < ib.fit_order(lrs, fixed) < 2.2


def test_gradient_variance_identity():
    losses, th = _least_squares(m=4)
    h = 0.3
    mean = lambda p: sum(f(p) for f in losses) / 4  # noqa: E731
    g = ib.grad(mean, th)
    lhs = ib.sgd_modified_loss(losses, th, h)
    rhs = mean(th) + h / 4 * g @ g + h / 4 * sgd.gradient_variance(losses, th)
    assert torch.allclose(lhs, rhs, rtol=1e-13)


def test_bad_orders():
    losses, th = _least_squares()
    with pytest.raises(ValueError):
        sgd.epoch(losses, th, 0.1, order=[0, 0, 1])
    with pytest.raises(ValueError):
        sgd.bracket_sum(losses[:1], th)
    with pytest.raises(ValueError):
        sgd.reshuffled_mean_epoch(losses, th, 0.1, orders=[])


def test_epoch_path_fixed_and_reshuffled():
    gen = torch.Generator().manual_seed(3)
    A = [torch.randn(2, 2, generator=gen, dtype=torch.float64) for _ in range(3)]
    losses = [lambda t, a=a: 0.5 * ((a @ t) ** 2).sum() + t.sum() for a in A]
    theta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    path = sgd.epoch_path(losses, theta, 0.05, 4, order=[2, 0, 1])
    assert path.shape == (5, 2)
    manual = theta
    for _ in range(4):
        manual = sgd.epoch(losses, manual, 0.05, [2, 0, 1])
    assert torch.allclose(path[-1], manual, rtol=1e-14)
    rr1 = sgd.epoch_path(losses, theta, 0.05, 6, reshuffle=True, seed=1)
    assert torch.equal(rr1, sgd.epoch_path(losses, theta, 0.05, 6, reshuffle=True, seed=1))
    state = torch.random.get_rng_state()
    sgd.epoch_path(losses, theta, 0.05, 2, reshuffle=True)
    assert torch.equal(state, torch.random.get_rng_state())
    with pytest.raises(ValueError):
        sgd.epoch_path(losses, theta, 0.05, 2, order=[0, 1, 2], reshuffle=True)
