"""Tests of ibea_lib.book.multitask against closed forms and independent computations."""

from __future__ import annotations

import pytest
import torch

import ibea_lib as ib
from ibea_lib.book.multitask import (
    alternating_update,
    conflict_free_update,
    conflict_gradient,
    digits_two_tasks,
    head_accuracies,
    head_losses,
    pcgrad_update,
    product_tasks,
    relabel,
    summed_update,
    task_metrics,
)

f64 = torch.float64


def quadratic_tasks(seed: int = 0, d: int = 4):
    (A1, b1), (A2, b2) = ib.data.random_quadratic(d, seed), ib.data.random_quadratic(d, seed + 1)
    return (A1, b1, A2, b2), [ib.data.quadratic_loss(A1, b1), ib.data.quadratic_loss(A2, b2)]


def test_conflict_free_loss_closed_form():
    (A1, b1, A2, b2), losses = quadratic_tasks()
    theta = torch.randn(4, dtype=f64, generator=torch.Generator().manual_seed(3))
    h = 0.3
    g1, g2 = A1 @ theta + b1, A2 @ theta + b2
    expected = losses[0](theta) + losses[1](theta) - h / 2 * g1 @ g2
    assert torch.allclose(ib.conflict_free_loss(losses, theta, h), expected, atol=1e-12)


def test_flatness_and_conflict_gradient_closed_form():
    (A1, b1, A2, b2), losses = quadratic_tasks(seed=5)
    theta = torch.randn(4, dtype=f64, generator=torch.Generator().manual_seed(1))
    h = 0.2
    g1, g2 = A1 @ theta + b1, A2 @ theta + b2
    expected_field = -(g1 + g2) - h / 2 * (A1 @ g1 + A2 @ g2)
    assert torch.allclose(ib.order_averaged_field(losses, theta, h), expected_field, atol=1e-12)
    assert torch.allclose(conflict_gradient(losses, theta), A1 @ g2 + A2 @ g1, atol=1e-12)
    # the multitask field is the flatness field minus (h/2)∇⟨g1, g2⟩
    diff = ib.multitask_field(losses, theta, h) - ib.order_averaged_field(losses, theta, h)
    assert torch.allclose(diff, -h / 2 * conflict_gradient(losses, theta), atol=1e-12)


def test_conflict_free_step_matches_mean_of_orders_to_third_order():
    la, lb = product_tasks(1.0, 3.0)
    theta = torch.tensor([0.7, 1.9], dtype=f64)
    lrs = [0.02, 0.01, 0.005]
    gaps = []
    for h in lrs:
        mean = (ib.sequential_steps([la, lb], theta, h) + ib.sequential_steps([lb, la], theta, h)) / 2
        cf = ib.gd_step(lambda p, h=h: ib.conflict_free_loss([la, lb], p, h), theta, h)
        gaps.append(float((mean - cf).norm()))
    assert ib.fit_order(lrs, gaps) > 2.8


def test_conflict_free_gd_follows_flatness_field():
    la, lb = product_tasks(1.0, 3.0)
    theta = torch.tensor([0.7, 1.9], dtype=f64)
    lrs = ib.geometric_lrs(0.02, 4)

    def step(p, h):
        return ib.gd_step(lambda q: ib.conflict_free_loss([la, lb], q, h), p, h)

    good = ib.local_errors(step, lambda p, h: ib.order_averaged_field([la, lb], p, h), theta, lrs, steps=8)
    bad = ib.local_errors(step, lambda p, h: ib.multitask_field([la, lb], p, h), theta, lrs, steps=8)
    assert ib.fit_order(lrs, good) > 2.8
    assert ib.fit_order(lrs, bad) < 2.3


def test_product_tasks_valley_cancellation():
    la, lb = product_tasks(1.0, 3.0)
    point = torch.tensor([0.5, 4.0], dtype=f64)  # x·y = 2 = (a + b)/2
    t = ib.multitask_terms([la, lb], point, 0.1)
    assert abs(float(t["flatness"] + t["conflict"])) < 1e-12
    assert float(t["flatness"]) == pytest.approx(0.1 / 2 * 1.0 * float(point @ point))


def test_pcgrad_two_tasks():
    ga, gb = torch.tensor([1.0, 0.0, 0.0], dtype=f64), torch.tensor([-1.0, 2.0, 0.0], dtype=f64)
    pa, pb = ib.pcgrad([ga, gb])
    c = float(ga @ gb)
    assert torch.allclose(pa, ga - c / float(gb @ gb) * gb)
    assert torch.allclose(pb, gb - c / float(ga @ ga) * ga)
    assert abs(float(pa @ gb)) < 1e-12 and abs(float(pb @ ga)) < 1e-12
    # no conflict: unchanged
    qa, qb = ib.pcgrad([ga, -gb])
    assert torch.equal(qa, ga) and torch.equal(qb, -gb)


def test_pcgrad_dicts_and_errors():
    g = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0])}
    h = {"w": torch.tensor([-1.0, 1.0]), "b": torch.tensor([0.0])}
    pa, pb = ib.pcgrad([g, h], seed=0)
    assert abs(float(ib.dot(pa, h))) < 1e-6 and set(pa) == {"w", "b"}
    with pytest.raises(ValueError):
        ib.pcgrad([g])
    with pytest.raises(TypeError):
        ib.pcgrad([g, [1.0]])


def test_updates_match_definitions():
    la, lb = product_tasks(1.0, 3.0)
    theta = torch.tensor([0.7, 1.9], dtype=f64)
    h = 0.05
    summed = ib.gd_step(ib.sum_losses([la, lb]), theta, h)
    assert torch.allclose(summed_update([la, lb], h)(theta, 1), summed)
    cf = ib.gd_step(lambda p: ib.conflict_free_loss([la, lb], p, h), theta, h)
    assert torch.allclose(conflict_free_update([la, lb], h)(theta, 1), cf)
    fixed = alternating_update([la, lb], h)(theta, 1)
    assert torch.allclose(fixed, ib.sequential_steps([la, lb], theta, h))
    rnd = alternating_update([la, lb], h, order="random", seed=0)
    ends = {tuple(rnd(theta, k).tolist()) for k in range(20)}
    orders = {tuple(ib.sequential_steps(o, theta, h).tolist()) for o in ([la, lb], [lb, la])}
    assert ends == orders  # both orders occur, nothing else
    # gradients of the product tasks are parallel: PCGrad on conflicting ones zeroes the sum
    ga, gb = ib.grad(la, theta), ib.grad(lb, theta)
    if float(ga @ gb) < 0:
        pc = pcgrad_update([la, lb], h)(theta, 1)
        assert torch.allclose(pc, theta, atol=1e-12)
    with pytest.raises(ValueError):
        alternating_update([la, lb], h, order="sorted")
    with pytest.raises(ValueError):
        summed_update([la], h)
    with pytest.raises(ValueError):
        conflict_free_update([la, lb], -1.0)


def test_task_metrics_consistency():
    (_, _, _, _), losses = quadratic_tasks(seed=2)
    theta = torch.randn(4, dtype=f64, generator=torch.Generator().manual_seed(0))
    m = task_metrics(losses, theta)
    assert m["alignment_01"] == pytest.approx(float(ib.alignment(*losses, theta)))
    assert m["cosine_01"] == pytest.approx(float(ib.cosine(*losses, theta)))
    assert m["sum_grad_sq"] == pytest.approx(m["grad_sq_0"] + m["grad_sq_1"] + 2 * m["alignment_01"])


def test_relabel_and_digits_two_tasks():
    y = torch.arange(10)
    assert relabel(y, "parity")[0].tolist() == [0, 1] * 5
    assert relabel(y, "ge5")[0].tolist() == [0] * 5 + [1] * 5
    labels, n = relabel(y, "mod3")
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0] and n == 3
    assert sorted(relabel(y, "shuffled")[0].tolist()) == list(range(10))
    with pytest.raises(ValueError):
        relabel(y, "colour")
    split = ib.data.digits()
    tt = digits_two_tasks(split, "class", "ge5")
    assert torch.equal(tt.y_train[0], split.y_train)
    assert torch.equal(tt.y_train[1], (split.y_train >= 5).long())
    assert tt.n_classes == (10, 2)
    with pytest.raises(TypeError):
        digits_two_tasks("digits")


def test_head_losses_and_accuracies():
    split = ib.data.digits()
    model = ib.models.MultiHeadMLP([64, 8], [10, 2], seed=0)
    x, y = split.x_train[:50], split.y_train[:50]
    ys = [y, (y >= 5).long()]
    la, lb = head_losses(model, x, ys)
    params = ib.params_of(model)
    outs = model(x)
    assert torch.allclose(la(params), torch.nn.functional.cross_entropy(outs[0], ys[0]))
    assert torch.allclose(lb(params), torch.nn.functional.cross_entropy(outs[1], ys[1]))
    accs = head_accuracies(model, params, x, ys)
    assert accs[0] == pytest.approx(ib.book.training.accuracy(outs[0], ys[0]))
    with pytest.raises(ValueError):
        head_losses(model, x, [y[:10]])


def test_valley_decay_rate_of_conflict_free_gd():
    """Chapter 04: on the valley xy = μ, conflict-free GD shrinks k = x² − y² by (1 − h²δ²)² per step,
    plain GD leaves it unchanged (other targets and step than the chapter)."""
    a, b, h = 0.5, 2.5, 0.04
    mu, delta = (a + b) / 2, (b - a) / 2
    theta = torch.tensor([2.0, mu / 2.0], dtype=f64)  # on the valley
    tasks = list(product_tasks(a, b))
    for conflict_free, factor in ((True, (1 - h**2 * delta**2) ** 2), (False, 1.0)):
        p = theta
        for _ in range(5):
            k0 = float(p[0] ** 2 - p[1] ** 2)
            if conflict_free:
                p = ib.gd_step(lambda q: ib.conflict_free_loss(tasks, q, h), p, h)
            else:
                p = ib.gd_step(ib.sum_losses(tasks), p, h)
            k1 = float(p[0] ** 2 - p[1] ** 2)
            assert k1 / k0 == pytest.approx(factor, rel=1e-3)
