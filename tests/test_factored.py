"""The factored bracket (ibea_lib.factored): exact against explicit Hessians, used only where it applies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ibea_lib as ib
from ibea_lib import factored

CE, MSE = nn.functional.cross_entropy, nn.functional.mse_loss
F64 = torch.float64


def _models():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {
            "tanh": ib.models.mlp([5, 7, 6, 3], dtype=F64),
            "gelu-sigmoid-flatten-nobias": nn.Sequential(
                nn.Flatten(), nn.Linear(6, 4, bias=False), nn.GELU(), nn.Linear(4, 3), nn.Sigmoid()).double(),
            "softplus-relu": nn.Sequential(nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 4), nn.ReLU(),
                                           nn.Linear(4, 3, bias=False)).double(),
            "one-layer": nn.Sequential(nn.Linear(6, 3)).double(),
        }


def _tasks(model, gen):
    shape = (2, 3) if isinstance(model[0], nn.Flatten) else (model[0].in_features,)
    sizes = (9, 6, 4)
    xs = [torch.randn(n, *shape, generator=gen, dtype=F64) for n in sizes]
    return [ib.model_loss(model, CE, xs[0], torch.randint(0, 3, (9,), generator=gen)),
            ib.model_loss(model, CE, xs[1], torch.randint(0, 3, (6,), generator=gen)),
            ib.model_loss(model, MSE, xs[2], torch.randn(4, 3, generator=gen, dtype=F64))]


def _dense(losses, params):
    """Gradients and Hessians of the flattened parameters (torch.func.hessian; independent of ib)."""
    flat = ib.flatten(params)
    fs = [lambda v, f=f: f(ib.unflatten(v, params)) for f in losses]
    return ([torch.func.grad(f)(flat) for f in fs], [torch.func.hessian(f)(flat) for f in fs])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", ["gram", "explicit"])
@pytest.mark.parametrize("name", list(_models()))
def test_exact_against_explicit_hessians(name, mode, monkeypatch):
    monkeypatch.setattr(factored, "_MODE", [mode])
    model = _models()[name]
    losses = _tasks(model, torch.Generator().manual_seed(1))
    p = ib.params_of(model)
    (ga, gb, gc), (ha, hb, hc) = _dense(losses, p)
    h = 0.1
    bracket = factored.hessian_terms(losses[:2], p, [[0, -1], [1, 0]], force=True)
    assert _rel(ib.flatten(bracket), hb @ ga - ha @ gb) < 1e-12
    seq = factored.hessian_terms(losses, p, factored.sequential_coefficients(3, h), [-1.0] * 3, force=True)
    pairs = [(0, 1), (0, 2), (1, 2)]
    gs, hs = (ga, gb, gc), (ha, hb, hc)
    brackets = sum(hs[j] @ gs[i] - hs[i] @ gs[j] for i, j in pairs)
    want = -(ga + gb + gc) - (h / 2) * (ha @ ga + hb @ gb + hc @ gc) + (h / 2) * brackets
    assert _rel(ib.flatten(seq), want) < 1e-12
    bsum = factored.hessian_terms(losses, p, factored.bracket_sum_coefficients(3), force=True)
    assert _rel(ib.flatten(bsum), brackets) < 1e-12


def _wide(seed=0, **kw):
    model = ib.models.mlp([20, 64, 32, 4], seed=seed, dtype=F64, **kw)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 20, generator=gen, dtype=F64)
    y = torch.randint(0, 4, (2, 16), generator=gen)
    return model, [ib.model_loss(model, CE, x[i], y[i]) for i in range(2)]


def test_core_calls_take_the_factored_path_and_agree_with_the_generic_one():
    model, (la, lb) = _wide()
    lc = ib.model_loss(model, CE, torch.randn(8, 20, dtype=F64), torch.randint(0, 4, (8,)))
    p = ib.params_of(model)
    assert factored.applies([la, lb], p)
    fast = {"lie_bracket": ib.lie_bracket(la, lb, p),
            "sequential_field": ib.sequential_field([la, lb, lc], p, 0.05),
            "bracket_sum": ib.bracket_sum([la, lb, lc], p)}
    calls = []
    real = factored._compute
    with factored.disabled():
        slow = {"lie_bracket": ib.lie_bracket(la, lb, p),
                "sequential_field": ib.sequential_field([la, lb, lc], p, 0.05),
                "bracket_sum": ib.bracket_sum([la, lb, lc], p)}
    for k in fast:
        assert float(ib.norm(ib.sub(fast[k], slow[k])) / ib.norm(slow[k])) < 1e-12, k
    try:  # the dispatch really goes through the factored computation
        factored._compute = lambda *a: calls.append(1) or real(*a)
        ib.lie_bracket(la, lb, p)
        ib.sequential_field([la, lb], p, 0.1)
        ib.bracket_sum([la, lb], p)
    finally:
        factored._compute = real
    assert len(calls) == 3


def test_fallback_where_it_does_not_apply():
    model, (la, lb) = _wide()
    p = ib.params_of(model)
    subset = {k: v for k, v in p.items() if k.startswith("0.")}
    assert not factored.applies([la, lb], subset)  # not every parameter
    other, (oa, _) = _wide(seed=1)
    assert not factored.applies([la, oa], p)  # two different models
    drop = nn.Sequential(nn.Linear(20, 8), nn.Dropout(0.0), nn.Linear(8, 4)).double()
    xs = torch.randn(5, 20, dtype=F64)
    ld = ib.model_loss(drop, CE, xs, torch.randint(0, 4, (5,)))
    assert not factored.applies([ld, ld], ib.params_of(drop))  # a layer that is not elementwise
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 18, 4)).double()
    lconv = ib.model_loss(conv, CE, torch.randn(5, 1, 20, dtype=F64), torch.randint(0, 4, (5,)))
    assert not factored.applies([lconv, lconv], ib.params_of(conv))
    data = ib.data_loss(model, CE, [(xs, torch.randint(0, 4, (5,)))])
    assert not factored.applies([data, la], p)  # data-set losses run their own passes
    assert not factored.applies([lambda q: q["0.bias"].sum(), la], p)  # a plain callable
    with factored.disabled():
        assert not factored.applies([la, lb], p)
    assert factored.applies([la, lb], p)
    # the generic path still raises the clear errors
    with pytest.raises(TypeError):
        ib.lie_bracket(la, lb, ib.flatten(p))
