"""Tests of ibea_lib.book.experiments against closed forms and independent computations."""

import math

import pytest
import torch

import ibea_lib as ib
import ibea_lib.book.experiments  # noqa: F401
from ibea_lib import sgd_modified_loss
from ibea_lib.book.experiments import (
    at_levels,
    format_table,
    gd_update,
    microbatch_penalty,
    modified_gd_update,
    pick_scale,
    sgd_train,
    summarize,
    trajectory,
)

CE = torch.nn.functional.cross_entropy


def small_problem(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    model = ib.models.mlp([5, 4, 3], seed=seed, dtype=torch.float64)
    return model, x, y


def test_pick_scale():
    cpu, gpu = {"width": 32, "seeds": 3}, {"width": 256}
    assert pick_scale("cpu", cpu, gpu) == cpu
    assert pick_scale("gpu", cpu, gpu) == {"width": 256, "seeds": 3}
    with pytest.raises(ValueError, match="scale must be"):
        pick_scale("tpu", cpu, gpu)
    with pytest.raises(ValueError, match="lacks"):
        pick_scale("gpu", cpu, {"widht": 3})


def test_at_levels_exponential_closed_form():
    # loss(t) = e^{-t}, value(t) = 3 e^{-2t}: at loss ℓ the value is 3 ℓ² (exact in log-log)
    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    losses, values = torch.exp(-t), 3 * torch.exp(-2 * t)
    levels = [0.5, 0.1, 0.02, 1e-4, 2.0]
    got = at_levels(losses.tolist(), values.tolist(), levels)
    for level, v in zip(levels[:3], got[:3]):
        assert v == pytest.approx(3 * level**2, rel=1e-12)
    assert math.isnan(got[3]) and math.isnan(got[4])  # never reached / reached at the start


def test_at_levels_linear_and_first_crossing():
    # non-monotone curve: the first crossing counts
    losses = [4.0, 2.0, 3.0, 1.0]
    values = [10.0, 20.0, 30.0, 40.0]
    assert at_levels(losses, values, [3.0], log=False) == [pytest.approx(15.0)]
    assert at_levels(losses, values, [1.5], log=False) == [pytest.approx(37.5)]
    with pytest.raises(ValueError):
        at_levels([1.0], [1.0], [0.5])
    with pytest.raises(ValueError, match="positive"):
        at_levels([1.0, -1.0], [1.0, 1.0], [0.5])


def test_modified_gd_update_matches_gd_field():
    # θ − h∇(L + (H/4)‖∇L‖²) = θ + h·gd_field(L, θ, H), computed independently by bea.gd_field
    model, x, y = small_problem()
    loss = ib.model_loss(model, CE, x, y)
    theta = ib.params_of(model)
    h, big = 0.1, 0.7
    got = modified_gd_update(loss, h, big)(theta, 1)
    expected = ib.add(theta, ib.gd_field(loss, theta, big), alpha=h)
    assert float(ib.norm(ib.sub(got, expected))) < 1e-12
    plain = gd_update(loss, h)(theta, 1)
    assert float(ib.norm(ib.sub(plain, ib.gd_step(loss, theta, h)))) < 1e-14
    # the regularizer changes the step
    assert float(ib.norm(ib.sub(got, plain))) > 1e-6


def test_trajectory_quadratic_closed_form():
    # L = ½ a θ², GD: θ_k = (1 − h a)^k θ_0; ‖∇L‖² = a² θ²
    a, h, theta0 = 2.0, 0.1, torch.tensor([1.5], dtype=torch.float64)
    f64 = torch.float64
    loss = ib.data.quadratic_loss(torch.tensor([[a]], dtype=f64), torch.zeros(1, dtype=f64))
    hist, snaps = trajectory(loss, theta0, h, 1.0, record_dt=0.2, snapshot_times=[0.0, 0.5], progress=False)
    assert hist["t"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    for t, L, g2 in zip(hist["t"], hist["loss"], hist["grad_norm2"]):
        th = (1 - h * a) ** round(t / h) * 1.5
        assert L == pytest.approx(0.5 * a * th**2, rel=1e-12)
        assert g2 == pytest.approx(a**2 * th**2, rel=1e-12)
    assert float(snaps[0.5]) == pytest.approx((1 - h * a) ** 5 * 1.5, rel=1e-12)
    # modified GD on a quadratic: L̃ = ½ a(1 + H a/2) θ², so θ_k = (1 − h a(1 + H a/2))^k θ_0
    big = 0.4
    hist2, snaps2 = trajectory(loss, theta0, h, 1.0, reg_lr=big, snapshot_times=[1.0], progress=False)
    assert float(snaps2[1.0]) == pytest.approx((1 - h * a * (1 + big * a / 2)) ** 10 * 1.5, rel=1e-10)
    with pytest.raises(ValueError, match="multiple"):
        trajectory(loss, theta0, h, 1.05, progress=False)
    with pytest.raises(ValueError, match="snapshot"):
        trajectory(loss, theta0, h, 1.0, snapshot_times=[0.33], progress=False)


def test_microbatch_penalty_matches_sgd_modified_loss():
    model, x, y = small_problem(n=24)
    params = ib.params_of(model)
    micro, lr = 6, 0.3
    penalty = microbatch_penalty(model, CE, x, y, micro)(params)
    losses = [ib.model_loss(model, CE, x[i : i + micro], y[i : i + micro]) for i in range(0, 24, micro)]
    mean_loss = sum(f(params) for f in losses) / len(losses)
    reference = sgd_modified_loss(losses, params, lr)
    assert float(mean_loss + (lr / 4) * penalty) == pytest.approx(float(reference), rel=1e-12)
    # by hand: mean of squared gradient norms
    by_hand = sum(float(ib.dot(g, g)) for g in (ib.grad(f, params) for f in losses)) / 4
    assert float(penalty) == pytest.approx(by_hand, rel=1e-12)
    # differentiable: its gradient matches a finite difference along a direction
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(microbatch_penalty(model, CE, x, y, micro)(leaves), list(leaves.values()))
    v = {k: torch.randn_like(t) for k, t in params.items()}
    eps = 1e-6
    f = microbatch_penalty(model, CE, x, y, micro)
    fd = (f(ib.add(params, v, alpha=eps)) - f(ib.add(params, v, alpha=-eps))) / (2 * eps)
    directional = sum((g * v[k]).sum() for g, k in zip(grads, params))
    assert float(directional) == pytest.approx(float(fd), rel=1e-6)
    with pytest.raises(ValueError, match="micro-batches"):
        microbatch_penalty(model, CE, x, y, 5)


def test_sgd_train_full_batch_is_gd_and_checks_input():
    model, x, y = small_problem(n=24)
    split = ib.data.Split(x, y, x, y)
    theta0 = ib.params_of(model)
    # one full batch, plain: the same as 5 GD steps
    result = sgd_train(model, CE, split, batch_size=24, lr=0.5, steps=5, seed=0, progress=False)
    loss = ib.model_loss(model, CE, x, y)
    theta = theta0
    for _ in range(5):
        theta = ib.gd_step(loss, theta, 0.5)
    assert result["train_loss"] == pytest.approx(float(loss(theta)), rel=1e-10)
    # full batch with the regularizer on micro-batches = GD on sgd_modified_loss
    result = sgd_train(
        model, CE, split, batch_size=24, lr=0.5, steps=3, seed=0, reg_lr=0.4, micro_size=8, progress=False
    )
    # each epoch (here: each step) cuts a fresh permutation into micro-batches of 8
    gen = torch.Generator().manual_seed(0)
    theta = theta0
    for _ in range(3):
        perm = torch.randperm(24, generator=gen)
        losses = [ib.model_loss(model, CE, x[perm[i : i + 8]], y[perm[i : i + 8]]) for i in range(0, 24, 8)]
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        grads = torch.autograd.grad(sgd_modified_loss(losses, leaves, 0.4), list(leaves.values()))
        theta = {k: v - 0.5 * g for (k, v), g in zip(theta.items(), grads)}
    assert result["train_loss"] == pytest.approx(float(loss(theta)), rel=1e-10)
    with pytest.raises(ValueError, match="micro_size"):
        sgd_train(model, CE, split, batch_size=24, lr=0.5, steps=1, seed=0, reg_lr=0.1, progress=False)
    with pytest.raises(ValueError, match="multiple"):
        sgd_train(
            model, CE, split, batch_size=24, lr=0.5, steps=1, seed=0, reg_lr=0.1, micro_size=5, progress=False
        )
    with pytest.raises(ValueError, match="exceeds"):
        sgd_train(model, CE, split, batch_size=25, lr=0.5, steps=1, seed=0, progress=False)


def test_sgd_train_reshuffles_every_epoch():
    # with batch 12 of 24 examples, two steps make one epoch that visits every example once:
    # for a linear least-squares model the two-step result can be checked by hand
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(24, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(24, 1, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(2, 1, bias=False).double()
    mse = torch.nn.functional.mse_loss
    split = ib.data.Split(x, y, x, y)
    w0 = model.weight.detach().clone()
    result = sgd_train(model, mse, split, batch_size=12, lr=0.1, steps=2, seed=5, progress=False)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(5))
    w = w0.clone()
    for idx in (perm[:12], perm[12:]):
        xb, yb = x[idx], y[idx]
        g = 2 * (xb @ w.T - yb).T @ xb / 12
        w = w - 0.1 * g
    assert result["train_loss"] == pytest.approx(float(mse(x @ w.T, y)), rel=1e-12)


def test_summarize_and_format():
    rows = [{"B": b, "seed": s, "acc": 0.9 + 0.01 * s + 0.1 * (b == 8)} for b in (8, 64) for s in range(4)]
    summary = summarize(rows, ["B"], ["acc"])
    assert [r["B"] for r in summary] == [8, 64]
    vals = torch.tensor([0.9 + 0.01 * s for s in range(4)], dtype=torch.float64)
    assert summary[1]["acc"] == pytest.approx(float(vals.mean()))
    assert summary[1]["acc_se"] == pytest.approx(float(vals.std() / 2))
    assert summary[0]["n"] == 4
    text = format_table(summary, ["B"], ["acc"], digits=2, scale={"acc": 100})
    assert "101.50 ± 0.65" in text and text.splitlines()[0].split() == ["B", "acc"]
    with pytest.raises(KeyError):
        summarize([{"B": 1}], ["B"], ["acc"])
    with pytest.raises(ValueError):
        summarize([], ["B"], ["acc"])


def test_sharpness_quadratic():
    A, b = ib.data.random_quadratic(6, seed=1, spread=3.0)
    loss = ib.data.quadratic_loss(A, b)
    lam = ib.book.experiments.sharpness(loss, torch.zeros(6, dtype=torch.float64), iters=200)
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(A)[-1]), rel=1e-6)
