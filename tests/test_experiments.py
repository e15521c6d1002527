"""Tests of ibea_lib.book.experiments against closed forms and independent computations."""

import math

import pytest
import torch

import ibea_lib as ib
import ibea_lib.book.experiments  # noqa: F401
from ibea_lib import sgd_modified_loss
from ibea_lib.book.experiments import (
    gd_update,
    microbatch_penalty,
    modified_gd_update,
    pick_scale,
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


def _toy_split(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    xt = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    yt = torch.randint(0, 3, (10,), generator=gen)
    return ib.data.Split(x, y, xt, yt)


def _toy_model(seed=0):
    return ib.models.mlp([5, 6, 3], "tanh", seed=seed, dtype=torch.float64)


def test_top_eigenvalue_quadratic_and_warm_start():
    from ibea_lib.book.experiments import top_eigenvalue

    A, b = ib.data.random_quadratic(7, seed=2, spread=4.0)
    loss = ib.data.quadratic_loss(A, b)
    theta = torch.zeros(7, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(A)
    lam, v = top_eigenvalue(loss, theta, iters=300)
    assert lam.dim() == 0 and float(lam) == pytest.approx(float(evals[-1]), rel=1e-8)
    assert abs(float(v @ evecs[:, -1])) == pytest.approx(1.0, abs=1e-6)
    # started at the eigenvector, one iteration is exact
    lam1, _ = top_eigenvalue(loss, theta, iters=1, init=evecs[:, -1].clone())
    assert float(lam1) == pytest.approx(float(evals[-1]), rel=1e-12)
    # on a network: the Rayleigh quotient agrees with one independent ib.hvp
    model, x, y = small_problem()
    f = ib.model_loss(model, CE, x, y)
    p = ib.params_of(model)
    lam, v = top_eigenvalue(f, p, iters=200)
    hv = ib.hvp(f, p, v)
    assert float(ib.dot(v, hv)) == pytest.approx(float(lam), rel=1e-6)
    assert float(ib.norm(ib.sub(hv, ib.scale(v, float(lam))))) < 1e-3 * abs(float(lam))


def test_train_to_loss_full_batch_is_gd_until_threshold():
    from ibea_lib.book.experiments import train_to_loss

    split, model = _toy_split(), _toy_model()
    loss = ib.model_loss(model, CE, split.x_train, split.y_train)
    theta, k = ib.params_of(model), 0
    threshold = 0.9 * float(loss(theta))
    while float(loss(theta)) >= threshold:
        theta = ib.gd_step(loss, theta, 0.3)
        k += 1
    r = train_to_loss(model, CE, split, lr=0.3, threshold=threshold, max_steps=10_000, progress=False)
    assert bool(r["reached"]) and not bool(r["diverged"]) and int(r["steps"]) == k
    assert float(r["time"]) == pytest.approx(0.3 * k)
    assert float(r["train_loss"]) == pytest.approx(float(loss(theta)), rel=1e-10)
    g = ib.grad(loss, theta)
    assert float(r["grad_norm2"]) == pytest.approx(float(ib.dot(g, g)), rel=1e-8)
    test_loss = ib.model_loss(model, CE, split.x_test, split.y_test)(theta)
    assert float(r["test_loss"]) == pytest.approx(float(test_loss), rel=1e-10)
    assert len(r["history"]["loss"]) == k + 1 and float(r["history"]["loss"][-1]) < threshold
    # the caller's model is not changed
    assert all(torch.equal(a, b) for a, b in zip(ib.params_of(model).values(), model.state_dict().values()))
    # a step far beyond the stability limit is reported as divergence, not as an error
    bad = train_to_loss(model, CE, split, lr=500.0, threshold=1e-3, max_steps=200, progress=False)
    assert bool(bad["diverged"]) and not bool(bad["reached"])


def test_train_to_loss_grad_norm_penalty_is_gd_on_modified_loss():
    from ibea_lib.book.experiments import train_to_loss

    split, model = _toy_split(), _toy_model(1)
    loss = ib.model_loss(model, CE, split.x_train, split.y_train)
    theta = ib.params_of(model)
    for _ in range(4):
        g = ib.grad(lambda p: ib.modified_loss(loss, p, 0.8), theta)
        theta = ib.add(theta, g, alpha=-0.2)
    r = train_to_loss(model, CE, split, lr=0.2, reg_lr=0.8, threshold=1e-9, max_steps=4, progress=False)
    assert int(r["steps"]) == 4 and not bool(r["reached"])
    assert float(ib.norm(ib.sub(r["params"], theta))) < 1e-12


@pytest.mark.parametrize("penalty", ["micro", "micro_variance"])
def test_train_to_loss_micro_penalties_match_sgd_modified_loss(penalty):
    from ibea_lib.book.experiments import train_to_loss

    split, model = _toy_split(n=24), _toy_model(2)
    x, y = split.x_train, split.y_train
    full = ib.model_loss(model, CE, x, y)
    theta = ib.params_of(model)
    lam, h = 0.6, 0.25
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):  # full batch: a fresh random partition into micro-batches at every step
        perm = torch.randperm(24, generator=gen)
        micro = [ib.model_loss(model, CE, x[perm[i : i + 6]], y[perm[i : i + 6]]) for i in range(0, 24, 6)]

        def objective(p, micro=micro):
            # sgd_modified_loss = mean micro loss (= L) + (λ/4)·mean ‖∇L_j‖²
            out = ib.sgd_modified_loss(micro, p, lam)
            if penalty == "micro_variance":
                out = out - (ib.modified_loss(full, p, lam) - full(p))
            return out

        theta = ib.add(theta, ib.grad(objective, theta), alpha=-h)
    r = train_to_loss(
        model,
        CE,
        split,
        lr=h,
        reg_lr=lam,
        penalty=penalty,
        micro_size=6,
        seed=7,
        threshold=1e-9,
        max_steps=3,
        progress=False,
    )
    assert float(ib.norm(ib.sub(r["params"], theta))) < 1e-12


def test_train_to_loss_minibatches_reshuffle_and_check_every():
    from ibea_lib.book.experiments import train_to_loss

    split, model = _toy_split(n=24), _toy_model(3)
    x, y = split.x_train, split.y_train
    theta = ib.params_of(model)
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):  # 3 epochs of 2 batches of 12
        perm = torch.randperm(24, generator=gen)
        for idx in (perm[:12], perm[12:]):
            theta = ib.gd_step(ib.model_loss(model, CE, x[idx], y[idx]), theta, 0.4)
    r = train_to_loss(
        model,
        CE,
        split,
        lr=0.4,
        batch_size=12,
        seed=5,
        threshold=1e-9,
        max_steps=6,
        check_every=4,
        progress=False,
    )
    assert float(ib.norm(ib.sub(r["params"], theta))) < 1e-12
    assert r["history"]["step"].tolist() == [0, 4, 6]
    with pytest.raises(ValueError, match="micro_size"):
        train_to_loss(
            model, CE, split, lr=0.1, threshold=0.1, max_steps=1, reg_lr=0.1, penalty="micro", progress=False
        )
    with pytest.raises(ValueError, match="multiple"):
        train_to_loss(
            model,
            CE,
            split,
            lr=0.1,
            threshold=0.1,
            max_steps=1,
            reg_lr=0.1,
            penalty="micro",
            micro_size=5,
            progress=False,
        )
    with pytest.raises(ValueError, match="penalty"):
        train_to_loss(model, CE, split, lr=0.1, threshold=0.1, max_steps=1, penalty="l2", progress=False)
    with pytest.raises(ValueError, match="exceeds"):
        train_to_loss(model, CE, split, lr=0.1, threshold=0.1, max_steps=1, batch_size=25, progress=False)


def test_gap_fractions_and_the_interval_format():
    from ibea_lib.book.experiments import gap_fractions
    from ibea_lib.book.stats import format_interval, t_interval

    iv = t_interval([1.0, 2.0, 3.0])
    t975_2df = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # t quantile, 2 df, closed form (2p−1)/√(2p(1−p))
    assert iv["lo"] == pytest.approx(2 - t975_2df / math.sqrt(3), rel=1e-12)
    assert format_interval(iv, scale=10, digits=0) == "20 [-5, 45]"
    f = gap_fractions([0.6, 0.5], [0.65, 0.5], [0.7, 0.6])
    assert f.tolist() == pytest.approx([0.5, 0.0])
    with pytest.raises(ValueError):
        gap_fractions([0.6], [0.6, 0.7], [0.8])


def test_cnn1d_shapes_seed_and_conv_arithmetic():
    from ibea_lib.book.experiments import cnn1d

    net = cnn1d(40, 6, seed=3)
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    assert net(x).shape == (5, 10)
    again = cnn1d(40, 6, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))
    assert not torch.equal(next(cnn1d(40, 6, seed=4).parameters()), next(net.parameters()))
    state = torch.get_rng_state()
    cnn1d(seed=1)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    # the first layer is a strided correlation with zero padding 2, written out by hand
    conv = net[1]
    xp = torch.nn.functional.pad(x, (2, 2))
    w = conv.weight[None, :, 0, :]
    by_hand = torch.stack([(xp[:, None, 2 * j : 2 * j + 5] * w).sum(-1) + conv.bias for j in range(20)], -1)
    assert torch.allclose(net[:2](x), by_hand, atol=1e-6)
    assert cnn1d(41, 2)(torch.zeros(2, 41)).shape == (2, 10)
    with pytest.raises(ValueError):
        cnn1d(40, 0)


def test_outcomes_counts_every_seed_with_wilson_intervals():
    from ibea_lib.book.experiments import outcomes
    from ibea_lib.book.stats import wilson_interval

    t, f = torch.tensor(True), torch.tensor(False)
    res = {
        ("a", 0): {"reached": t, "diverged": f},
        ("a", 1): {"reached": f, "diverged": t},
        ("a", 2): {"reached": f, "diverged": f},
        ("a", 3): {"reached": t, "diverged": f},
    }
    o = outcomes(res, "a", [0, 1, 2, 3])
    assert (o["n"], o["reached"], o["diverged"], o["stalled"]) == (4, 2, 1, 1)
    assert o["ok"] == [0, 3]
    assert o["diverged_ci"] == wilson_interval(1, 4) and o["reached_ci"] == wilson_interval(2, 4)
    with pytest.raises(ValueError):
        outcomes(res, "a", [])
