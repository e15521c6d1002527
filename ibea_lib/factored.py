"""A faster exact bracket for MLPs: Hessian terms through batch×batch Gram matrices.

Every bracket and modified field of :mod:`ibea_lib.bea` is a sum of Hessian-vector products
Σ_k H_k u_k whose vectors are combinations of the task gradients, u_k = Σ_j C_kj g_j (the bracket
[∇L_a, ∇L_b] = H_b g_a − H_a g_b has C = [[0, −1], [1, 0]]). For a network whose parametrized
layers are ``nn.Linear``, the weight gradient of layer l for task j is δ_jᵀ a_j (the back-propagated
errors δ_j and the layer inputs a_j of the batch), of rank ≤ batch. A product of the layer's
input with that gradient, a_k (δ_jᵀ a_j)ᵀ = (a_k a_jᵀ) δ_j, then goes through the small Gram
matrix a_k a_jᵀ (batch × batch), shared by both tasks, and no task gradient is ever formed. With
the tangents of the forward and backward passes (Pearlmutter's R-operator, written out layer by
layer) the whole sum costs about 1.7–1.9 times the two task gradients, where the generic double
backward costs 2.5–3 times (see ``benchmarks/``).

:func:`hessian_terms` does this when it applies and is cheaper, and returns ``None`` otherwise, so
``ib.lie_bracket``, ``ib.sequential_field`` and ``ib.bracket_sum`` call it first and fall back to
the generic reverse-over-reverse pass.

**The rule.** The factored path rebuilds the network itself, so it runs only when it can *prove*
that it computes the same function as the model; in every other case the generic path runs,
silently and exactly. It applies only when all of these hold:

* every loss is an :class:`ibea_lib.ModelLoss` (made by ``ib.model_loss``; exact type: no
  subclasses, no other object with ``model``/``criterion`` attributes, no closure or
  ``lambda p: loss(p)``) of the *same* model;
* the model is an ``nn.Sequential`` of exact type, and its children, walked in execution order,
  are: an optional ``nn.Flatten(1, -1)`` first, then ``nn.Linear`` layers (with or without bias),
  each followed by at most one activation of one of these exact types (no subclasses), with no
  parameters, buffers or submodules and not ``inplace=True``: ``Tanh``, ``Sigmoid``, ``ReLU``,
  ``GELU``, ``SiLU``, ``Softplus``, ``ELU``, ``CELU``, ``SELU``, ``LeakyReLU``, ``Softsign``,
  ``Mish``; ``nn.Identity`` anywhere after the first layer;
* every child appears once and every parameter belongs to one layer (a module used twice, a shared
  activation instance or tied weights → generic path); no module has an instance-level
  ``forward``;
* no forward hook, forward pre-hook or backward hook on the model or on any child, and no global
  module hook (``torch.nn.modules.module.register_module_forward_hook`` and friends);
* autocast is off (CPU and CUDA) and inference mode is off;
* every criterion is one of ``nn.CrossEntropyLoss``, ``nn.MSELoss``, ``nn.BCEWithLogitsLoss``,
  ``nn.NLLLoss``, ``nn.HuberLoss``, ``nn.SmoothL1Loss``, ``nn.L1Loss`` (exact types, without hooks,
  ``reduction`` "mean" or "sum") or the functions ``F.cross_entropy``, ``F.mse_loss``,
  ``F.binary_cross_entropy_with_logits``, ``F.nll_loss``, ``F.huber_loss``, ``F.smooth_l1_loss``,
  ``F.l1_loss`` themselves (its own Hessian is taken by autograd on the small output tensor);
* the inputs of each task are one floating tensor, 2-D (or flattened to 2-D by the leading
  ``Flatten``), with at least one row, of the params' dtype and device;
* ``params`` holds all the model's parameters, of the model's shapes, in one floating dtype and on
  one device.

Convolutions, normalization layers, attention and anything else take the generic path. The
result is exact (the same numbers as the double backward, to round-off); the differential test
``tests/test_fastpath_differential.py`` checks it on generated models.
``with ib.factored.disabled(): ...`` forces the generic path (for comparisons).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module

from .autodiff import ModelLoss

__all__ = ["applies", "bracket_sum_coefficients", "disabled", "hessian_terms", "sequential_coefficients"]

_ENABLED = [True]
_MODE = [None]  # tests: "gram" or "explicit" on every layer instead of the cheaper one


@contextlib.contextmanager
def disabled():
    """Within this block the core calls use the generic double backward only."""
    old = _ENABLED[0]
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = old


def sequential_coefficients(n: int, h: float) -> list[list[float]]:
    """C of ``ib.sequential_field``: u_k = (h/2)(2 Σ_{j<k} g_j − Σ_j g_j), i.e. C_kj = ±h/2."""
    return [[h / 2 if j < k else -h / 2 for j in range(n)] for k in range(n)]


def bracket_sum_coefficients(n: int) -> list[list[float]]:
    """C of ``ib.bracket_sum``: u_k = Σ_{j<k} g_j − Σ_{j>k} g_j."""
    return [[1.0 if j < k else (-1.0 if j > k else 0.0) for j in range(n)] for k in range(n)]


_ACTIVATIONS = frozenset({
    nn.Tanh, nn.Sigmoid, nn.ReLU, nn.GELU, nn.SiLU, nn.Softplus, nn.ELU, nn.CELU, nn.SELU,
    nn.LeakyReLU, nn.Softsign, nn.Mish,
})
_CRITERION_MODULES = frozenset({
    nn.CrossEntropyLoss, nn.MSELoss, nn.BCEWithLogitsLoss, nn.NLLLoss, nn.HuberLoss,
    nn.SmoothL1Loss, nn.L1Loss,
})
_CRITERION_FUNCTIONS = (
    F.cross_entropy, F.mse_loss, F.binary_cross_entropy_with_logits, F.nll_loss, F.huber_loss,
    F.smooth_l1_loss, F.l1_loss,
)
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks", "_global_forward_hooks_always_called")


def _parts(loss):
    """(model, criterion, inputs, targets) of an ``ib.ModelLoss`` (exact type), or None."""
    if type(loss) is not ModelLoss:
        return None
    return loss.model, loss.criterion, loss.inputs, loss.targets


def _plain(mod: nn.Module) -> bool:
    """No hooks and no instance-level ``forward`` on this module."""
    if any(getattr(mod, h, None) for h in _MODULE_HOOKS):
        return False
    return "forward" not in vars(mod) and "__call__" not in vars(mod)


def _no_global_hooks() -> bool:
    return not any(getattr(_module, h, None) for h in _GLOBAL_HOOKS)


def _autocast_on() -> bool:
    for device in ("cpu", "cuda", "mps", "xpu"):
        try:
            if torch.is_autocast_enabled(device):
                return True
        except TypeError:  # older torch: no device argument
            return bool(torch.is_autocast_enabled()) or bool(torch.is_autocast_cpu_enabled())
        except RuntimeError:  # a device type this build does not know
            continue
    return False


def _criterion_ok(criterion) -> bool:
    if type(criterion) in _CRITERION_MODULES:
        return (_plain(criterion) and not criterion._modules and not criterion._parameters
                and getattr(criterion, "reduction", None) in ("mean", "sum"))
    return any(criterion is f for f in _CRITERION_FUNCTIONS)


def _layers(model):
    """[(linear_name, linear, activation or None)] and whether a Flatten comes first, or None.

    Walks ``model._modules`` (every child in execution order, repeated ones included: unlike
    ``named_children()``, which skips a module seen before) and proves the structure of the rule
    in the module docstring; None as soon as anything is not covered.
    """
    if type(model) is not nn.Sequential or not _plain(model) or model._parameters or model._buffers:
        return None
    mods = list(model._modules.items())
    seen: set[int] = set()
    for _, mod in mods:
        if mod is None or id(mod) in seen or not _plain(mod) or mod._modules:
            return None
        seen.add(id(mod))
    flatten = False
    if mods and type(mods[0][1]) is nn.Flatten:
        if (mods[0][1].start_dim, mods[0][1].end_dim) != (1, -1) or mods[0][1]._parameters:
            return None
        flatten, mods = True, mods[1:]
    layers = []
    params_seen: set[int] = set()
    for name, mod in mods:
        kind = type(mod)
        if kind is nn.Linear:
            own = mod._parameters
            if set(own) != {"weight", "bias"} or mod._buffers or own["weight"] is None:
                return None
            for p in own.values():
                if p is not None:
                    if id(p) in params_seen:
                        return None  # tied weights: named_parameters() would hide the second use
                    params_seen.add(id(p))
            layers.append([name, mod, None])
        elif kind is nn.Identity and layers:
            continue
        elif kind in _ACTIVATIONS and layers and layers[-1][2] is None:
            if mod._parameters or mod._buffers or getattr(mod, "inplace", False):
                return None
            layers[-1][2] = mod
        else:
            return None
    return (layers, flatten) if layers else None


def applies(losses: Sequence, params) -> bool:
    """Whether ``ibea_lib.factored.hessian_terms`` can take the factored path (the module's rule)."""
    return _plan(losses, params) is not None


def _plan(losses, params):
    if not _ENABLED[0] or not isinstance(params, Mapping) or len(losses) < 1 or len(params) == 0:
        return None
    if torch.is_inference_mode_enabled() or _autocast_on() or not _no_global_hooks():
        return None  # the generic path decides (or says what to do)
    parts = [_parts(f) for f in losses]
    if any(p is None for p in parts) or any(p[0] is not parts[0][0] for p in parts):
        return None
    if not all(_criterion_ok(p[1]) for p in parts):
        return None
    model = parts[0][0]
    structure = _layers(model)
    if structure is None:
        return None
    layers, flatten = structure
    names = {f"{name}.{k}" for name, lin, _ in layers for k, p in lin._parameters.items() if p is not None}
    if set(params) != names or len(params) != len(names):
        return None
    values = list(params.values())
    if not all(isinstance(v, Tensor) for v in values):
        return None
    dtype, device = values[0].dtype, values[0].device
    if not dtype.is_floating_point or any(v.dtype != dtype or v.device != device for v in values):
        return None
    if device.type == "meta" or any(v.is_inference() for v in values):
        return None
    weights = []
    for name, lin, act in layers:
        w = params.get(f"{name}.weight")
        b = params.get(f"{name}.bias")
        if w is None or w.shape != lin.weight.shape or (lin.bias is None) != (b is None):
            return None
        if b is not None and b.shape != lin.bias.shape:
            return None
        weights.append((name, w, b, act))
    xs = []
    for _, _, x, _ in parts:
        if type(x) not in (Tensor, nn.Parameter) or x.dim() < 2 or x.device != device or x.dtype != dtype:
            return None
        x = x.reshape(x.shape[0], -1) if flatten else x
        if x.dim() != 2 or x.shape[1] != weights[0][1].shape[1] or x.shape[0] == 0:
            return None
        xs.append(x)
    return weights, xs, [p[1] for p in parts], [p[3] for p in parts]


def _layer_costs(n, m, sizes, C, first):
    """Flops of the two ways to multiply with Σ_j C_kj g_j at one layer: (Gram, explicit).

    Gram: batch×batch blocks a_k a_jᵀ (and δ_k δ_jᵀ); explicit: form g_j = δ_jᵀ a_j, combine,
    multiply. The bracket (C off-diagonal) prefers Gram blocks; a dense C (the sequential field)
    prefers the explicit form on layers whose widths are small next to the batch.
    """
    T = len(sizes)
    pairs = [(k, j) for k in range(T) for j in range(T) if C[k][j] != 0]
    needed = {(min(k, j), max(k, j)) for k, j in pairs}
    gram = sum(sizes[k] * sizes[j] for k, j in needed) * (m + (0 if first else n))
    gram += sum(sizes[k] * sizes[j] for k, j in pairs) * (n + (0 if first else m))
    cols = {j for _, j in pairs}
    rows = {k for k, _ in pairs}
    explicit = n * m * (sum(sizes[j] for j in cols) + sum(sizes[k] for k in rows) * (1 if first else 2))
    return gram, explicit


def _cheaper(weights, sizes, C) -> bool:
    """Flop estimate: the factored path against the generic double backward."""
    s = sum(sizes)
    gen = fac = 0.0
    for i, (_, w, _, _) in enumerate(weights):
        n, m = w.shape
        unit = s * n * m
        gen += unit * (6 if i == 0 else 9)
        fac += unit * (2 if i == 0 else 6) + min(_layer_costs(n, m, sizes, C, i == 0))
    return fac < 0.9 * gen


def _activation(act, z):
    """(a, σ'(z), σ''(z) or None) for an elementwise activation."""
    if act is None:
        return z, None, None
    if type(act) is nn.Tanh:
        a = torch.tanh(z)
        d1 = 1 - a * a
        return a, d1, -2 * a * d1
    if type(act) is nn.Sigmoid:
        a = torch.sigmoid(z)
        d1 = a * (1 - a)
        return a, d1, d1 * (1 - 2 * a)
    if type(act) is nn.ReLU:
        return torch.relu(z), (z > 0).to(z.dtype), None
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        a = act(zz)
        (d1,) = torch.autograd.grad(a.sum(), zz, create_graph=True)
        d2 = torch.autograd.grad(d1.sum(), zz)[0] if d1.requires_grad else None
    return a.detach(), d1.detach(), d2


def hessian_terms(losses: Sequence, params, C, e=None, *, force: bool = False):
    """Σ_k H_k (Σ_j C[k][j] g_j) + Σ_j e[j] g_j by the factored path, or None where it does not apply.

    ``C`` is a T×T nested sequence of numbers (T = number of losses), ``e`` an optional length-T
    sequence. The result has the structure of ``params`` (detached). ``force=True`` skips the
    cost estimate (the factored path is taken whenever it applies; for tests).
    """
    plan = _plan(losses, params)
    if plan is None:
        return None
    weights, xs, criteria, targets = plan
    sizes = [x.shape[0] for x in xs]
    if not force and not _cheaper(weights, sizes, C):
        return None
    try:
        with torch.no_grad():
            return _compute(params, weights, xs, criteria, targets, C, e)
    except _Fallback:
        return None


class _Fallback(Exception):
    """Raised inside the factored computation when the generic path must decide (e.g. bad losses)."""


def _rows(vectors, sizes, like):
    """Per-row scale: vectors[k] repeated over the rows of task k (a column ΣB × 1)."""
    return torch.cat([torch.full((b, 1), float(v), dtype=like.dtype, device=like.device)
                      for v, b in zip(vectors, sizes)])


def _compute(params, weights, xs, criteria, targets, C, e):
    T = len(xs)
    sizes = [x.shape[0] for x in xs]
    bounds = [0]
    for b in sizes:
        bounds.append(bounds[-1] + b)
    sl = [slice(bounds[k], bounds[k + 1]) for k in range(T)]
    pairs = [(k, j) for k in range(T) for j in range(T) if C[k][j] != 0]
    needed = sorted({(min(k, j), max(k, j)) for k, j in pairs})
    L = len(weights)

    # forward: inputs a[l] of layer l, pre-activations' derivatives d1, d2
    a = [torch.cat(xs) if T > 1 else xs[0]]
    d1s, d2s = [], []
    for _, w, b, act in weights:
        z = torch.addmm(b, a[-1], w.t()) if b is not None else a[-1] @ w.t()
        out, d1, d2 = _activation(act, z)
        a.append(out)
        d1s.append(d1)
        d2s.append(d2)

    # the criterion: output gradients (kept differentiable for its Hessian-vector products)
    outs, douts = [], []
    with torch.enable_grad():
        for k in range(T):
            o = a[L][sl[k]].detach().requires_grad_(True)
            value = criteria[k](o, targets[k])
            if not isinstance(value, Tensor) or value.dim() != 0 or not value.is_floating_point():
                raise _Fallback  # the generic path raises the clear error
            (g,) = torch.autograd.grad(value, o, create_graph=True)
            outs.append(o)
            douts.append(g)
    dout = torch.cat([g.detach() for g in douts]) if T > 1 else douts[0].detach()

    # backward: delta[l] = ∂L/∂z_l (rows of every task), e_in[l] = delta[l+1] W_{l+1}
    delta = [None] * L
    e_in = [None] * L  # e_in[l]: the error at the output of layer l's activation
    e_in[L - 1] = dout
    for i in range(L - 1, -1, -1):
        delta[i] = e_in[i] * d1s[i] if d1s[i] is not None else e_in[i]
        if i > 0:
            e_in[i - 1] = delta[i] @ weights[i][1]

    def block_products(left, right, mats):
        """R[sl_k] = Σ_j C[k][j] (left_k left_jᵀ) right_j, with one Gram block per unordered pair."""
        grams = {}
        for k, j in needed:
            grams[(k, j)] = left[sl[k]] @ left[sl[j]].t()
        out = torch.empty(left.shape[0], right.shape[1], dtype=right.dtype, device=right.device)
        started = set()
        for k, j in pairs:
            g = grams[(k, j)] if k <= j else grams[(j, k)].t()
            beta = 1.0 if k in started else 0.0  # beta = 0: the empty rows are ignored, not read
            out[sl[k]].addmm_(g if mats is None else g + mats, right[sl[j]], beta=beta, alpha=float(C[k][j]))
            started.add(k)
        for k in range(T):
            if k not in started:
                out[sl[k]].zero_()
        return out

    def directions(i):
        """U_k = Σ_j C_kj g_j at layer i (weight, bias), formed explicitly."""
        g = {j: (delta[i][sl[j]].t() @ a[i][sl[j]], delta[i][sl[j]].sum(0)) for j in {j for _, j in pairs}}
        us = {}
        for k, j in pairs:
            w_j, b_j = g[j]
            c = float(C[k][j])
            if k in us:
                us[k][0].add_(w_j, alpha=c)
                us[k][1].add_(b_j, alpha=c)
            else:
                us[k] = (w_j * c, b_j * c)
        return us

    def apply_directions(rows, us, transpose, bias):
        """out[sl_k] = rows_k U_kᵀ (+ c_k) if transpose, else rows_k U_k."""
        width = us[next(iter(us))][0].shape[0 if transpose else 1]
        out = torch.zeros(rows.shape[0], width, dtype=rows.dtype, device=rows.device)
        for k, (u_w, u_b) in us.items():
            if transpose:
                out[sl[k]].addmm_(rows[sl[k]], u_w.t())
                if bias:
                    out[sl[k]].add_(u_b)
            else:
                out[sl[k]].addmm_(rows[sl[k]], u_w)
        return out

    modes = []
    for i, (_, w, _, _) in enumerate(weights):
        gram_cost, explicit_cost = _layer_costs(w.shape[0], w.shape[1], sizes, C, i == 0)
        explicit = explicit_cost < gram_cost if _MODE[0] is None else _MODE[0] == "explicit"
        modes.append(directions(i) if explicit else None)

    # tangent forward: ż_l, ȧ_l
    adot = [None] * (L + 1)  # adot[0] = 0 (the inputs do not move)
    zdot = [None] * L
    for i, (_, w, b, _) in enumerate(weights):
        if modes[i] is None:
            r = block_products(a[i], delta[i], 1.0 if b is not None else None)
        else:
            r = apply_directions(a[i], modes[i], True, b is not None)
        zd = r if adot[i] is None else r.addmm_(adot[i], w.t())
        zdot[i] = zd
        adot[i + 1] = zd * d1s[i] if d1s[i] is not None else zd

    # the criterion's Hessian times the output tangent
    with torch.enable_grad():
        ddout = []
        for k in range(T):
            if douts[k].requires_grad:
                (hd,) = torch.autograd.grad(douts[k], outs[k], adot[L][sl[k]], retain_graph=True)
            else:
                hd = torch.zeros_like(outs[k])
            ddout.append(hd.detach())
    ddout = torch.cat(ddout) if T > 1 else ddout[0]

    # tangent backward and the output, layer by layer from the top
    result = {}
    scale_rows = None if e is None else _rows(e, sizes, dout)
    e_dot = ddout
    for i in range(L - 1, -1, -1):
        name, w, b, _ = weights[i]
        dd = e_dot * d1s[i] if d1s[i] is not None else e_dot
        if d2s[i] is not None:
            dd = dd.addcmul_(d2s[i] * zdot[i], e_in[i])  # dd is a fresh tensor (d2 implies d1)
        left = dd if scale_rows is None else dd + scale_rows * delta[i]
        gw = left.t() @ a[i]
        if adot[i] is not None:
            gw.addmm_(delta[i].t(), adot[i])
        result[f"{name}.weight"] = gw
        if b is not None:
            result[f"{name}.bias"] = left.sum(0)
        if i > 0:
            if modes[i] is None:
                s = block_products(delta[i], a[i], None)
            else:
                s = apply_directions(delta[i], modes[i], False, False)
            e_dot = s.addmm_(dd, w)
    return {k: result[k] for k in params}
