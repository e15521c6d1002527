"""Bad input gets a clear error naming the problem, and nothing of the caller's is mutated.

Every public call that takes a loss is run with each kind of bad input (non-scalar loss,
non-floating params, mismatched ``v``, bad learning rates, empty ``losses``, a loss that
returns NaN); after every call (failing or not) the caller's tensors must have the same values,
version counters and ``requires_grad`` flags, and no ``.grad`` may have been accumulated.
"""

from __future__ import annotations

import math

import pytest
import torch
from ibea_refs import F64, assert_unchanged, mlp_problem, snapshot

import ibea_lib as ib

LR = 0.1

# Every public call that evaluates losses, as fn(loss, params): the loss is put where the call
# needs it (twice for two-loss calls, as a one-element list for multi-task calls).
CALLS = {
    "grad": lambda f, p: ib.grad(f, p),
    "value_and_grad": lambda f, p: ib.value_and_grad(f, p),
    "hvp": lambda f, p: ib.hvp(f, p, ib.pytree.tree_map(torch.ones_like, p)),
    "lie_bracket": lambda f, p: ib.lie_bracket(f, f, p),
    "alignment": lambda f, p: ib.alignment(f, f, p),
    "cosine": lambda f, p: ib.cosine(f, f, p),
    "modified_loss": lambda f, p: ib.modified_loss(f, p, LR),
    "multitask_terms": lambda f, p: ib.multitask_terms([f, f], p, LR),
    "multitask_field": lambda f, p: ib.multitask_field([f, f], p, LR),
    "gd_field": lambda f, p: ib.gd_field(f, p, LR),
    "sequential_field": lambda f, p: ib.sequential_field([f, f], p, LR),
    "gd_step": lambda f, p: ib.gd_step(f, p, LR),
    "sequential_steps": lambda f, p: ib.sequential_steps([f, f], p, LR),
    "sum_losses": lambda f, p: ib.grad(ib.sum_losses([f, f]), p),
    "sharpness": lambda f, p: ib.sharpness(f, p, iters=2),
    "order_averaged_field": lambda f, p: ib.order_averaged_field([f, f], p, LR),
    "bracket_sum": lambda f, p: ib.bracket_sum([f, f], p),
    "conflict_free_loss": lambda f, p: ib.conflict_free_loss([f, f], p, LR),
    "sgd_modified_loss": lambda f, p: ib.sgd_modified_loss([f, f], p, LR),
    "bracket_correction": lambda f, p: ib.bracket_correction([f, f], p, LR),
    "bracket_corrected_steps": lambda f, p: ib.bracket_corrected_steps([f, f], p, LR),
    "order_gap": lambda f, p: ib.order_gap(f, f, p, LR),
    "flow_path": lambda f, p: ib.flow_path(lambda q: ib.gd_field(f, q, LR), p, LR, steps=2),
    "local_errors": lambda f, p: ib.local_errors(
        lambda q, h: ib.gd_step(f, q, h), lambda q, h: ib.gd_field(f, q, h), p, [LR], steps=2
    ),
}

# The calls that take a learning rate, as fn(loss, params, lr).
LR_CALLS = {
    "modified_loss": lambda f, p, h: ib.modified_loss(f, p, h),
    "multitask_terms": lambda f, p, h: ib.multitask_terms([f], p, h),
    "multitask_field": lambda f, p, h: ib.multitask_field([f], p, h),
    "gd_field": lambda f, p, h: ib.gd_field(f, p, h),
    "sequential_field": lambda f, p, h: ib.sequential_field([f], p, h),
    "gd_step": lambda f, p, h: ib.gd_step(f, p, h),
    "sequential_steps": lambda f, p, h: ib.sequential_steps([f], p, h),
    "order_averaged_field": lambda f, p, h: ib.order_averaged_field([f], p, h),
    "conflict_free_loss": lambda f, p, h: ib.conflict_free_loss([f, f], p, h),
    "sgd_modified_loss": lambda f, p, h: ib.sgd_modified_loss([f], p, h),
    "bracket_correction": lambda f, p, h: ib.bracket_correction([f, f], p, h),
    "bracket_corrected_steps": lambda f, p, h: ib.bracket_corrected_steps([f, f], p, h),
    "order_gap": lambda f, p, h: ib.order_gap(f, f, p, h),
    "local_errors": lambda f, p, h: ib.local_errors(
        lambda q, hh: ib.gd_step(f, q, hh), lambda q, hh: ib.gd_field(f, q, hh), p, [h]
    ),
}

# The calls that take a list of losses, as fn(losses, params).
MULTI_CALLS = {
    "multitask_terms": lambda Ls, p: ib.multitask_terms(Ls, p, LR),
    "multitask_field": lambda Ls, p: ib.multitask_field(Ls, p, LR),
    "sequential_field": lambda Ls, p: ib.sequential_field(Ls, p, LR),
    "sequential_steps": lambda Ls, p: ib.sequential_steps(Ls, p, LR),
    "sum_losses": lambda Ls, p: ib.sum_losses(Ls)(p),
    "order_averaged_field": lambda Ls, p: ib.order_averaged_field(Ls, p, LR),
    "sgd_modified_loss": lambda Ls, p: ib.sgd_modified_loss(Ls, p, LR),
    "conflict_free_loss": lambda Ls, p: ib.conflict_free_loss(Ls, p, LR),
}


def quartic(p):
    """A smooth loss on a tensor or a dict of tensors."""
    ts = [p] if isinstance(p, torch.Tensor) else list(p.values())
    return sum((t**2).sum() + 0.1 * (t**4).sum() for t in ts)


def dict_params(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    p = {"w": torch.randn(3, 2, generator=gen, dtype=F64), "b": torch.randn(2, generator=gen, dtype=F64)}
    return {k: v.requires_grad_(requires_grad) for k, v in p.items()}


def check_raises(fn, params, exc, match):
    """fn() raises ``exc`` matching ``match`` and leaves ``params`` untouched."""
    before = snapshot(params)
    with pytest.raises(exc, match=match):
        fn()
    assert_unchanged(params, before)


# ----- losses that return the wrong thing -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("requires_grad", [False, True])
def test_non_scalar_loss(name, requires_grad):
    p = dict_params(requires_grad)
    vector_loss = lambda q: q["w"].sum(0) ** 2  # shape (2,)
    check_raises(lambda: CALLS[name](vector_loss, p), p, ValueError, r"scalar \(0-dim\).*shape \(2,\)")


@pytest.mark.parametrize("name", sorted(CALLS))
def test_loss_returning_nan(name):
    p = dict_params()
    nan_loss = lambda q: (q["w"] ** 2).sum() * float("nan")
    check_raises(lambda: CALLS[name](nan_loss, p), p, FloatingPointError, "not finite")


@pytest.mark.parametrize("name", ["grad", "hvp", "lie_bracket", "gd_field", "sequential_field", "gd_step"])
def test_finite_loss_with_an_infinite_gradient(name):
    p = torch.tensor([0.0, 1.0], dtype=F64)
    f = lambda q: torch.sqrt(q.abs()).sum()  # finite at 0, derivative infinite there
    check_raises(lambda: CALLS[name](f, p), p, FloatingPointError, "non-finite|not finite")


def test_loss_returning_a_number_or_an_integer_tensor():
    p = dict_params()
    check_raises(lambda: ib.grad(lambda q: 1.0, p), p, TypeError, "must return a torch.Tensor")
    check_raises(
        lambda: ib.grad(lambda q: torch.tensor(1), p), p, TypeError, "returned dtype torch.int64"
    )
    check_raises(lambda: ib.grad("not a loss", p), p, TypeError, "must be a callable")


def test_the_failing_loss_is_named_in_multi_task_calls():
    p = dict_params()
    good, bad = quartic, (lambda q: q["w"].sum(0))
    for name, fn in MULTI_CALLS.items():
        # sequential_steps goes through gd_step, whose message says "loss" (not the index)
        match = "must return a scalar" if name == "sequential_steps" else r"losses\[1\] must return a scalar"
        check_raises(lambda fn=fn: fn([good, bad], p), p, ValueError, match)


# ----- bad params ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CALLS))
def test_integer_params(name):
    p = torch.arange(4)
    check_raises(lambda: CALLS[name](quartic, p), p, TypeError, "params has dtype torch.int64.*floating")


@pytest.mark.parametrize("name", ["grad", "hvp", "modified_loss", "sequential_field", "gd_step"])
def test_integer_tensor_inside_dict_params_is_named(name):
    p = {"w": torch.ones(2, dtype=F64), "steps": torch.arange(3)}
    check_raises(lambda: CALLS[name](quartic, p), p, TypeError, r"params\['steps'\] has dtype torch.int64")


@pytest.mark.parametrize(
    ("params", "exc", "match"),
    [
        ([1.0, 2.0], TypeError, "must be a torch.Tensor or a dict of tensors, got list"),
        ({}, ValueError, "empty dict"),
        ({"w": [1.0]}, TypeError, r"params\['w'\] must be a torch.Tensor, got list"),
    ],
)
def test_params_of_the_wrong_kind(params, exc, match):
    for fn in (ib.grad, lambda f, p: ib.gd_field(f, p, LR), lambda f, p: ib.flow(lambda q: q, p, 1.0)):
        with pytest.raises(exc, match=match):
            fn(quartic, params)


# ----- mismatched v in hvp -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v", "match"),
    [
        ({"w": torch.ones(3, 2, dtype=F64)}, r"missing \['b'\]"),
        (
            {"w": torch.ones(3, 2, dtype=F64), "b": torch.ones(2, dtype=F64), "c": torch.ones(1)},
            r"extra \['c'\]",
        ),
        ({"b": torch.ones(2, dtype=F64), "w": torch.ones(3, 2, dtype=F64)}, "different order"),
        (
            {"w": torch.ones(2, 3, dtype=F64), "b": torch.ones(2, dtype=F64)},
            r"v\['w'\] has shape \(2, 3\).*\(3, 2\)",
        ),
        ({"w": torch.ones(3, 2), "b": torch.ones(2, dtype=F64)}, r"v\['w'\] has dtype torch.float32"),
        (torch.ones(8, dtype=F64), "same structure"),
        ({"w": [1.0], "b": torch.ones(2, dtype=F64)}, r"v\['w'\] must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_hvp_with_mismatched_v(v, match, requires_grad):
    p = dict_params(requires_grad)
    all_tensors = isinstance(v, torch.Tensor) or all(isinstance(t, torch.Tensor) for t in v.values())
    before_v = snapshot(v) if all_tensors else None
    check_raises(lambda: ib.hvp(quartic, p, v), p, (ValueError, TypeError), match)
    if before_v is not None:
        assert_unchanged(v, before_v)


def test_hvp_with_v_of_the_wrong_shape_for_a_single_tensor():
    p = torch.ones(4, dtype=F64)
    check_raises(lambda: ib.hvp(quartic, p, torch.ones(5, dtype=F64)), p, ValueError, r"v has shape \(5,\)")
    check_raises(lambda: ib.hvp(quartic, p, {"a": torch.ones(4, dtype=F64)}), p, ValueError, "same structure")


# ----- learning rates ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LR_CALLS))
@pytest.mark.parametrize(
    ("lr", "exc", "match"),
    [
        (0.0, ValueError, "must be > 0, got 0.0"),
        (-0.1, ValueError, "must be > 0, got -0.1"),
        (math.nan, ValueError, "must be finite, got nan"),
        (math.inf, ValueError, "must be finite, got inf"),
        (-math.inf, ValueError, "must be finite"),
        ("0.1", TypeError, "must be a real number, got str"),
        (True, TypeError, "must be a real number, got bool"),
        (torch.tensor([0.1, 0.2]), ValueError, r"got a tensor of shape \(2,\)"),
    ],
)
def test_bad_learning_rates(name, lr, exc, match):
    p = dict_params()
    check_raises(lambda: LR_CALLS[name](quartic, p, lr), p, exc, match)


@pytest.mark.parametrize("lr", [1, 0.25, torch.tensor(0.25, dtype=F64)])
def test_learning_rate_as_int_or_0_dim_tensor_is_accepted(lr):
    p = torch.ones(2, dtype=F64)
    assert float(ib.modified_loss(quartic, p, lr)) > 0


# ----- lists of losses ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MULTI_CALLS))
def test_empty_losses(name):
    p = dict_params()
    check_raises(lambda: MULTI_CALLS[name]([], p), p, ValueError, "losses is empty")


@pytest.mark.parametrize("name", sorted(MULTI_CALLS))
def test_a_single_callable_instead_of_a_list(name):
    p = dict_params()
    check_raises(lambda: MULTI_CALLS[name](quartic, p), p, TypeError, "got a single callable")


@pytest.mark.parametrize("name", sorted(MULTI_CALLS))
def test_a_non_callable_in_losses(name):
    p = dict_params()
    check_raises(lambda: MULTI_CALLS[name]([quartic, 3.0], p), p, TypeError, r"losses\[1\] must be callable")


# ----- the integrators' own arguments -----------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "t"), [(0, 1.0), (-2, 1.0), (2.5, 1.0), (True, 1.0), (4, math.nan), (4, math.inf)]
)
def test_flow_bad_steps_or_time(steps, t):
    p = torch.ones(2, dtype=F64)
    match = "steps must be|t must be finite"
    check_raises(lambda: ib.flow(lambda q: -q, p, t, steps=steps), p, ValueError, match)


def test_flow_reports_a_diverging_field():
    p = torch.ones(2, dtype=F64)
    check_raises(lambda: ib.flow(lambda q: q**3, p, 10.0, steps=2), p, FloatingPointError, "the flow")


def test_local_errors_rejects_a_bad_learning_rate_in_the_list():
    p = torch.ones(2, dtype=F64)
    update, field = (lambda q, h: q), (lambda q, h: -q)
    with pytest.raises(ValueError, match="every entry of lrs must be > 0"):
        ib.local_errors(update, field, p, [0.1, 0.0])


# ----- no mutation on successful calls ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("kind", ["tensor", "dict", "dict requiring grad", "mixed"])
def test_successful_calls_do_not_mutate(name, kind):
    if kind == "tensor":
        p = torch.tensor([0.3, -1.2, 0.7], dtype=F64)
    elif kind == "mixed":
        p = dict_params()
        p["w"].requires_grad_(True)
    else:
        p = dict_params(requires_grad=kind == "dict requiring grad")
    before = snapshot(p)
    CALLS[name](quartic, p)
    assert_unchanged(p, before)


def test_a_models_own_parameters_are_not_mutated():
    """params = dict(model.named_parameters()) (leaves requiring grad): every call leaves them,
    their flags and their .grad alone, and the model's parameters stay the same objects."""
    problem = mlp_problem(n_tasks=2)
    model, (La, Lb) = problem.model, problem.losses
    own = dict(model.named_parameters())
    ids = {k: id(t) for k, t in own.items()}
    before = snapshot(own)
    v = ib.pytree.tree_map(torch.ones_like, own)
    ib.grad(La, own)
    ib.hvp(La, own, v)
    ib.lie_bracket(La, Lb, own)
    ib.cosine(La, Lb, own)
    ib.gd_field(La, own, LR)
    ib.multitask_field([La, Lb], own, LR)
    ib.sequential_field([La, Lb], own, LR)
    ib.sequential_steps([La, Lb], own, LR)
    ib.flow(lambda q: ib.gd_field(La, q, LR), own, LR, steps=2)
    ib.modified_loss(La, own, LR)  # a graph is built, but nothing is accumulated
    ib.multitask_terms([La, Lb], own, LR)
    assert_unchanged(own, before)
    assert {k: id(t) for k, t in model.named_parameters()} == ids
    assert all(t.requires_grad for t in model.parameters())


def test_returned_vectors_are_new_tensors():
    """Results never alias the caller's storage (changing them in place is safe)."""
    p = dict_params()
    before = snapshot(p)
    zero = lambda q: ib.scale(q, 0.0)  # noqa: E731
    outs = (ib.gd_step(quartic, p, LR), ib.flow(zero, p, 1.0, steps=1), ib.pytree.clone(p))
    for out in outs:
        for k in p:
            out[k].add_(1.0)
    assert_unchanged(p, before)


def test_hvp_does_not_mutate_v():
    p = dict_params()
    v = dict_params(requires_grad=True)
    before = snapshot(v)
    ib.hvp(quartic, p, v)
    assert_unchanged(v, before)


# ---- issue 17: clear errors for the raw ones (one test per row of the table) ----

def _tiny():
    model = ib.models.mlp([3, 5, 2], seed=0, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=gen, dtype=F64), torch.randint(0, 2, (7,), generator=gen)
    return model, x, y


def test_row_loss_that_ignores_params_raises_instead_of_zeros():
    model, x, y = _tiny()
    ce = torch.nn.functional.cross_entropy
    p = ib.params_of(model)
    mistake = lambda q: ce(model(x), y)  # noqa: E731  (the classic mistake, on purpose)
    for call in (lambda: ib.grad(mistake, p), lambda: ib.lie_bracket(mistake, mistake, p),
                 lambda: ib.hvp(mistake, p, p), lambda: ib.modified_loss(mistake, p, LR)):
        with pytest.raises(ValueError, match="calls the model directly"):
            call()
    const = lambda q: torch.tensor(1.0, dtype=F64)  # noqa: E731
    assert float(ib.norm(ib.grad(const, p, allow_constant=True))) == 0.0
    assert float(ib.norm(ib.lie_bracket(ib.allow_constant(const), ib.allow_constant(const), p))) == 0.0
    # a loss of a subset of params is fine (zeros for the others)
    g = ib.grad(lambda q: (q["0.weight"] ** 2).sum(), p)
    assert float(ib.norm(g["2.weight"])) == 0.0


def test_row_params_with_a_wrong_shape_or_dtype():
    model, x, y = _tiny()
    loss = ib.model_loss(model, torch.nn.functional.cross_entropy, x, y)
    p = ib.params_of(model)
    bad = dict(p, **{"0.weight": torch.zeros(5, 4, dtype=F64)})
    with pytest.raises(ValueError, match=r"params\['0.weight'\] has shape \(5, 4\)"):
        ib.grad(loss, bad)
    bias = dict(p, **{"0.bias": torch.zeros(1, dtype=F64)})  # would broadcast silently
    with pytest.raises(ValueError, match="shape"):
        ib.grad(loss, bias)
    single = {k: t.float() for k, t in p.items()}  # float32 params, float64 inputs
    with pytest.raises(ValueError, match="different dtypes"):
        ib.grad(loss, single)
    part = {"0.weight": p["0.weight"].float()}  # float32 subset, the rest float64
    with pytest.raises(ValueError, match="dtype"):
        ib.grad(loss, part)


def test_row_numpy_integer_seed_is_converted_at_construction():
    np = pytest.importorskip("numpy")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 3, dtype=F64), torch.randint(0, 2, (6,))
    loss = ib.model_loss(model, torch.nn.functional.cross_entropy, x, y, seed=np.int64(3))
    assert type(loss.seed) is int and loss.seed == 3
    p = ib.params_of(model)
    same = ib.model_loss(model, torch.nn.functional.cross_entropy, x, y, seed=3)
    assert torch.equal(loss(p), same(p))
    with pytest.raises(TypeError, match="seed"):
        ib.model_loss(model, torch.nn.functional.cross_entropy, x, y, seed=np.float64(3))


def test_row_backward_with_every_parameter_frozen_says_nothing_requires_grad():
    model, x, y = _tiny()
    model.requires_grad_(False)
    loss = ib.model_loss(model, torch.nn.functional.cross_entropy, x, y)
    objective = ib.modified_loss(loss, dict(model.named_parameters()), LR)
    assert math.isfinite(float(objective))
    with pytest.raises(RuntimeError, match="nothing requires grad"):
        objective.backward()
    terms = ib.multitask_terms([loss, loss], dict(model.named_parameters()), LR)
    with pytest.raises(RuntimeError, match="nothing requires grad"):
        terms["modified"].backward()
    # a detached copy stays detached (no graph)
    assert not ib.modified_loss(loss, ib.params_of(model), LR).requires_grad
