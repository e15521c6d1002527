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


# ---- issue 17: the fast path proves it applies (one test per row of the table) ----

def _reference_bracket(loss_a, loss_b, p):
    """H_b g_a − H_a g_b by a plain double backward in torch (no ibea_lib call)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
    xs = list(leaves.values())
    ga = torch.autograd.grad(loss_a(leaves), xs, create_graph=True)
    gb = torch.autograd.grad(loss_b(leaves), xs, create_graph=True)
    s = sum((b * a.detach()).sum() - (a * b.detach()).sum() for a, b in zip(ga, gb))
    return dict(zip(leaves, torch.autograd.grad(s, xs)))


def _pair(model, criterion=CE, d_in=6, n=7, targets=None):
    gen = torch.Generator().manual_seed(4)
    xs = torch.randn(2, n, d_in, generator=gen, dtype=F64)
    ys = torch.randint(0, 3, (2, n), generator=gen) if targets is None else targets
    return [ib.model_loss(model, criterion, xs[i], ys[i]) for i in range(2)]


def _check_declined_and_right(model, losses=None, applies=False):
    la, lb = losses or _pair(model)
    p = ib.params_of(model)
    assert factored.applies([la, lb], p) is applies
    ref = _reference_bracket(la, lb, p)
    assert _rel(ib.flatten(ib.lie_bracket(la, lb, p)), ib.flatten(ref)) < 1e-12
    assert _rel(ib.flatten(ib.bracket_sum([la, lb], p)), ib.flatten(ref)) < 1e-12
    seq = ib.sub(ib.sequential_field([la, lb], p, 0.1), ib.order_averaged_field([la, lb], p, 0.1))
    assert _rel(ib.flatten(seq), 0.05 * ib.flatten(ref)) < 1e-10


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU, nn.GELU])
def test_row_one_activation_instance_used_twice(act):
    torch.manual_seed(0)
    a = act()
    model = nn.Sequential(nn.Linear(6, 5), a, nn.Linear(5, 4), a, nn.Linear(4, 3)).double()
    _check_declined_and_right(model)


def test_row_one_linear_used_twice():
    torch.manual_seed(0)
    lin = nn.Linear(5, 5)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), lin, nn.Tanh(), lin, nn.Linear(5, 3)).double()
    _check_declined_and_right(model)
    tied = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 5),
                         nn.Linear(5, 3)).double()
    tied[4].weight = tied[2].weight  # tied weights: one parameter in two layers
    _check_declined_and_right(tied)


@pytest.mark.parametrize("where", ["model-forward", "layer-forward", "layer-pre", "global-forward",
                                   "global-pre"])
def test_row_forward_hooks_and_pre_hooks(where):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    from torch.nn.modules import module as m
    handle = {
        "model-forward": lambda: model.register_forward_hook(lambda mod, i, o: 2 * o),
        "layer-forward": lambda: model[1].register_forward_hook(lambda mod, i, o: o * o),
        "layer-pre": lambda: model[2].register_forward_pre_hook(lambda mod, i: (i[0] * 3,)),
        "global-forward": lambda: m.register_module_forward_hook(lambda mod, i, o: o * 1.5),
        "global-pre": lambda: m.register_module_forward_pre_hook(lambda mod, i: (i[0] * 0.5,)),
    }[where]()
    try:
        _check_declined_and_right(model)
    finally:
        handle.remove()
    _check_declined_and_right(model, applies=True)  # without the hook: the fast path again


def test_row_user_loss_objects_and_closures_with_model_attributes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    la, lb = _pair(model)

    class MyLoss:  # duck-typed: same attributes, but a different function (an L2 term)
        def __init__(self, inner):
            self.model, self.criterion = inner.model, inner.criterion
            self.inputs, self.targets = inner.inputs, inner.targets
            self.inner = inner

        def __call__(self, p):
            return self.inner(p) + 0.3 * sum((t ** 2).sum() for t in p.values()) ** 1.5

    _check_declined_and_right(model, (MyLoss(la), MyLoss(lb)))

    def model_loss(inner):  # a closure whose __qualname__ starts with "model_loss."
        model, criterion, inputs, targets = inner.model, inner.criterion, inner.inputs, inner.targets

        def f(p):
            out = torch.func.functional_call(model, p, (inputs,))
            return criterion(out, targets) * (1 + p["0.bias"].sum() ** 2)
        return f

    _check_declined_and_right(model, (model_loss(la), model_loss(lb)))
    # the documented way to force the generic path: wrap the ModelLoss in a lambda
    _check_declined_and_right(model, (lambda p: la(p), lambda p: lb(p)))

    class SubLoss(ib.ModelLoss):  # a subclass of ModelLoss is not the exact type
        pass
    _check_declined_and_right(model, (SubLoss(*[getattr(la, a) for a in ("model", "criterion", "inputs",
                                                                          "targets")]), lb))


def test_row_activation_subclass_with_its_own_forward():
    class MyTanh(nn.Tanh):
        def forward(self, x):
            return torch.tanh(x) + 0.1 * x ** 2

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), MyTanh(), nn.Linear(5, 3)).double()
    _check_declined_and_right(model)
    instance = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    instance[1].forward = lambda x: torch.sin(x)  # an instance-level forward
    _check_declined_and_right(instance)


@pytest.mark.parametrize("act", [nn.LeakyReLU(0.1, inplace=True), nn.ELU(inplace=True),
                                 nn.SiLU(inplace=True), nn.ReLU(inplace=True), nn.PReLU(5)])
def test_row_inplace_and_parameterized_activations_take_the_generic_path(act):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), act, nn.Linear(5, 3)).double()
    _check_declined_and_right(model)


def test_row_autocast_takes_the_generic_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    la, lb = _pair(model)
    p = ib.params_of(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not factored.applies([la, lb], p)
        got = ib.lie_bracket(la, lb, p)
        with factored.disabled():
            want = ib.lie_bracket(la, lb, p)
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_unsupported_criteria_take_the_generic_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    for criterion in (lambda o, t: CE(o, t), torch.nn.CrossEntropyLoss(reduction="none")):
        la, lb = _pair(model, criterion=lambda o, t, c=criterion: c(o, t).sum())
        assert not factored.applies([la, lb], ib.params_of(model))
    la, lb = _pair(model, criterion=nn.CrossEntropyLoss(label_smoothing=0.1, reduction="sum"))
    _check_declined_and_right(model, (la, lb), applies=True)
