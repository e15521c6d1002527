"""Derivatives of losses written as functions of parameters: the one pipeline of the library.

A *loss* is a callable ``loss(params) -> 0-dim tensor``; :func:`model_loss` turns a
``torch.nn.Module`` and a batch into one (a :class:`ModelLoss`). Every derivative in
:mod:`ibea_lib` is taken by three functions of this module, in this order of generality:

* :func:`value_and_grad` — (L(θ), ∇L(θ)): every loss evaluation and first derivative;
* :func:`gradient_terms` — ``combine([L_i], [∇L_i])``, a number (or a dict of numbers) built from
  values and gradients, differentiable in θ when θ requires grad (modified losses, explicit
  regularizers, metrics);
* :func:`hessian_terms` — Σ_k H_k u_k for vectors u_k made from the gradients, in one extra
  reverse pass (HVPs, brackets, modified fields).

All three follow the same steps: differentiable leaves (fresh aliases of the caller's tensors,
or the tensors themselves when they already require grad) → evaluate → gradients → combine →
one fused finiteness check → detach (unless the caller's tensors require grad and the result is
documented as differentiable). The caller's tensors, modules, buffers and RNG state are never
changed. Every call works inside ``torch.no_grad()`` (gradients are enabled inside); inside
``torch.inference_mode()`` it raises, because autograd cannot record there. Losses that are
differentiated twice are evaluated with the math kernel of scaled-dot-product attention (the
fused kernels have no double backward); the caller's kernel setting is restored afterwards.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from .pytree import (
    Params,
    all_finite,
    check_params,
    check_positive_int,
    check_same_structure,
    dot,
    not_params_message,
    rebuild,
    tensors,
)

Loss = Callable[[Params], Tensor]
"""A function ``params -> 0-dim tensor``."""


# --------------------------------------------------------------------------------------------
# Losses of modules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ModelLoss:
    """The loss ``params -> criterion(model(inputs; params), targets)`` (made by :func:`model_loss`).

    ``params`` is a dict ``{name: tensor}`` of some or all of the model's parameters (the others,
    and the buffers, are the model's own); it is applied with ``torch.func.functional_call``.
    A call is a deterministic function of ``params`` and never changes the model:

    * **mode**: the model is used in the mode it is in (``model.train()`` / ``model.eval()``);
    * **buffers**: in train mode every buffer is replaced by a copy for the call, so BatchNorm uses
      the batch statistics and its ``running_mean``, ``running_var`` and ``num_batches_tracked``
      stay bit-identical;
    * **randomness**: the call runs in ``torch.random.fork_rng``, so the global RNG never
      advances. A model that draws random numbers (Dropout in train mode, attention dropout)
      needs ``seed``: the draws are then made from ``torch.manual_seed(seed)`` inside the fork,
      the same mask at every call (so ``lie_bracket(L, L, θ)`` is exactly 0). Without ``seed``
      such a model raises ``RuntimeError`` (call ``model.eval()`` or pass ``seed``);
    * **BatchNorm running statistics are never updated** through a model loss (nor through any
      ``ib.*`` objective built on it, e.g. ``ib.modified_loss(...).backward()`` in a training
      loop): the buffers are copies. To refresh them, run the model itself in train mode, e.g.
      ``with torch.no_grad(): model.train(); model(x)`` (see :func:`ibea_lib.update_buffers`);
    * **checks**: every tensor of ``params`` must have the shape of the model's parameter of that
      name (a wrong shape could otherwise broadcast silently); a forward pass that fails because
      params, inputs and the model's other parameters disagree in dtype or device raises a
      ``ValueError`` that says so. ``seed`` may be any integer (a NumPy integer is converted).

    The modules of the model are read once, when the loss is made (adding modules to the model
    afterwards is not supported: make a new loss).
    """

    model: torch.nn.Module
    criterion: Callable[[Any, Any], Tensor]
    inputs: Any = field(repr=False)
    targets: Any = field(repr=False)
    seed: int | None = None
    _names: frozenset = field(init=False, repr=False)
    _shapes: dict = field(init=False, repr=False)
    _modules: tuple = field(init=False, repr=False)
    _cuda: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(self.model).__name__}")
        if not callable(self.criterion):
            raise TypeError(
                "criterion must be callable (outputs, targets) -> tensor, "
                f"got {type(self.criterion).__name__}"
            )
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
                raise TypeError(f"seed must be an int or None, got {type(self.seed).__name__}")
            object.__setattr__(self, "seed", int(self.seed))  # numpy.int64 -> int (torch needs int)
        state = [*self.model.parameters(), *self.model.buffers(), self.inputs, self.targets]
        cuda = sorted({t.device.index or 0 for t in state if isinstance(t, Tensor) and t.is_cuda})
        shapes = {k: p.shape for k, p in self.model.named_parameters()}
        object.__setattr__(self, "_names", frozenset(shapes))
        object.__setattr__(self, "_shapes", shapes)
        object.__setattr__(self, "_modules", tuple(self.model.modules()))
        object.__setattr__(self, "_cuda", tuple(cuda))

    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(params, Mapping):
            raise TypeError(
                "a model loss takes a dict {name: tensor} of the model's parameters, "
                f"got {type(params).__name__}"
            )
        shapes = self._shapes
        for k, v in params.items():
            want = shapes.get(k)
            if want is None:
                unknown = sorted(params.keys() - self._names)
                raise ValueError(f"params has keys that are not parameters of the model: {unknown}")
            if not isinstance(v, Tensor):
                raise TypeError(f"params[{k!r}] must be a torch.Tensor, got {type(v).__name__}")
            if v.shape != want:
                raise ValueError(
                    f"params[{k!r}] has shape {tuple(v.shape)}, the model's parameter has {tuple(want)}"
                )
        model = self.model
        state: Any = params
        if any(m._buffers for m in self._modules) and any(m.training for m in self._modules):
            state = (params, {k: b.clone() for k, b in model.named_buffers()})
        cuda = self._cuda or tuple(sorted({t.device.index or 0 for t in params.values() if t.is_cuda}))
        try:
            if self.seed is not None:
                with torch.random.fork_rng(devices=cuda):
                    _seed_forked(self.seed, cuda)
                    return self.criterion(functional_call(model, state, (self.inputs,)), self.targets)
            # no fork: the RNG state is read before and after (cheaper than fork_rng's restore);
            # a change is undone and refused
            before = _rng_state(cuda)
            try:
                out = self.criterion(functional_call(model, state, (self.inputs,)), self.targets)
            finally:
                after = _rng_state(cuda)
                changed = not all(torch.equal(a, b) for a, b in zip(before, after))
                if changed:
                    _set_rng_state(before, cuda)
            if changed:
                raise RuntimeError(
                    "the model drew random numbers (Dropout in train mode?), so the loss is not a "
                    "function of the parameters; call model.eval(), or pass seed=... to "
                    "ib.model_loss to use the same random draws at every call"
                )
            return out
        except RuntimeError as error:
            message = self._mismatch(params)
            if message is None:
                raise
            raise ValueError(message) from error

    def _mismatch(self, params: Mapping[str, Tensor]) -> str | None:
        """A clear message when params, inputs and the model's other tensors disagree in dtype/device."""
        named = {f"params[{k!r}]": v for k, v in params.items()}
        named.update({f"the model's parameter {k!r}": p for k, p in self.model.named_parameters()
                      if k not in params})
        if isinstance(self.inputs, Tensor):
            named["inputs"] = self.inputs
        floats = {k: v for k, v in named.items() if v.is_floating_point()}
        for what, values in (("dtype", {k: v.dtype for k, v in floats.items()}),
                             ("device", {k: v.device for k, v in named.items()})):
            if len(set(values.values())) > 1:
                groups: dict = {}
                for k, v in values.items():
                    groups.setdefault(v, []).append(k)
                parts = "; ".join(f"{v}: {', '.join(ks[:3])}{' …' if len(ks) > 3 else ''}"
                                  for v, ks in groups.items())
                return (f"the model's forward pass failed because params, inputs and the model's other "
                        f"parameters have different {what}s ({parts}); convert them to one {what} "
                        f"(e.g. model.to(...) and params = ib.params_of(model))")
        return None


def _seed_forked(seed: int, cuda: Sequence[int]) -> None:
    """Seed only the generators that the enclosing ``fork_rng`` restores (the CPU's and ``cuda``'s)."""
    torch.default_generator.manual_seed(seed)
    for d in cuda:
        with torch.cuda.device(d):
            torch.cuda.manual_seed(seed)


def _rng_state(cuda: Sequence[int]) -> list[Tensor]:
    return [torch.default_generator.get_state(), *(torch.cuda.get_rng_state(d) for d in cuda)]


def _set_rng_state(states: Sequence[Tensor], cuda: Sequence[int]) -> None:
    torch.default_generator.set_state(states[0])
    for d, state in zip(cuda, states[1:]):
        torch.cuda.set_rng_state(state, d)


def model_loss(
    model: torch.nn.Module,
    criterion: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Any,
    *,
    seed: int | None = None,
) -> ModelLoss:
    """The loss ``params -> criterion(model(inputs; params), targets)``, a :class:`ModelLoss`.

    The model is never changed (buffers, mode, RNG); BatchNorm in train mode uses batch
    statistics; a model that draws random numbers (Dropout in train mode) needs ``seed``.
    """
    return ModelLoss(model, criterion, inputs, targets, seed)


def _check_module(model: object, what: str) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"{what} takes a torch.nn.Module, got {type(model).__name__}"
            + ("; pass the model itself, not model.parameters()" if not isinstance(model, Mapping) else "")
        )
    return model


def params_of(model: torch.nn.Module) -> dict[str, Tensor]:
    """A detached copy ``{name: tensor}`` of a model's parameters (the usual ``params``)."""
    _check_module(model, "params_of")
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def load_params(model: torch.nn.Module, params: Mapping[str, Tensor]) -> None:
    """Copy ``params`` into the model's own parameters (in place, without autograd).

    Every key and shape is checked before anything is written: a failing call leaves the model
    as it was. Keys that are absent keep their values.
    """
    _check_module(model, "load_params")
    if not isinstance(params, Mapping):
        raise TypeError(not_params_message("params", params))
    own = dict(model.named_parameters())
    unknown = [k for k in params if k not in own]
    if unknown:
        raise ValueError(f"params has keys that are not parameters of the model: {unknown}")
    for k, v in params.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"params[{k!r}] must be a torch.Tensor, got {type(v).__name__}")
        if v.shape != own[k].shape:
            raise ValueError(
                f"params[{k!r}] has shape {tuple(v.shape)}, the model's has {tuple(own[k].shape)}"
            )
    with torch.no_grad():
        for k, v in params.items():
            own[k].copy_(v)


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


def _leaves(params: Params) -> tuple[Params, bool]:
    """Tensors to differentiate with respect to, and whether results should stay attached.

    A tensor that already requires grad is used as it is (so results can be differentiated
    further by the caller); any other tensor is replaced by a detached alias that requires
    grad. Neither changes the caller's tensor.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "ibea_lib cannot differentiate inside torch.inference_mode() (autograd records "
            "nothing there); call it outside, or use torch.no_grad() instead (the library "
            "enables gradients inside its own calls)"
        )
    check_params(params)
    values = tensors(params)
    attached = any(t.requires_grad for t in values)
    leaves = [t if t.requires_grad else t.detach().requires_grad_(True) for t in values]
    return rebuild(params, leaves), attached


def _evaluate(loss: Loss, params: Params, name: str) -> Tensor:
    """``loss(params)``, checked to be a floating-point 0-dim tensor (finiteness: by the caller)."""
    if not callable(loss):
        raise TypeError(f"{name} must be a callable params -> 0-dim tensor, got {type(loss).__name__}")
    value = loss(params)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 0:
        raise ValueError(
            f"{name} must return a scalar (0-dim) tensor, got shape {tuple(value.shape)}; "
            "reduce it with .mean() or .sum()"
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} returned dtype {value.dtype}; it must be floating point")
    return value


def evaluate(loss: Loss, params: Params, name: str = "loss") -> Tensor:
    """``loss(params)``, checked: a finite floating-point 0-dim tensor (no derivative is taken)."""
    value = _evaluate(loss, params, name)
    if not bool(torch.isfinite(value)):
        raise FloatingPointError(f"{name} returned {value.item()} (not finite) at these params")
    return value


def check_finite(result: Params, what: str) -> Params:
    """Return ``result``; raise ``FloatingPointError`` if it holds a NaN or an infinity."""
    if not all_finite(tensors(result)):
        raise FloatingPointError(f"{what} has non-finite entries (NaN or inf)")
    return result


_SDP_NAMES = ("cudnn", "flash", "mem_efficient", "math", "overrideable")
_SDP_FLAGS = [(getattr(torch._C, f"_get_{n}_sdp_enabled", None), getattr(torch._C, f"_set_sdp_use_{n}", None))
              for n in _SDP_NAMES]
_SDP_FAST = all(get is not None and set_ is not None for get, set_ in _SDP_FLAGS)


class _MathAttention:
    """``sdpa_kernel(SDPBackend.MATH)`` for the block, by reading and setting the five flags directly.

    The same effect as torch's context manager at a fraction of its cost (it runs at every
    differentiated evaluation); the caller's flags are restored on exit.
    """

    __slots__ = ("saved",)

    def __enter__(self):
        self.saved = [get() for get, _ in _SDP_FLAGS]
        for (_, set_), name in zip(_SDP_FLAGS, _SDP_NAMES):
            set_(name == "math")
        return self

    def __exit__(self, *exc):
        for (_, set_), flag in zip(_SDP_FLAGS, self.saved):
            set_(flag)
        return False


_NULL = contextlib.nullcontext()


def _attention_for(create_graph: bool):
    """The math SDPA kernel when the graph will be differentiated again (it has a double backward)."""
    if not create_graph:
        return _NULL
    return _MathAttention() if _SDP_FAST else sdpa_kernel(SDPBackend.MATH)


_CONSTANT_MESSAGE = (
    "{name} does not depend on any tensor of params (its gradient would be exactly zero): most "
    "likely the loss calls the model directly, e.g. lambda p: criterion(model(x), y), which "
    "uses the model's own parameters instead of p. Use ib.model_loss(model, criterion, x, y), "
    "or torch.func.functional_call(model, p, (x,)). If a constant loss is meant, pass "
    "allow_constant=True (or wrap it: ib.allow_constant(loss))"
)


class _Constant:
    """A loss that may be constant in params (see :func:`allow_constant`)."""

    allow_constant = True

    def __init__(self, loss: Loss) -> None:
        if not callable(loss):
            raise TypeError(f"allow_constant takes a loss callable, got {type(loss).__name__}")
        self.loss = loss

    def __call__(self, params: Params) -> Tensor:
        return self.loss(params)

    def __repr__(self) -> str:
        return f"allow_constant({self.loss!r})"


def allow_constant(loss: Loss) -> Loss:
    """The same loss, marked as allowed not to depend on ``params`` (its gradient is then zero).

    Every call of the library refuses a loss whose value does not depend on any tensor of
    ``params`` (the usual cause is a loss that calls the model directly); wrap a loss that is
    constant on purpose, or pass ``allow_constant=True`` to :func:`grad`, :func:`value_and_grad`,
    :func:`hvp`, :func:`gradient_terms` or :func:`hessian_terms`.
    """
    return _Constant(loss)


def _value_and_grad(
    loss: Loss, leaves: Params, create_graph: bool, name: str, constant_ok: bool = False
) -> tuple[Tensor, Params]:
    """(L, ∇L) at prepared leaves, checked: where every loss is evaluated and differentiated."""
    xs = tensors(leaves)
    with _attention_for(create_graph):
        value = _evaluate(loss, leaves, name)
        if value.requires_grad:
            gs = torch.autograd.grad(value, xs, create_graph=create_graph, allow_unused=True)
        else:  # a loss that does not depend on params
            gs = [None] * len(xs)
    if all(gi is None for gi in gs) and not (constant_ok or getattr(loss, "allow_constant", False) is True):
        raise ValueError(_CONSTANT_MESSAGE.format(name=name))
    g = rebuild(leaves, [torch.zeros_like(x) if gi is None else gi for x, gi in zip(xs, gs)])
    if not all_finite([value, *tensors(g)]):
        if not bool(torch.isfinite(value)):
            raise FloatingPointError(f"{name} returned {value.item()} (not finite) at these params")
        raise FloatingPointError(f"the gradient of {name} has non-finite entries (NaN or inf)")
    return value, g


def detach(tree: Params) -> Params:
    """The same pytree with every tensor detached (no copy)."""
    return rebuild(tree, [t.detach() for t in tensors(tree)])


@torch.enable_grad()
def value_and_grad(
    loss: Loss, params: Params, *, create_graph: bool = False, allow_constant: bool = False
) -> tuple[Tensor, Params]:
    """(L(θ), ∇L(θ)).

    With ``create_graph=True`` and ``params`` that require grad (a model's own parameters), both
    stay differentiable; otherwise both are detached. A loss that does not depend on any tensor of
    ``params`` raises ``ValueError`` (usually a loss that calls the model directly instead of
    through ``params``), unless ``allow_constant=True`` (then its gradient is zero).
    """
    leaves, attached = _leaves(params)
    value, g = _value_and_grad(loss, leaves, create_graph, "loss", allow_constant)
    if create_graph and attached:
        return value, g
    return value.detach(), detach(g)


def grad(loss: Loss, params: Params, *, allow_constant: bool = False) -> Params:
    """∇L(θ), with the structure of ``params`` (``allow_constant``: see :func:`value_and_grad`)."""
    return value_and_grad(loss, params, allow_constant=allow_constant)[1]


Combine = Callable[[list[Tensor], list[Params]], Any]
"""Values L_1…L_n and gradients g_1…g_n -> a 0-dim tensor or a dict of 0-dim tensors."""


@torch.enable_grad()
def gradient_terms(
    losses: Sequence[Loss], params: Params, combine: Combine, *, allow_constant: bool = False
) -> Any:
    """``combine([L_1(θ), …], [∇L_1(θ), …])``: a number made of values and gradients.

    The result (a 0-dim tensor, or a dict of them) is differentiable in ``params`` when they
    require grad (for instance ``dict(model.named_parameters())``): the gradients are then taken
    with ``create_graph=True``, and ``result.backward()`` differentiates through them. Otherwise it
    is detached, and no graph is kept. Every modified loss and explicit regularizer is one call.
    """
    losses = check_losses(losses)
    leaves, attached = _leaves(params)
    pairs = [_value_and_grad(f, leaves, attached, f"losses[{i}]", allow_constant)
             for i, f in enumerate(losses)]
    out = combine([v for v, _ in pairs], [g for _, g in pairs])
    values = list(out.values()) if isinstance(out, Mapping) else [out]
    if not all_finite(values):
        raise FloatingPointError("the result is not finite (a gradient overflowed)")
    if attached:
        return out
    if _frozen(params):  # the model's own parameters, all frozen: .backward() must say so
        return {k: _Frozen.apply(v.detach(), _DUMMY) for k, v in out.items()} if isinstance(
            out, Mapping) else _Frozen.apply(out.detach(), _DUMMY)
    return {k: v.detach() for k, v in out.items()} if isinstance(out, Mapping) else out.detach()


def _frozen(params: Params) -> bool:
    """Whether params are a model's own parameters (nn.Parameter), none of which requires grad."""
    values = tensors(params)
    return all(isinstance(t, torch.nn.Parameter) and not t.requires_grad for t in values)


_DUMMY = torch.zeros((), requires_grad=True)


class _Frozen(torch.autograd.Function):
    """The value itself; its backward explains that nothing requires grad."""

    @staticmethod
    def forward(ctx, value, dummy):
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output):
        raise RuntimeError(
            "nothing requires grad: every tensor of params is a parameter with requires_grad=False "
            "(a frozen model), so .backward() of this objective has nothing to fill. Unfreeze the "
            "parameters to train (p.requires_grad_(True)), or read the number with float(...)"
        )


Coefficients = Callable[[list[Params]], list[Params | tuple[float, Params]]]
"""Task gradients g_1…g_n -> the vectors u_1…u_n that multiply H_1…H_n (or pairs (c, w): u = c·w)."""


@torch.enable_grad()
def hessian_terms(
    losses: Sequence[Loss], params: Params, coefficients: Coefficients, *, allow_constant: bool = False
) -> tuple[Params, list[Params]]:
    """(Σ_k H_k u_k, [g_1, …, g_n]): all the Hessian terms of a formula, in one extra reverse pass.

    ``coefficients(gs)`` maps the task gradients g_k = ∇L_k(θ) to the vectors u_k; then
    Σ_k H_k u_k = ∇_θ Σ_k ⟨∇L_k(θ), sg(u_k)⟩ (sg = stop-gradient). A u_k may also be given as a
    pair ``(c, w)`` for u_k = c·w, which saves forming the scaled vector. Every modified field, bracket
    and HVP of the library is such a sum with its own u_k. Both results are detached; the sum is
    not checked for finiteness here (the caller checks its final result once).
    """
    losses = check_losses(losses)
    leaves, _ = _leaves(params)
    pairs = [_value_and_grad(f, leaves, True, f"losses[{i}]", allow_constant) for i, f in enumerate(losses)]
    gs = [g for _, g in pairs]
    detached = [detach(g) for g in gs]
    us = coefficients(detached)
    s = sum(_term(g, u) for g, u in zip(gs, us))
    xs = tensors(leaves)
    if not s.requires_grad:  # every loss is (at most) linear in params: all Hessians vanish
        return rebuild(leaves, [torch.zeros_like(x) for x in xs]), detached
    hs = torch.autograd.grad(s, xs, allow_unused=True)
    return rebuild(leaves, [torch.zeros_like(x) if h is None else h for x, h in zip(xs, hs)]), detached


def _term(g: Params, u: Params | tuple[float, Params]) -> Tensor:
    """⟨g, sg(u)⟩, or c·⟨g, sg(u)⟩ for a pair (c, u) (c·u is never formed)."""
    if isinstance(u, tuple):
        c, u = u
        return c * dot(g, detach(u))
    return dot(g, detach(u))


def hvp(loss: Loss, params: Params, v: Params, *, allow_constant: bool = False) -> Params:
    """H v = ∇²L(θ) v, by reverse-over-reverse autodiff: ∇_θ ⟨∇L(θ), sg(v)⟩ (no Hessian is formed)."""
    check_params(params)
    check_same_structure(params, v)
    hv, _ = hessian_terms([loss], params, lambda gs: [v], allow_constant=allow_constant)
    return check_finite(hv, "the Hessian-vector product")


def sharpness(loss: Loss, params: Params, *, iters: int = 30, seed: int = 0) -> Tensor:
    """λ_max(∇²L(θ)), the largest Hessian eigenvalue, by power iteration on :func:`hvp` (0-dim tensor).

    Returns the Rayleigh quotient vᵀHv / vᵀv after ``iters`` iterations from a random v drawn
    with a local generator seeded by ``seed``. Power iteration converges to the eigenvalue of
    largest *modulus*: near a minimum that is λ_max ≥ 0. GD on a quadratic is stable for
    h < 2/λ_max, and backward error analysis expands in h·λ_max.
    """
    check_positive_int(iters, "iters")
    check_params(params)
    gen = torch.Generator().manual_seed(seed)
    v = rebuild(
        params, [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in tensors(params)]
    )
    lam = torch.zeros((), dtype=tensors(params)[0].dtype, device=tensors(params)[0].device)
    for _ in range(iters):
        hv = hvp(loss, params, v)
        lam = dot(v, hv) / dot(v, v)
        size = torch.sqrt(dot(hv, hv))
        if size == 0:
            return torch.zeros_like(lam)
        v = rebuild(hv, [t / size for t in tensors(hv)])
    return lam


def sum_losses(losses: Sequence[Loss]) -> Loss:
    """The loss θ ↦ Σ_i L_i(θ)."""
    losses = check_losses(losses)
    return lambda params: sum(_evaluate(f, params, f"losses[{i}]") for i, f in enumerate(losses))


def check_losses(losses: Sequence[Loss]) -> list[Loss]:
    """Raise unless ``losses`` is a non-empty sequence of callables; return it as a list."""
    if callable(losses):
        raise TypeError("losses must be a sequence of loss callables, got a single callable")
    if isinstance(losses, (str, bytes, Mapping)) or not isinstance(losses, (Sequence, Iterable)):
        raise TypeError(f"losses must be a sequence of loss callables, got {type(losses).__name__}")
    losses = list(losses)
    if not losses:
        raise ValueError("losses is empty; give at least one loss")
    for i, f in enumerate(losses):
        if not callable(f):
            raise TypeError(f"losses[{i}] must be callable, got {type(f).__name__}")
    return losses
