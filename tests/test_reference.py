"""ibea_lib against independent references, in float64 (relative error < 1e-8).

References: explicit gradients and Hessians of the flattened loss
(``torch.autograd.functional``) on a small MLP with dict params, and closed forms on
quadratics with single-tensor params.
"""

from __future__ import annotations

import math

import pytest
import torch
from ibea_refs import (
    F64,
    explicit_grad,
    explicit_hessian,
    flat,
    mlp_problem,
    quadratic,
    rel_err,
    same_structure,
)

import ibea_lib as ib

TOL = 1e-8
H = 0.1  # a learning rate for the formulas that have one


def explicit(problem):
    """Explicit (g_i, H_i) for each task of an MLP problem, on flat vectors."""
    return [(explicit_grad(f, problem.params), explicit_hessian(f, problem.params)) for f in problem.losses]


# ----- gradients and Hessian-vector products ------------------------------------------------------


def test_grad_and_value_mlp(mlp2):
    f = mlp2.losses[0]
    value, g = ib.value_and_grad(f, mlp2.params)
    same_structure(g, mlp2.params)
    assert rel_err(g, explicit_grad(f, mlp2.params)) < TOL
    assert float(value) == pytest.approx(float(f(mlp2.params)), rel=1e-14)
    assert not value.requires_grad and not any(t.requires_grad for t in g.values())


def test_grad_quadratic_closed_form():
    A, b, f = quadratic(5, seed=1)
    th = torch.randn(5, dtype=F64)
    g = ib.grad(f, th)
    same_structure(g, th)
    assert rel_err(g, A @ th + b) < TOL


def test_hvp_mlp_vs_explicit_hessian(mlp2):
    f = mlp2.losses[1]
    gen = torch.Generator().manual_seed(3)
    v = {k: torch.randn(p.shape, generator=gen, dtype=F64) for k, p in mlp2.params.items()}
    hv = ib.hvp(f, mlp2.params, v)
    same_structure(hv, mlp2.params)
    assert rel_err(hv, explicit_hessian(f, mlp2.params) @ flat(v)) < TOL


def test_hvp_quadratic_closed_form():
    A, _, f = quadratic(6, seed=2)
    th, v = torch.randn(6, dtype=F64), torch.randn(6, dtype=F64)
    assert rel_err(ib.hvp(f, th, v), A @ v) < TOL


# ----- brackets, alignment, cosine --------------------------------------------------------------


def test_lie_bracket_mlp_vs_explicit_hessians(mlp2):
    (ga, Ha), (gb, Hb) = explicit(mlp2)
    br = ib.lie_bracket(*mlp2.losses, mlp2.params)
    same_structure(br, mlp2.params)
    reference = Hb @ ga - Ha @ gb
    assert reference.norm() > 1e-3 * (ga.norm() * gb.norm())  # a non-trivial bracket
    assert rel_err(br, reference) < TOL


def test_lie_bracket_quadratic_closed_form():
    Aa, ba, fa = quadratic(5, seed=3)
    Ab, bb, fb = quadratic(5, seed=4)
    th = torch.randn(5, dtype=F64)
    closed = (Ab @ Aa - Aa @ Ab) @ th + Ab @ ba - Aa @ bb  # FORMULAS.md
    assert rel_err(ib.lie_bracket(fa, fb, th), closed) < TOL


def test_alignment_and_cosine(mlp2):
    (ga, _), (gb, _) = explicit(mlp2)
    dot = float(ga @ gb)
    assert float(ib.alignment(*mlp2.losses, mlp2.params)) == pytest.approx(dot, rel=TOL)
    cos = dot / float(ga.norm() * gb.norm())
    assert float(ib.cosine(*mlp2.losses, mlp2.params)) == pytest.approx(cos, rel=TOL)


def test_cosine_of_a_zero_gradient_is_nan():
    th = torch.zeros(3, dtype=F64)
    c = ib.cosine(lambda p: (p**2).sum(), lambda p: p.sum(), th)
    assert c.dim() == 0 and torch.isnan(c)


# ----- modified losses and fields ---------------------------------------------------------------


def test_modified_loss_closed_forms(mlp2):
    f = mlp2.losses[0]
    g = explicit_grad(f, mlp2.params)
    expected = float(f(mlp2.params)) + H / 4 * float(g @ g)
    assert float(ib.modified_loss(f, mlp2.params, H)) == pytest.approx(expected, rel=TOL)
    A, b, q = quadratic(4, seed=5)
    th = torch.randn(4, dtype=F64)
    gq = A @ th + b
    assert float(ib.modified_loss(q, th, H)) == pytest.approx(float(q(th) + H / 4 * gq @ gq), rel=TOL)


def test_multitask_terms_vs_explicit(mlp3):
    ref = explicit(mlp3)
    gs = [g for g, _ in ref]
    terms = ib.multitask_terms(mlp3.losses, mlp3.params, H)
    assert set(terms) == {"loss", "flatness", "conflict", "modified"}
    loss = sum(float(f(mlp3.params)) for f in mlp3.losses)
    flatness = H / 4 * sum(float(g @ g) for g in gs)
    conflict = H / 2 * sum(float(gs[i] @ gs[j]) for i in range(3) for j in range(i + 1, 3))
    assert float(terms["loss"]) == pytest.approx(loss, rel=TOL)
    assert float(terms["flatness"]) == pytest.approx(flatness, rel=TOL)
    assert float(terms["conflict"]) == pytest.approx(conflict, rel=TOL)
    assert float(terms["modified"]) == pytest.approx(loss + flatness + conflict, rel=TOL)
    # the three parts add up to the modified loss of the summed loss, L + (h/4)‖Σ g_i‖²
    summed = ib.modified_loss(ib.sum_losses(mlp3.losses), mlp3.params, H)
    assert float(terms["modified"]) == pytest.approx(float(summed), rel=1e-12)


def test_multitask_terms_single_task_has_no_conflict(mlp2):
    terms = ib.multitask_terms(mlp2.losses[:1], mlp2.params, H)
    assert float(terms["conflict"]) == 0.0
    assert float(terms["modified"]) == pytest.approx(
        float(ib.modified_loss(mlp2.losses[0], mlp2.params, H)), rel=1e-12
    )


def test_gd_field_vs_explicit(mlp2):
    (g, Hm), _ = explicit(mlp2)
    field = ib.gd_field(mlp2.losses[0], mlp2.params, H)
    same_structure(field, mlp2.params)
    assert rel_err(field, -g - H / 2 * Hm @ g) < TOL


def test_gd_field_quadratic_closed_form():
    A, b, f = quadratic(5, seed=6)
    th = torch.randn(5, dtype=F64)
    g = A @ th + b
    assert rel_err(ib.gd_field(f, th, H), -g - H / 2 * A @ g) < TOL


def test_multitask_field_vs_explicit(mlp3):
    ref = explicit(mlp3)
    G = sum(g for g, _ in ref)
    Hs = sum(h for _, h in ref)
    field = ib.multitask_field(mlp3.losses, mlp3.params, H)
    same_structure(field, mlp3.params)
    assert rel_err(field, -G - H / 2 * Hs @ G) < TOL
    # the same as the GD field of the summed loss
    assert rel_err(field, ib.gd_field(ib.sum_losses(mlp3.losses), mlp3.params, H)) < 1e-12


def sequential_reference(ref, h):
    """F = −Σg_i − (h/2)Σ H_i g_i + (h/2) Σ_{i<j} (H_j g_i − H_i g_j), from explicit Hessians."""
    n = len(ref)
    field = -sum(g for g, _ in ref) - h / 2 * sum(Hm @ g for g, Hm in ref)
    for i in range(n):
        for j in range(i + 1, n):
            (gi, Hi), (gj, Hj) = ref[i], ref[j]
            field = field + h / 2 * (Hj @ gi - Hi @ gj)
    return field


@pytest.mark.parametrize("n_tasks", [2, 3])
def test_sequential_field_vs_explicit(n_tasks):
    problem = mlp_problem(n_tasks=n_tasks, seed=n_tasks)
    field = ib.sequential_field(problem.losses, problem.params, H)
    same_structure(field, problem.params)
    assert rel_err(field, sequential_reference(explicit(problem), H)) < TOL


def test_sequential_field_is_multitask_field_plus_brackets(mlp3):
    """F_seq = F_multitask-without-conflict + (h/2) Σ_{i<j} [∇L_i, ∇L_j], all from the library."""
    p, Ls = mlp3.params, mlp3.losses
    flat_terms = sum(flat(ib.gd_field(f, p, H)) for f in Ls)  # −Σ(g_i + (h/2)H_i g_i)
    brackets = sum(flat(ib.lie_bracket(Ls[i], Ls[j], p)) for i in range(3) for j in range(i + 1, 3))
    assert rel_err(ib.sequential_field(Ls, p, H), flat_terms + H / 2 * brackets) < TOL


def test_sequential_field_one_task_is_gd_field(mlp2):
    f = mlp2.losses[0]
    assert rel_err(ib.sequential_field([f], mlp2.params, H), ib.gd_field(f, mlp2.params, H)) < 1e-14


def test_sequential_field_quadratic_closed_form():
    (Aa, ba, fa), (Ab, bb, fb) = quadratic(4, seed=7), quadratic(4, seed=8)
    th = torch.randn(4, dtype=F64)
    ga, gb = Aa @ th + ba, Ab @ th + bb
    expected = -(ga + gb) - H / 2 * (Aa @ ga + Ab @ gb) + H / 2 * (Ab @ ga - Aa @ gb)
    assert rel_err(ib.sequential_field([fa, fb], th, H), expected) < TOL


# ----- differentiability --------------------------------------------------------------------


def test_modified_loss_is_differentiable(mlp2):
    """∇ of modified_loss (params requiring grad) is ∇L + (h/2) H∇L, checked via hvp, to 1e-10."""
    f = mlp2.losses[0]
    leaves = {k: v.clone().requires_grad_(True) for k, v in mlp2.params.items()}
    out = ib.modified_loss(f, leaves, H)
    assert out.requires_grad
    got = torch.autograd.grad(out, list(leaves.values()))
    g = ib.grad(f, mlp2.params)
    expected = ib.add(g, ib.scale(ib.hvp(f, mlp2.params, g), H / 2))
    assert rel_err(torch.cat([t.reshape(-1) for t in got]), expected) < 1e-10


def test_multitask_terms_are_differentiable(mlp2):
    """∇ of terms['modified'] is G + (h/2) H_Σ G, G = Σ g_i; each part is differentiable."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in mlp2.params.items()}
    terms = ib.multitask_terms(mlp2.losses, leaves, H)
    assert all(t.requires_grad for t in terms.values())
    got = torch.cat([t.reshape(-1) for t in torch.autograd.grad(terms["modified"], list(leaves.values()))])
    total = ib.sum_losses(mlp2.losses)
    G = ib.grad(total, mlp2.params)
    expected = ib.add(G, ib.scale(ib.hvp(total, mlp2.params, G), H / 2))
    assert rel_err(got, expected) < 1e-10


def test_modified_loss_with_a_models_own_parameters():
    """params = the model's parameters (requiring grad): differentiable, and .grad after backward."""
    problem = mlp_problem()
    own = dict(problem.model.named_parameters())
    out = ib.modified_loss(problem.losses[0], own, H)
    out.backward()
    got = torch.cat([p.grad.reshape(-1) for p in own.values()])
    f, p = problem.losses[0], problem.params
    expected = ib.add(ib.grad(f, p), ib.scale(ib.hvp(f, p, ib.grad(f, p)), H / 2))
    assert rel_err(got, expected) < 1e-10


def test_results_detached_for_plain_params(mlp2):
    out = ib.modified_loss(mlp2.losses[0], mlp2.params, H)
    assert not out.requires_grad
    assert not any(t.requires_grad for t in ib.multitask_terms(mlp2.losses, mlp2.params, H).values())
    for fn in (ib.gd_field, ib.hvp):
        arg = H if fn is ib.gd_field else mlp2.params
        assert not any(t.requires_grad for t in fn(mlp2.losses[0], mlp2.params, arg).values())


# ----- model_loss with a subset of the parameters ---------------------------------------------


def test_model_loss_with_a_subset_of_parameters(mlp2):
    model, f_full = mlp2.model, mlp2.losses[0]
    subset = {"2.weight": mlp2.params["2.weight"], "2.bias": mlp2.params["2.bias"]}
    g_sub = ib.grad(f_full, subset)
    assert list(g_sub) == ["2.weight", "2.bias"]
    g_full = ib.grad(f_full, mlp2.params)
    for k in subset:
        assert rel_err(g_sub[k], g_full[k]) < 1e-14
    # the other parameters are taken from the model: changing them changes the loss
    other = dict(mlp2.params)
    other["0.weight"] = other["0.weight"] + 0.1
    assert float(f_full(other).detach()) != pytest.approx(float(f_full(subset).detach()), rel=1e-6)
    # Hessian, hvp and bracket on the subset = built from the sub-blocks of the explicit ones
    (ga, Ha), (gb, Hb) = explicit(mlp2)
    idx = torch.arange(16, 26)  # 2.weight (4·2) and 2.bias (2) are the last 10 flat entries
    Ha_s, Hb_s = Ha[idx][:, idx], Hb[idx][:, idx]
    assert rel_err(explicit_hessian(mlp2.losses[0], subset), Ha_s) < 1e-12
    v = {k: torch.ones_like(t) for k, t in subset.items()}
    assert rel_err(ib.hvp(mlp2.losses[0], subset, v), Ha_s @ flat(v)) < TOL
    bracket = ib.lie_bracket(*mlp2.losses, subset)
    same_structure(bracket, subset)
    assert rel_err(bracket, Hb_s @ ga[idx] - Ha_s @ gb[idx]) < TOL
    assert model is mlp2.model


def test_model_loss_rejects_unknown_names_and_tensors(mlp2):
    with pytest.raises(ValueError, match="not parameters of the model"):
        mlp2.losses[0]({"nope": torch.zeros(2, dtype=F64)})
    with pytest.raises(TypeError, match="dict"):
        mlp2.losses[0](torch.zeros(26, dtype=F64))
    with pytest.raises(TypeError, match="nn.Module"):
        ib.model_loss(lambda x: x, torch.nn.functional.mse_loss, torch.zeros(1), torch.zeros(1))


def test_params_of_and_load_params_roundtrip(mlp2):
    model = mlp2.model
    p = ib.params_of(model)
    assert all(not t.requires_grad for t in p.values())
    q = ib.scale(p, 2.0)
    ib.load_params(model, q)
    assert all(torch.equal(t, q[k]) for k, t in model.named_parameters())
    assert all(t.requires_grad for t in model.parameters())
    ib.load_params(model, p)
    with pytest.raises(ValueError, match="not parameters of the model"):
        ib.load_params(model, {"bad": torch.zeros(1)})


# ----- integrators ----------------------------------------------------------------------------


def test_gd_step_and_sequential_steps(mlp3):
    p, Ls = mlp3.params, mlp3.losses
    step = ib.gd_step(Ls[0], p, H)
    same_structure(step, p)
    assert rel_err(step, flat(p) - H * explicit_grad(Ls[0], p)) < 1e-14
    theta = p
    for f in Ls:
        theta = {k: t - H * g for (k, t), g in zip(theta.items(), ib.grad(f, theta).values())}
    assert rel_err(ib.sequential_steps(Ls, p, H), theta) < 1e-14


def test_flow_of_a_linear_field_is_the_matrix_exponential():
    gen = torch.Generator().manual_seed(9)
    M = torch.randn(5, 5, generator=gen, dtype=F64)
    th = torch.randn(5, generator=gen, dtype=F64)
    t = 0.7
    out = ib.flow(lambda x: M @ x, th, t, steps=200)
    assert rel_err(out, torch.linalg.matrix_exp(t * M) @ th) < TOL
    # dict params: the field acts on the flattened vector
    like = {"a": th[:2].reshape(1, 2), "b": th[2:]}
    field = lambda p: ib.unflatten(M @ ib.flatten(p), like)
    out = ib.flow(field, like, t, steps=200)
    same_structure(out, like)
    assert rel_err(out, torch.linalg.matrix_exp(t * M) @ th) < TOL
    # RK4 is fourth order: halving the sub-step divides the error by about 16
    exact = torch.linalg.matrix_exp(t * M) @ th
    e1 = rel_err(ib.flow(lambda x: M @ x, th, t, steps=5), exact)
    e2 = rel_err(ib.flow(lambda x: M @ x, th, t, steps=10), exact)
    assert 12 < e1 / e2 < 20


def test_gd_on_a_quadratic_is_the_flow_of_the_log_field():
    """For L = ½θᵀAθ (0 < hA < 1), GD is exactly the flow of F = h⁻¹ log(I − hA) θ for time h."""
    gen = torch.Generator().manual_seed(10)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=F64))
    eigs = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=F64)
    A = (q * eigs) @ q.T
    h = 0.1
    logm = (q * torch.log1p(-h * eigs)) @ q.T / h
    th = torch.randn(4, generator=gen, dtype=F64)
    out = ib.flow(lambda x: logm @ x, th, h, steps=50)
    assert rel_err(out, ib.gd_step(lambda x: 0.5 * x @ (A @ x), th, h)) < TOL


def test_local_errors_matches_a_direct_computation():
    A, b, f = quadratic(3, seed=11)
    th = torch.randn(3, dtype=F64)
    lrs = [0.1, 0.05]
    errs = ib.local_errors(lambda p, h: ib.gd_step(f, p, h), lambda p, h: -ib.grad(f, p), th, lrs, steps=40)
    for h, e in zip(lrs, errs):
        direct = float((ib.gd_step(f, th, h) - ib.flow(lambda p: -(A @ p + b), th, h, steps=40)).norm())
        assert e == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize("order", [1.0, 2.0, 3.0, 4.5])
def test_fit_order_on_synthetic_data(order):
    lrs = ib.geometric_lrs(0.2, count=6, ratio=0.5)
    assert lrs == pytest.approx([0.2 * 0.5**i for i in range(6)])
    exact = [7.3 * h**order for h in lrs]
    assert ib.fit_order(lrs, exact) == pytest.approx(order, abs=1e-10)
    # multiplicative noise of ±10% moves the slope only a little
    noisy = [e * (1 + 0.1 * (-1) ** i) for i, e in enumerate(exact)]
    assert ib.fit_order(lrs, noisy) == pytest.approx(order, abs=0.1)
    # a higher-order correction bends the curve upward at large h: the fit sees it
    bent = [e + 50 * h ** (order + 1) for h, e in zip(lrs, exact)]
    assert ib.fit_order(lrs, bent) > order + 0.05


def test_fit_order_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        ib.fit_order([0.1], [0.1])
    with pytest.raises(ValueError, match="equally long"):
        ib.fit_order([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="zero error"):
        ib.fit_order([0.1, 0.2], [0.0, 0.1])


# ----- 0.2 additions: flow_path, ordered sweeps, sharpness, seeds ------------------------------


def test_flow_path_holds_every_state_of_flow():
    A, b, _ = quadratic(3, seed=5)
    th = torch.tensor([0.2, -0.1, 0.4], dtype=F64)
    field = lambda p: -(A @ p + b)  # noqa: E731
    path = ib.flow_path(field, th, 0.3, steps=6)
    assert path.shape == (7, 3)
    assert torch.equal(path[0], th)
    assert torch.equal(path[-1], ib.flow(field, th, 0.3, steps=6))
    assert torch.equal(path[3], ib.flow(field, th, 0.15, steps=3))
    # closed form of the linear flow: θ(t) = e^{-At}(θ0 + A⁻¹b) − A⁻¹b
    c = torch.linalg.solve(A, b)
    exact = torch.linalg.matrix_exp(-0.3 * A) @ (th + c) - c
    assert rel_err(path[-1], exact) < 1e-6  # RK4 with 6 steps
    tree = ib.flow_path(lambda q: {"w": -q["w"]}, {"w": torch.ones(2, 2, dtype=F64)}, 1.0, steps=4)
    assert list(tree) == ["w"] and tree["w"].shape == (5, 2, 2)
    assert rel_err(tree["w"][-1], torch.full((2, 2), math.exp(-1.0), dtype=F64)) < 1e-4


def test_sequential_steps_in_a_given_order(mlp3):
    p, Ls = mlp3.params, mlp3.losses
    reordered = ib.sequential_steps([Ls[2], Ls[0], Ls[1]], p, H)
    assert rel_err(ib.sequential_steps(Ls, p, H, order=[2, 0, 1]), reordered) == 0
    twice = ib.sequential_steps([Ls[1], Ls[1]], p, H)
    assert rel_err(ib.sequential_steps(Ls, p, H, order=[1, 1]), twice) == 0
    with pytest.raises(ValueError, match=r"task indices in 0\.\.2"):
        ib.sequential_steps(Ls, p, H, order=[0, 3])


def test_sharpness_is_the_largest_eigenvalue():
    d = 6
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=F64, generator=torch.Generator().manual_seed(2)))
    eigs = torch.tensor([5.0, 2.0, 1.0, 0.5, 0.2, 0.1], dtype=F64)
    A = (q * eigs) @ q.T
    L = ib.data.quadratic_loss(A, torch.zeros(d, dtype=F64))
    before = torch.get_rng_state()
    lam = ib.sharpness(L, torch.ones(d, dtype=F64), iters=60)
    assert torch.equal(before, torch.get_rng_state())  # a local generator
    assert lam.dim() == 0 and abs(float(lam) - 5.0) < 1e-10
    assert torch.equal(lam, ib.sharpness(L, torch.ones(d, dtype=F64), iters=60))  # seeded
    zero = ib.sharpness(lambda p: p.sum(), torch.ones(3, dtype=F64))  # H = 0
    assert float(zero) == 0.0


def test_pcgrad_seed_is_local_and_reproducible():
    gen = torch.Generator().manual_seed(0)
    gs = [torch.randn(5, dtype=F64, generator=gen) for _ in range(4)]
    before = torch.get_rng_state()
    a, b = ib.pcgrad(gs, seed=3), ib.pcgrad(gs, seed=3)
    assert torch.equal(before, torch.get_rng_state())
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(TypeError, match="list of task gradients"):
        ib.pcgrad({"a": gs[0]})
