"""Gradients and Hessian-vector products of losses written as functions of parameters.

A *loss* is a callable ``loss(params) -> 0-dim tensor``. :func:`model_loss` turns a
``torch.nn.Module`` and a batch into one. Everything here differentiates through fresh
leaves: the caller's tensors are never modified, and their ``requires_grad`` flags are left
as they were. If a tensor of ``params`` already requires grad (for instance a model's own
parameters), results that are documented as differentiable keep their graph to it, so they
can be used as training objectives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.func import functional_call

from .pytree import Params, check_params, check_same_structure, dot, rebuild, tensors, tree_map

Loss = Callable[[Params], Tensor]
"""A function ``params -> 0-dim tensor``."""


def model_loss(
    model: torch.nn.Module,
    criterion: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
) -> Loss:
    """The loss ``params -> criterion(model(inputs; params), targets)``.

    ``params`` is a dict ``{name: tensor}`` of some or all of the model's parameters (the
    others, and the buffers, are taken from the model); it is applied with
    :func:`torch.func.functional_call`, so the model itself is not changed.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")

    names = {k for k, _ in model.named_parameters()}

    def loss(params: Params) -> Tensor:
        if not isinstance(params, Mapping):
            raise TypeError(
                "a model loss takes a dict {name: tensor} of the model's parameters, "
                f"got {type(params).__name__}"
            )
        unknown = [k for k in params if k not in names]
        if unknown:
            raise ValueError(f"params has keys that are not parameters of the model: {unknown}")
        return criterion(functional_call(model, dict(params), (inputs,)), targets)

    return loss


def params_of(model: torch.nn.Module) -> dict[str, Tensor]:
    """A detached copy ``{name: tensor}`` of a model's parameters (the usual ``params``)."""
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def load_params(model: torch.nn.Module, params: Mapping[str, Tensor]) -> None:
    """Copy ``params`` into the model's own parameters (in place, without autograd)."""
    own = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in params.items():
            if k not in own:
                raise ValueError(f"{k!r} is not a parameter of the model")
            own[k].copy_(v)


def _leaves(params: Params) -> tuple[Params, bool]:
    """Tensors to differentiate with respect to, and whether results should stay attached.

    A tensor that already requires grad is used as it is (so results can be differentiated
    further by the caller); any other tensor is replaced by a detached alias that requires
    grad. Neither changes the caller's tensor.
    """
    check_params(params)
    values = tensors(params)
    attached = any(t.requires_grad for t in values)
    leaves = [t if t.requires_grad else t.detach().requires_grad_(True) for t in values]
    return rebuild(params, leaves), attached


def evaluate(loss: Loss, params: Params, name: str = "loss") -> Tensor:
    """``loss(params)``, checked: a finite floating-point 0-dim tensor."""
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
    if not torch.isfinite(value):
        raise FloatingPointError(f"{name} returned {value.item()} (not finite) at these params")
    return value


def check_finite(result: Params, what: str) -> Params:
    """Raise ``FloatingPointError`` if ``result`` holds a NaN or an infinity."""
    if not bool(torch.stack([torch.isfinite(t).all() for t in tensors(result)]).all()):
        raise FloatingPointError(f"{what} has non-finite entries (NaN or inf)")
    return result


def _grads(value: Tensor, leaves: Params, create_graph: bool) -> Params:
    """∂value/∂leaves, with zeros for leaves the value does not depend on."""
    xs = tensors(leaves)
    gs = torch.autograd.grad(value, xs, create_graph=create_graph, allow_unused=True)
    return rebuild(leaves, [torch.zeros_like(x) if g is None else g for x, g in zip(xs, gs)])


def _detach(tree: Params) -> Params:
    return rebuild(tree, [t.detach() for t in tensors(tree)])


@torch.enable_grad()
def value_and_grad(loss: Loss, params: Params, *, create_graph: bool = False) -> tuple[Tensor, Params]:
    """(L(θ), ∇L(θ)). With ``create_graph=True`` both stay differentiable."""
    leaves, attached = _leaves(params)
    value = evaluate(loss, leaves)
    g = check_finite(_grads(value, leaves, create_graph), "the gradient of loss")
    if create_graph and attached:
        return value, g
    return value.detach(), _detach(g)


def grad(loss: Loss, params: Params) -> Params:
    """∇L(θ), with the structure of ``params``."""
    return value_and_grad(loss, params)[1]


@torch.enable_grad()
def hvp(loss: Loss, params: Params, v: Params) -> Params:
    """H v = ∇²L(θ) v, by reverse-over-reverse autodiff: ∇_θ ⟨∇L(θ), v⟩ (no Hessian is formed)."""
    check_params(params)
    check_same_structure(params, v)
    leaves, _ = _leaves(params)
    g = _grads(evaluate(loss, leaves), leaves, create_graph=True)
    s = dot(g, _detach(v))  # no graph when the loss is (at most) linear in params: H = 0
    hv = _grads(s, leaves, create_graph=False) if s.requires_grad else tree_map(torch.zeros_like, leaves)
    return check_finite(_detach(hv), "the Hessian-vector product")


def sum_losses(losses: Sequence[Loss]) -> Loss:
    """The loss θ ↦ Σ_i L_i(θ)."""
    losses = check_losses(losses)
    return lambda params: sum(evaluate(f, params, f"losses[{i}]") for i, f in enumerate(losses))


def check_losses(losses: Sequence[Loss]) -> list[Loss]:
    """Raise unless ``losses`` is a non-empty sequence of callables; return it as a list."""
    if callable(losses):
        raise TypeError("losses must be a sequence of loss callables, got a single callable")
    losses = list(losses)
    if not losses:
        raise ValueError("losses is empty; give at least one loss")
    for i, f in enumerate(losses):
        if not callable(f):
            raise TypeError(f"losses[{i}] must be callable, got {type(f).__name__}")
    return losses
