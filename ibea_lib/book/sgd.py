"""Minibatch SGD as a sequence of tasks, and its per-epoch modified loss.

An epoch of SGD over m minibatches with step h is one GD step per minibatch loss L_1…L_m,
in the order the batches are drawn: exactly the sequential setting of Part III, with the
batches as tasks. Averaged over random reshuffling, the bracket terms cancel and one epoch
follows, to second order, the gradient flow (over time m·h) of

    L_SGD = L + h/(4m) Σ_k ‖∇L_k‖²,   L = (1/m) Σ_k L_k

(Smith, Dherin, Barrett and De, 2021). :func:`sgd_modified_loss` returns it, differentiable,
so it can also be minimized as an explicit regularizer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..autodiff import Loss, check_losses, grad, model_loss
from ..integrate import sequential_steps
from ..pytree import Params, check_lr, check_positive_int, flatten
from . import saved


def minibatch_losses(
    model: torch.nn.Module,
    criterion: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    batch_size: int,
    *,
    seed: int | None = None,
) -> list[Loss]:
    """Split the data into ⌊N / batch_size⌋ minibatches and return one loss per batch.

    With ``seed`` the examples are shuffled once before splitting (a fixed partition);
    left-over examples (N mod batch_size) are dropped so that every batch has the same size.
    """
    n = len(inputs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an integer in [1, {n}], got {batch_size!r}")
    order = torch.arange(n, device=inputs.device)
    if seed is not None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(inputs.device)
    m = n // batch_size
    batches = order[: m * batch_size].reshape(m, batch_size)
    return [model_loss(model, criterion, inputs[idx], targets[idx]) for idx in batches]


def _check_order(order: Sequence[int], m: int) -> list[int]:
    order = [int(i) for i in order]
    if sorted(order) != list(range(m)):
        raise ValueError(f"order must be a permutation of 0..{m - 1}, got {order}")
    return order


def epoch(
    batch_losses: Sequence[Loss], params: Params, lr: float, order: Sequence[int] | None = None
) -> Params:
    """One epoch of SGD: one GD step θ ← θ − h∇L_k(θ) per batch, in ``order`` (default 0, 1, …)."""
    losses = check_losses(batch_losses)
    order = list(range(len(losses))) if order is None else _check_order(order, len(losses))
    return sequential_steps([losses[k] for k in order], params, lr)


def reshuffled_mean_epoch(
    batch_losses: Sequence[Loss], params: Params, lr: float, orders: Sequence[Sequence[int]] | None = None
) -> Params:
    """The mean of :func:`epoch` over ``orders`` (default: all m! orders; m ≤ 7).

    This is the expected end point of one epoch of random reshuffling. To third order
    (O(h³) per epoch) it follows the flow over time h of :func:`reshuffling_field`,
    because the bracket terms of the orders cancel in the mean. The code is written in
    chapter 03 (``ibea_lib.book.saved.reshuffled_mean_epoch``); this adds the argument checks.
    """
    losses = check_losses(batch_losses)
    m = len(losses)
    if orders is None:
        if m > 7:
            raise ValueError(f"all {m}! orders are too many; pass a sample of orders")
        orders = list(itertools.permutations(range(m)))
    orders = [_check_order(o, m) for o in orders]
    if len(orders) == 0:
        raise ValueError("orders is empty")
    return saved.reshuffled_mean_epoch(losses, params, check_lr(lr), orders)


def epoch_path(
    batch_losses: Sequence[Loss],
    params: Tensor,
    lr: float,
    epochs: int,
    *,
    order: Sequence[int] | None = None,
    reshuffle: bool = False,
    seed: int = 0,
) -> Tensor:
    """The epoch end points θ_0, θ_1, …, θ_E of SGD on a tensor of parameters, shape (E + 1, d).

    ``reshuffle=False``: every epoch visits the batches in ``order`` (default 0, 1, …, a fixed
    order). ``reshuffle=True``: every epoch draws a fresh random order (random reshuffling) from a
    local generator seeded with ``seed`` (``order`` must then be None).
    """
    losses = check_losses(batch_losses)
    if not isinstance(params, Tensor):
        raise TypeError(f"params must be a torch.Tensor (one parameter vector), got {type(params).__name__}")
    epochs = check_positive_int(epochs, "epochs")
    if reshuffle and order is not None:
        raise ValueError("pass either order= (a fixed order) or reshuffle=True, not both")
    m = len(losses)
    fixed = list(range(m)) if order is None else _check_order(order, m)
    gen = torch.Generator().manual_seed(seed)
    out = [params.detach().clone()]
    for _ in range(epochs):
        sigma = torch.randperm(m, generator=gen).tolist() if reshuffle else fixed
        out.append(epoch(losses, out[-1], lr, sigma).detach())
    return torch.stack(out)


def gradient_variance(batch_losses: Sequence[Loss], params: Params) -> Tensor:
    """(1/m) Σ_k ‖∇L_k − ∇L‖², L the mean batch loss: the part of the SGD regularizer GD lacks.

    Identity: (1/m) Σ_k ‖∇L_k‖² = ‖∇L‖² + gradient_variance, hence (Smith et al. 2021)
    L + h/(4m) Σ_k ‖∇L_k‖² = L + (h/4)‖∇L‖² + (h/4)·gradient_variance: the SGD modified loss
    is that of full-batch GD with the same step h plus a penalty on the gradient variance.
    """
    losses = check_losses(batch_losses)
    gs = [flatten(grad(f, params)) for f in losses]
    stack = torch.stack(gs)
    return ((stack - stack.mean(0)) ** 2).sum(1).mean()


def reshuffling_field(batch_losses: Sequence[Loss], params: Params, lr: float) -> Params:
    """F = −∇(Σ_k L_k + (h/4) Σ_k ‖∇L_k‖²): the bracket-free modified field of one epoch.

    Time normalization of FORMULAS §3: one epoch (m steps of size h) is compared with the flow of F
    over time h. Equivalently, with L = (1/m)Σ_k L_k, over time m·h the epoch follows the gradient
    flow of :func:`ibea_lib.sgd_modified_loss`. The code is written in chapter 03
    (``ibea_lib.book.saved.reshuffling_field``) and checked there against
    :func:`ibea_lib.order_averaged_field` (the library's one-pass version).
    """
    return saved.reshuffling_field(check_losses(batch_losses), params, check_lr(lr))


def bracket_sum(batch_losses: Sequence[Loss], params: Params, order: Sequence[int] | None = None) -> Params:
    """Σ_{i<j} [∇L_{σ(i)}, ∇L_{σ(j)}] for the order σ (default 0, 1, …), bracket of FORMULAS.md.

    A single epoch in the order σ differs from the reshuffling flow by
    (h²/2)·bracket_sum + O(h³) (:func:`reshuffling_field` vs :func:`ibea_lib.sequential_field`).
    The code is written in chapter 03 (``ibea_lib.book.saved.bracket_sum``).
    """
    losses = check_losses(batch_losses)
    order = list(range(len(losses))) if order is None else _check_order(order, len(losses))
    if len(order) < 2:
        raise ValueError("a bracket sum needs at least two batch losses")
    return saved.bracket_sum(losses, params, order)
