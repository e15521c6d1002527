"""Tests of ibea_lib.book.forgetting (moved from ibea_lib.book.continual) against closed forms."""

import pytest
import torch

import ibea_lib as ib
from ibea_lib.book import forgetting as fg


def _quads(d=4, seeds=(1, 2, 3)):
    tasks = [ib.data.random_quadratic(d, s) for s in seeds]
    return tasks, [ib.data.quadratic_loss(A, b) for A, b in tasks]


def test_forgetting_terms_predict_one_step():
    (ta, tb, _), (la, lb, _) = _quads()
    theta = torch.linalg.solve(ta[0], -ta[1])  # minimum of task A
    errs = []
    for h in (0.04, 0.02, 0.01):
        t = fg.forgetting_terms(la, lb, theta, h)
        assert abs(t["first"]) < 1e-12
        assert t["second"] == pytest.approx(t["bracket_part"], rel=1e-10)
        actual = float(la(ib.gd_step(lb, theta, h)) - la(theta))
        errs.append(abs(actual - t["predicted"]))
    assert max(errs) < 1e-12  # exact for quadratics (L_A is quadratic)


def test_start_measures_closed_form_on_quadratics():
    (ta, tb, _), (la, lb, _) = _quads()
    theta = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    h = 0.3
    m = fg.start_measures(la, lb, theta, h)
    ga, gb = ta[0] @ theta + ta[1], tb[0] @ theta + tb[1]
    br = tb[0] @ ga - ta[0] @ gb
    assert m["bracket_norm"] == pytest.approx(float(br.norm()), rel=1e-12)
    assert m["bracket_part"] == pytest.approx(-h * h / 2 * float(gb @ br), rel=1e-12)
    assert m["curvature_part"] == pytest.approx(h * h / 2 * float(gb @ ta[0] @ gb), rel=1e-12)
    assert m["grad_norm_b"] == pytest.approx(float(gb.norm()), rel=1e-12)
    assert m["loss_b"] == pytest.approx(float(lb(theta)), rel=1e-12)
    assert m["cosine"] == pytest.approx(float(ga @ gb / (ga.norm() * gb.norm())), rel=1e-12)


def test_schedule_stages():
    losses = [lambda p, k=k: (p * k).sum() for k in range(3)]
    sched = fg.schedule(losses, 9)
    assert [losses.index(sched(s)) for s in range(1, 10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError):
        fg.schedule(losses, 2)


def test_train_phase_matches_manual_gd_and_records():
    data = ib.data.mnist1d(num_samples=200)
    net = ib.models.mlp([40, 5, 10], "tanh", seed=0)
    la, _ = fg.classification_losses(net, data)
    rev = data.map_inputs(lambda x: x.flip(-1))
    lb, _ = fg.classification_losses(net, rev)
    p0 = ib.params_of(net)
    p, hist = fg.train_phase(net, p0, lb, 0.3, 4, watch=(la, data), every=2, progress=False)
    q = p0
    for _ in range(4):
        q = ib.gd_step(lb, q, 0.3)
    assert all(torch.allclose(p[k], q[k]) for k in p)
    assert hist["step"] == [0.0, 2.0, 4.0]
    assert hist["bracket"][0] == pytest.approx(float(ib.norm(ib.lie_bracket(la, lb, p0))), rel=1e-5)
    assert hist["loss_a"][0] == pytest.approx(fg.evaluate_task(net, p0, data)["loss"])
    # a schedule of one loss is the same as the loss
    p2, _ = fg.train_phase(net, p0, fg.schedule([lb], 4), 0.3, 4, progress=False)
    assert all(torch.allclose(p[k], p2[k]) for k in p)
    assert fg.forgetting({"loss": 1.0, "acc": 0.9}, {"loss": 1.5, "acc": 0.7}) == pytest.approx(
        {"loss_increase": 0.5, "acc_drop": 0.2}
    )


def test_bad_inputs():
    with pytest.raises(TypeError):
        fg.train_phase(None, torch.zeros(2), 3.0, 0.1, 2)
    with pytest.raises(ValueError):
        fg.forgetting_terms(lambda p: p.sum(), lambda p: p.sum(), torch.zeros(2), -1.0)
