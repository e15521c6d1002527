"""Tests of ibea_lib.book.ordering against closed forms and independent computations."""

import pytest
import torch

import ibea_lib as ib
from ibea_lib.book import continual, multitask
from ibea_lib.book import ordering as od


def _quads(d=5, seeds=(1, 2, 3)):
    tasks = [ib.data.random_quadratic(d, s) for s in seeds]
    return tasks, [ib.data.quadratic_loss(A, b) for A, b in tasks]


def _theta(d=5, seed=0):
    return torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _tiny_net_tasks(n_tasks=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    net = ib.models.mlp([3, 5, 2], seed=seed, dtype=torch.float64)
    losses = [
        ib.model_loss(
            net,
            torch.nn.functional.mse_loss,
            torch.randn(8, 3, generator=gen, dtype=torch.float64),
            torch.randn(8, 2, generator=gen, dtype=torch.float64),
        )
        for _ in range(n_tasks)
    ]
    return ib.params_of(net), losses


def test_order_gap_on_quadratics_matches_midpoint_formula():
    # exact for quadratics: Δ_E = ⟨A_E m + b_E, h²[g_A, g_B](θ)⟩, m the midpoint of the end points
    (ta, tb, te), (la, lb, le) = _quads()
    theta, h = _theta(), 0.05
    ab = od.train_in_order([la, lb], theta, h)
    ba = od.train_in_order([lb, la], theta, h)
    ga, gb = ta[0] @ theta + ta[1], tb[0] @ theta + tb[1]
    bracket = tb[0] @ ga - ta[0] @ gb
    assert torch.allclose(ab - ba, h**2 * bracket, atol=1e-13)
    mid = (ab + ba) / 2
    expected = float((te[0] @ mid + te[1]) @ (h**2 * bracket))
    assert od.order_loss_gap(la, lb, le, theta, h) == pytest.approx(expected, rel=1e-9, abs=1e-14)


def test_prediction_relative_error_is_first_order():
    (_, _, _), (la, lb, le) = _quads()
    theta = _theta()
    lrs = [0.04, 0.02, 0.01]
    rel = [
        abs(od.order_loss_gap(la, lb, le, theta, h) / od.predicted_order_loss_gap(la, lb, le, theta, h) - 1)
        for h in lrs
    ]
    assert 0.9 < ib.fit_order(lrs, rel) < 1.1


def test_prediction_scales_with_t_and_is_antisymmetric():
    (_, _, _), (la, lb, le) = _quads()
    theta = _theta()
    p1 = od.predicted_order_loss_gap(la, lb, le, theta, 0.1, steps_per_task=1)
    p3 = od.predicted_order_loss_gap(la, lb, le, theta, 0.1, steps_per_task=3)
    assert p3 == pytest.approx(9 * p1, rel=1e-12)
    assert od.predicted_order_loss_gap(lb, la, le, theta, 0.1) == pytest.approx(-p1, rel=1e-12)


def test_train_in_order_counts_steps():
    (_, _, _), (la, lb, _) = _quads()
    theta = _theta()
    manual = theta
    for loss in (la, la, lb, lb):
        manual = ib.gd_step(loss, manual, 0.03)
    assert torch.allclose(od.train_in_order([la, lb], theta, 0.03, 2), manual)


def test_bracket_sum_two_and_three_tasks():
    (_, _, _), (la, lb, lc) = _quads()
    theta = _theta()
    assert torch.allclose(continual.bracket_sum([la, lb], theta), ib.lie_bracket(la, lb, theta))
    # Σ_{i<j}[g_i, g_j] = (2/h)(sequential field − order-free field), from FORMULAS §3
    h = 0.1
    expected = ib.scale(
        ib.sub(ib.sequential_field([la, lb, lc], theta, h), multitask.flatness_field([la, lb, lc], theta, h)),
        2 / h,
    )
    assert torch.allclose(continual.bracket_sum([la, lb, lc], theta), expected, atol=1e-10)


def test_corrected_step_is_average_of_orders_for_quadratics():
    (_, _, _), (la, lb, _) = _quads()
    theta, h = _theta(), 0.07
    corrected = ib.bracket_corrected_steps([la, lb], theta, h, at="start")
    average = (ib.sequential_steps([la, lb], theta, h) + ib.sequential_steps([lb, la], theta, h)) / 2
    assert torch.allclose(corrected, average, atol=1e-13)


def test_order_free_field_closed_form_for_quadratics():
    (ta, tb, _), (la, lb, _) = _quads()
    theta, h = _theta(), 0.2
    expected = torch.zeros_like(theta)
    for A, b in (ta, tb):
        g = A @ theta + b
        expected -= g + (h / 2) * A @ g
    assert torch.allclose(multitask.flatness_field([la, lb], theta, h), expected, atol=1e-12)


@pytest.mark.parametrize("at", ["start", "end"])
@pytest.mark.parametrize("n_tasks", [2, 3])
def test_corrected_update_is_third_order_against_order_free_flow(at, n_tasks):
    theta, losses = _tiny_net_tasks(n_tasks)
    lrs = [0.04, 0.02, 0.01]
    corrected = ib.local_errors(
        lambda p, h: ib.bracket_corrected_steps(losses, p, h, at=at),
        lambda p, h: multitask.flatness_field(losses, p, h),
        theta,
        lrs,
        steps=16,
    )
    plain = ib.local_errors(
        lambda p, h: ib.sequential_steps(losses, p, h),
        lambda p, h: multitask.flatness_field(losses, p, h),
        theta,
        lrs,
        steps=16,
    )
    assert ib.fit_order(lrs, corrected) > 2.8
    assert 1.8 < ib.fit_order(lrs, plain) < 2.2


def test_replay_buffer_is_balanced_deterministic_and_valid():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 5)
    idx = od.replay_buffer(labels, 7, seed=4)
    assert len(idx) == 7 and len(set(idx.tolist())) == 7
    counts = torch.bincount(labels[idx], minlength=3).tolist()
    assert counts == [3, 2, 2]
    assert torch.equal(idx, od.replay_buffer(labels, 7, seed=4))
    assert not torch.equal(idx, od.replay_buffer(labels, 7, seed=5))
    assert torch.all(idx[1:] > idx[:-1])


def test_replay_buffer_errors():
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError):
        od.replay_buffer(labels, 1, seed=0)  # fewer than the number of classes
    with pytest.raises(ValueError):
        od.replay_buffer(labels, 5, seed=0)
    with pytest.raises(TypeError):
        od.replay_buffer(labels.double(), 2, seed=0)
    with pytest.raises(ValueError):
        od.replay_buffer(torch.tensor([0, 0, 0, 1]), 4, seed=0)  # class 1 has one example


def test_bad_inputs_raise():
    (_, _, _), (la, lb, le) = _quads()
    theta = _theta()
    with pytest.raises(ValueError):
        od.order_loss_gap(la, lb, le, theta, 0.1, steps_per_task=0)
    with pytest.raises(ValueError):
        od.predicted_order_loss_gap(la, lb, le, theta, -0.1)
    with pytest.raises(ValueError):
        ib.bracket_corrected_steps([la, lb], theta, 0.1, at="middle")
    with pytest.raises(ValueError):
        continual.bracket_sum([la], theta)
    with pytest.raises(TypeError):
        od.train_in_order(la, theta, 0.1)


def test_block_order_gaps_match_order_loss_gap():
    (_, _, _), (la, lb, le) = _quads()
    lc = ib.data.quadratic_loss(*ib.data.random_quadratic(5, 7))
    theta = _theta()
    out = od.block_order_gaps([la, lb, lc], [(0, 1), (2, 1)], {"e": le}, theta, 0.05, [1, 3])
    for k in (1, 3):
        assert out[k]["e"][0] == pytest.approx(od.order_loss_gap(la, lb, le, theta, 0.05, k), rel=1e-12)
        assert out[k]["e"][1] == pytest.approx(od.order_loss_gap(lc, lb, le, theta, 0.05, k), rel=1e-12)
    # pair-dependent evaluations
    out = od.block_order_gaps([la, lb], [(0, 1)], lambda a, b: {"own": [la, lb][a]}, theta, 0.05, [2])
    assert out[2]["own"][0] == pytest.approx(od.order_loss_gap(la, lb, la, theta, 0.05, 2), rel=1e-12)


def test_blocked_replay_one_step_blocks_is_corrected_sequential():
    (_, _, _), (la, lb, _) = _quads()
    theta = _theta()
    corrected, hist = od.blocked_replay(la, lb, theta, 0.05, 1, 3, correct=True)
    manual = theta
    for _ in range(3):
        manual = ib.bracket_corrected_steps([la, lb], manual, 0.05, at="start")
    assert torch.allclose(corrected, manual, atol=1e-13)
    plain, hist0 = od.blocked_replay(la, lb, theta, 0.05, 2, 2)
    assert torch.allclose(plain, od.train_in_order([la, lb, la, lb], theta, 0.05, 2))
    assert hist0["ratio"] == [0.0, 0.0] and all(r > 0 for r in hist["ratio"])
    with pytest.raises(ValueError):
        od.blocked_replay(la, lb, theta, 0.05, 0, 2)
