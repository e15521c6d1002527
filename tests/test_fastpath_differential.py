"""Differential test of the Gram-matrix fast path (ibea_lib.factored) on generated models.

Hypothesis generates ``nn.Sequential`` models — random depths and widths, every supported
activation (and unsupported ones: subclasses, in-place, parameterized), one activation instance
used several times, one ``nn.Linear`` used twice, tied weights, bias on or off, a leading
``nn.Flatten`` with 3-D inputs or 3-D inputs without it, forward hooks — with two or three tasks
(cross-entropy with and without label smoothing, MSE, mean and sum reductions, modules and
functions, and criteria the fast path does not know), batch sizes from 1, and losses made by
``ib.model_loss`` or wrapped by the user (a lambda, an object with ``model``/``criterion``/
``inputs``/``targets`` attributes that computes something else). In float64 it checks:

* whenever ``factored.applies``, the factored result (forced, whatever the cost estimate says)
  of the bracket, the bracket sum and the sequential field against the generic path and against
  an independent reference, a plain double backward written here (no ``ibea_lib`` call);
* for every case, applied or declined, ``ib.lie_bracket``, ``ib.bracket_sum`` and
  ``ib.sequential_field`` against the same reference.

Profiles: the default run checks ``DEFAULT_EXAMPLES`` generated cases (derandomized, about 30–60 s
of CPU); ``HYPOTHESIS_PROFILE=long`` checks ``LONG_EXAMPLES`` random ones
(``HYPOTHESIS_PROFILE=long python -m pytest -q -p no:xdist tests/test_fastpath_differential.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

import ibea_lib as ib
from ibea_lib import factored

F64 = torch.float64
CE, MSE = nn.functional.cross_entropy, nn.functional.mse_loss
DEFAULT_EXAMPLES = 900
LONG_EXAMPLES = 5000
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
H = 0.1

SUPPORTED = {
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "gelu": nn.GELU,
    "gelu-tanh": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU,
    "softplus": lambda: nn.Softplus(beta=2.0), "elu": lambda: nn.ELU(0.7), "celu": lambda: nn.CELU(1.3),
    "selu": nn.SELU, "leaky": lambda: nn.LeakyReLU(0.2), "softsign": nn.Softsign, "mish": nn.Mish,
    "identity": nn.Identity, "none": None,
}


class ScaledTanh(nn.Tanh):
    """A subclass with its own forward: not the function of nn.Tanh."""

    def forward(self, x):
        return torch.tanh(x) + 0.1 * x * x


UNSUPPORTED = {
    "subclass": ScaledTanh, "elu-inplace": lambda: nn.ELU(inplace=True),
    "leaky-inplace": lambda: nn.LeakyReLU(0.1, inplace=True), "relu-inplace": lambda: nn.ReLU(inplace=True),
    "prelu": lambda: nn.PReLU(), "hardtanh": nn.Hardtanh,
}


@dataclass
class Case:
    model: nn.Module
    losses: list
    references: list  # plain functions params -> loss, for the reference double backward
    note: str


def _criterion(kind: str):
    return {
        "ce": CE, "ce-sum": lambda: nn.CrossEntropyLoss(reduction="sum"),
        "ce-smooth": lambda: nn.CrossEntropyLoss(label_smoothing=0.2),
        "ce-smooth-sum": lambda: nn.CrossEntropyLoss(label_smoothing=0.1, reduction="sum"),
        "mse": MSE, "mse-sum": lambda: nn.MSELoss(reduction="sum"), "mse-module": nn.MSELoss,
        "lambda-ce": lambda: (lambda o, t: CE(o, t) * 1.5),
    }[kind]


@st.composite
def cases(draw):
    clean = draw(st.booleans())  # half the cases use only what the fast path supports
    depth = draw(st.integers(1, 4))
    d_in = draw(st.integers(1, 6))
    widths = [draw(st.integers(1, 6)) for _ in range(depth - 1)]
    pool = list(SUPPORTED) + (list(UNSUPPORTED) if not clean and draw(st.booleans()) else [])
    acts = [draw(st.sampled_from(pool)) for _ in range(depth)]
    share_act = not clean and draw(st.booleans())
    flatten = draw(st.sampled_from(["no", "flatten-3d"] + ([] if clean else ["3d-no-flatten"])))
    out_kind = draw(st.sampled_from(["ce", "ce-sum", "ce-smooth", "ce-smooth-sum", "mse", "mse-sum",
                                     "mse-module"] + ([] if clean else ["lambda-ce"])))
    if flatten == "3d-no-flatten" and out_kind.startswith(("ce", "lambda")):
        out_kind = "mse"
    n_out = draw(st.integers(2, 4)) if out_kind.startswith(("ce", "lambda")) else draw(st.integers(1, 4))
    extra = "none" if clean else draw(
        st.sampled_from(["none", "repeat-linear", "tied", "hook", "pre-hook"]))
    wrapper = "model_loss" if clean else draw(st.sampled_from(["model_loss", "lambda", "duck"]))
    n_tasks = draw(st.integers(2, 3))
    batches = [draw(st.integers(1, 5)) for _ in range(n_tasks)]
    bias = [draw(st.booleans()) for _ in range(depth + 1)]
    seed = draw(st.integers(0, 2**31 - 1))
    return build(depth, d_in, widths, acts, share_act, flatten, out_kind, n_out, extra, wrapper,
                 batches, bias, seed)


def build(depth, d_in, widths, acts, share_act, flatten, out_kind, n_out, extra, wrapper, batches,
          bias, seed) -> Case:
    gen = torch.Generator().manual_seed(seed)
    sizes = [d_in, *widths, n_out]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        if flatten == "flatten-3d":
            layers.append(nn.Flatten())
        shared = {}
        for i in range(depth):
            layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias[i]))
            if extra == "repeat-linear" and i == 0:  # one nn.Linear used twice in a row
                square = nn.Linear(sizes[1], sizes[1], bias=bias[-1])
                layers += [nn.Tanh(), square, nn.Tanh(), square]
            kind = acts[i]
            make = SUPPORTED.get(kind, UNSUPPORTED.get(kind))
            if make is None:
                continue
            if share_act and kind in shared:
                layers.append(shared[kind])  # one instance used twice
            else:
                shared[kind] = make()
                layers.append(shared[kind])
        model = nn.Sequential(*layers).double()
        if extra == "tied":  # two more layers n_out -> n_out sharing one weight parameter
            a, b = nn.Linear(n_out, n_out).double(), nn.Linear(n_out, n_out, bias=bias[-1]).double()
            b.weight = a.weight
            model.extend([a, nn.Tanh(), b])
    handle = None
    if extra == "hook":
        target = model[len(model) // 2]
        handle = target.register_forward_hook(lambda m, i, o: o * 1.5 + 0.1)
    elif extra == "pre-hook":
        handle = model[-1].register_forward_pre_hook(lambda m, i: (i[0] * 0.7,))
    make_criterion = _criterion(out_kind)
    criterion = make_criterion() if out_kind not in ("ce", "mse") else make_criterion
    losses, references = [], []
    for n in batches:
        shape = (n, 3, d_in) if flatten == "3d-no-flatten" else (n, d_in)
        if flatten == "flatten-3d":
            layers_first = model[1]
            shape = (n, 1, layers_first.in_features)
        x = torch.randn(*shape, generator=gen, dtype=F64)
        if out_kind.startswith(("ce", "lambda")):
            y = torch.randint(0, n_out, (n,), generator=gen)
        else:
            out_shape = (n, 3, n_out) if flatten == "3d-no-flatten" else (n, n_out)
            y = torch.randn(*out_shape, generator=gen, dtype=F64)
        inner = ib.model_loss(model, criterion, x, y)

        def reference(p, x=x, y=y):
            return criterion(functional_call(model, p, (x,)), y)

        if wrapper == "lambda":
            losses.append(lambda p, f=inner: f(p))
            references.append(reference)
        elif wrapper == "duck":
            losses.append(Duck(inner))
            references.append(lambda p, r=reference: r(p) + Duck.extra(p))
        else:
            losses.append(inner)
            references.append(reference)
    note = (f"sizes={sizes} acts={acts} share={share_act} flatten={flatten} out={out_kind} "
            f"extra={extra} wrapper={wrapper} batches={batches} bias={bias}")
    case = Case(model, losses, references, note)
    case.handle = handle
    return case


class Duck:
    """A user's loss object with model/criterion/inputs/targets attributes that adds a term."""

    def __init__(self, inner):
        self.model, self.criterion = inner.model, inner.criterion
        self.inputs, self.targets, self.inner = inner.inputs, inner.targets, inner

    @staticmethod
    def extra(p):
        return 0.05 * sum((t ** 2).sum() for t in p.values()) ** 1.5

    def __call__(self, p):
        return self.inner(p) + self.extra(p)


def reference_terms(fns, params, C, e=None):
    """Σ_k H_k (Σ_j C_kj g_j) + Σ_j e_j g_j by a plain double backward (no ibea_lib call)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    xs = list(leaves.values())
    gs = [torch.autograd.grad(f(leaves), xs, create_graph=True, allow_unused=True) for f in fns]
    gs = [[torch.zeros_like(x) if g is None else g for x, g in zip(xs, gk)] for gk in gs]
    T = len(fns)
    s = 0.0
    for k in range(T):
        for j in range(T):
            if C[k][j] != 0:
                s = s + C[k][j] * sum((a * b.detach()).sum() for a, b in zip(gs[k], gs[j]))
    differentiable = torch.is_tensor(s) and s.requires_grad
    hv = torch.autograd.grad(s, xs, allow_unused=True) if differentiable else [None] * len(xs)
    out = [torch.zeros_like(x) if h is None else h for x, h in zip(xs, hv)]
    if e is not None:
        out = [o + sum(e[j] * gs[j][i].detach() for j in range(T)) for i, o in enumerate(out)]
    scale = sum(float(sum((g.detach() ** 2).sum() for g in gk)) for gk in gs)
    return dict(zip(leaves, [o.detach() for o in out])), scale


def close(got, want, scale, what, note):
    err = float(ib.norm(ib.sub(got, want)))
    size = float(ib.norm(want))
    assert err <= 1e-9 * size + 1e-12 * (1.0 + scale), f"{what}: error {err:.3e} of {size:.3e}; {note}"


def check(case: Case):
    model, losses, refs = case.model, case.losses, case.references
    p = ib.params_of(model)
    T = len(losses)
    problems = {
        "lie_bracket": ([[0.0, -1.0], [1.0, 0.0]], None, 2),
        "bracket_sum": (factored.bracket_sum_coefficients(T), None, T),
        "sequential_field": (factored.sequential_coefficients(T, H), [-1.0] * T, T),
    }
    applies = factored.applies(losses, p)
    for name, (C, e, n) in problems.items():
        want, scale = reference_terms(refs[:n], p, C, e)
        public = {
            "lie_bracket": lambda: ib.lie_bracket(losses[0], losses[1], p),
            "bracket_sum": lambda: ib.bracket_sum(losses, p),
            "sequential_field": lambda: ib.sequential_field(losses, p, H),
        }[name]
        close(public(), want, scale, f"{name} (public call, applies={applies})", case.note)
        if applies:
            fast = factored.hessian_terms(losses[:n], p, C, e, force=True)
            assert fast is not None, case.note
            close(fast, want, scale, f"{name} (factored path)", case.note)
            with factored.disabled():
                close(public(), fast, scale, f"{name} (generic vs factored)", case.note)
    return applies


COUNTS = {"applied": 0, "declined": 0}


@settings(max_examples=LONG_EXAMPLES if LONG else DEFAULT_EXAMPLES, deadline=None,
          derandomize=not LONG, database=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_fast_path_agrees_with_the_generic_path_and_a_reference(case):
    try:
        COUNTS["applied" if check(case) else "declined"] += 1
    finally:
        if case.handle is not None:
            case.handle.remove()


def teardown_module():
    """How many generated cases took the factored path (shown with ``pytest -s``)."""
    print(f"\nfast-path differential test: {COUNTS['applied']} cases where the factored path applied, "
          f"{COUNTS['declined']} declined (generic path), all equal to the reference")


def test_global_hooks_are_seen():
    from torch.nn.modules import module as m

    case = build(2, 3, [4], ["tanh", "none"], False, "no", "ce", 3, "none", "model_loss", [3, 4],
                 [True, True, True], 0)
    assert factored.applies(case.losses, ib.params_of(case.model))
    handle = m.register_module_forward_hook(lambda mod, i, o: o * 1.25)
    try:
        assert not check(case)
    finally:
        handle.remove()


def test_generation_covers_both_paths():
    """The strategy reaches both outcomes (the property test is not vacuous)."""
    applied = build(3, 4, [5, 3], ["gelu", "mish", "none"], False, "flatten-3d", "ce-smooth", 3, "none",
                    "model_loss", [1, 2], [True, False, True, True], 1)
    declined = build(3, 4, [4, 4], ["tanh", "tanh", "none"], True, "no", "mse-sum", 2, "none",
                     "model_loss", [2, 3, 1], [True, True, True, True], 2)
    assert check(applied) and not check(declined)
