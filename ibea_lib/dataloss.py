"""Losses over whole data sets: the mean over all examples, evaluated in passes over the batches.

``data_loss(model, criterion, batches)`` is a loss ``params -> 0-dim tensor`` like the ones of
:func:`ibea_lib.model_loss`, but its value is the mean of the per-example losses over *every*
example of ``batches`` (any re-iterable of ``(inputs, targets)``, e.g. a ``DataLoader``). Every core
call accepts it and returns the exact full-data result: ``ib.grad``, ``ib.hvp``,
``ib.lie_bracket``, ``ib.sequential_field``, ``ib.bracket_sum``, ``ib.order_averaged_field``,
``ib.modified_loss``, ``ib.multitask_terms``, ``ib.conflict_free_loss``, …

How. The loss is an autograd node whose derivatives are themselves passes over the data:

* evaluating it where the params require grad runs **one pass** that accumulates the value and the
  gradient, batch by batch (each batch's graph is freed before the next one is built);
* the gradient, used inside a formula (⟨∇L(θ), u⟩ with u fixed), is differentiated by **one more
  pass** that accumulates the Hessian-vector products ∇_θ⟨∇ℓ_b(θ), u⟩ with the fixed u.

So a bracket of two data-set losses costs two passes per task (gradients first, then the
Hessian-vector products with fixed vectors), and the memory is that of one batch plus a few
parameter-sized vectors, whatever the number of batches. Derivatives up to second order are
available (enough for every core call and for minimizing a modified loss); a third derivative
raises autograd's "once_differentiable" error.

Weights and reductions. The value is (1/N) Σ_examples ℓ(x, y), N the number of examples of all
batches (of all ranks, see below). The criterion is assumed to return the *mean* over its batch
(the default ``reduction="mean"`` of ``torch.nn`` losses and ``torch.nn.functional``); a batch of
n_b examples then enters with weight n_b/N, so batches of unequal sizes (a last, smaller batch)
are weighted right. A criterion that returns the batch *sum* (``reduction="sum"``) enters with
weight 1/N; one that returns the per-example vector (``reduction="none"``) is summed. The reduction
is read from ``criterion.reduction`` when the criterion has one (``nn.MSELoss(reduction="sum")``),
or given with ``reduction=``. (A class-weighted ``CrossEntropyLoss`` with mean reduction divides by
the sum of weights, not by n_b: pass ``reduction="sum"`` criteria for such losses.) The example
count n_b is the length of the targets (the first dimension).

Passes must see the same examples: a ``DataLoader(..., shuffle=True)`` is fine (the order does not
change the mean), ``drop_last=True`` with shuffling is not (each pass would drop other examples);
the example count is checked on every pass.

Several processes: when ``torch.distributed`` is initialized (see :mod:`ibea_lib.distributed`),
each pass ends with one ``all_reduce`` of the sums and the count, so every rank gets the result
for the union of all ranks' batches. ``distributed=False`` turns this off.

Progress: ``progress=True`` shows a ``tqdm.auto`` bar for each pass (off by default: core calls
stay silent; turn it on for long passes, e.g. a large data set on a CPU).

Inputs and targets are moved to the device of the params, and floating-point ones cast to their
dtype (so a float64 check of a float32 data set needs no copies by hand).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import distributed as _dist
from .autodiff import model_loss

__all__ = ["DataLoss", "data_loss"]


def data_loss(
    model: torch.nn.Module,
    criterion: Callable[[Tensor, Tensor], Tensor],
    batches: Iterable,
    *,
    reduction: str | None = None,
    progress: bool = False,
    distributed: bool | str = "auto",
    group=None,
    name: str = "data loss",
) -> DataLoss:
    """The loss θ ↦ (1/N) Σ over all N examples of ``batches`` of criterion(model(x; θ), y).

    ``batches``: any iterable of ``(inputs, targets)`` that can be iterated more than once (a list,
    a ``torch.utils.data.DataLoader``); ``reduction``: how ``criterion`` reduces a batch, "mean"
    (default, or read from ``criterion.reduction``), "sum" or "none"; ``progress``: a progress bar
    per pass; ``distributed``: "auto" (all-reduce when a process group is initialized), True or
    False; ``group``: the process group (default: the world). See the module docstring.
    """
    return DataLoss(
        model,
        criterion,
        batches,
        reduction=reduction,
        progress=progress,
        distributed=distributed,
        group=group,
        name=name,
    )


class DataLoss:
    """A data-set loss (see :func:`data_loss`); call it with a dict of the model's parameters."""

    def __init__(self, model, criterion, batches, *, reduction=None, progress=False,
                 distributed="auto", group=None, name="data loss"):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(criterion):
            raise TypeError(
                f"criterion must be callable (outputs, targets) -> loss, got {type(criterion).__name__}"
            )
        if not isinstance(batches, Iterable):
            raise TypeError(f"batches must be an iterable of (inputs, targets), got {type(batches).__name__}")
        if iter(batches) is batches:
            raise TypeError(
                "batches must be iterable more than once (a list, a tuple or a DataLoader); "
                "a generator or an iterator is used up by the first pass over the data"
            )
        if reduction is None:
            reduction = getattr(criterion, "reduction", "mean")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if distributed not in ("auto", True, False):
            raise ValueError(f"distributed must be 'auto', True or False, got {distributed!r}")
        if distributed is True and not _dist.active(group):
            raise RuntimeError(
                "distributed=True but no torch.distributed process group with more than one "
                "process is initialized; call torch.distributed.init_process_group first"
            )
        self.model, self.criterion, self.batches = model, criterion, batches
        self.reduction, self.progress, self.name = reduction, bool(progress), name
        self.distributed, self.group = distributed, group
        self.count: int | None = None  # examples of all ranks, set by the first pass

    def __repr__(self) -> str:
        n = "?" if self.count is None else self.count
        return f"DataLoss({self.name!r}, model={type(self.model).__name__}, examples={n})"

    # -- evaluation -------------------------------------------------------------------------
    def __call__(self, params: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(params, Mapping):
            raise TypeError(
                "a data loss takes a dict {name: tensor} of the model's parameters, "
                f"got {type(params).__name__}"
            )
        keys, xs = tuple(params.keys()), tuple(params.values())
        if torch.is_grad_enabled() and any(x.requires_grad for x in xs):
            return _Value.apply(self, keys, *xs)
        with torch.no_grad():
            total, _ = self._pass(params, "value")
        return total

    # -- passes -----------------------------------------------------------------------------
    def _reduce(self) -> bool:
        return self.distributed is not False and _dist.active(self.group)

    def _iterate(self, what: str):
        from tqdm.auto import tqdm

        total = len(self.batches) if hasattr(self.batches, "__len__") else None
        return tqdm(self.batches, total=total, desc=f"{self.name}: {what} pass", leave=False,
                    disable=not self.progress)

    def _batch_loss(self, batch, like: Tensor):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"every batch must be a pair (inputs, targets), got {type(batch).__name__}")
        inputs, targets = (_move(t, like) for t in batch)
        n = targets.shape[0] if isinstance(targets, Tensor) and targets.dim() > 0 else len(inputs)
        f = model_loss(self.model, self.criterion, inputs, targets)

        def contribution(params):  # the batch's sum of per-example losses
            value = f(params)
            if value.dim() > 0 or self.reduction == "none":
                return value.sum()
            return value if self.reduction == "sum" else value * n

        return contribution, n

    def _pass(self, params, what: str, vectors=None):
        """One pass: ("value") Σℓ, ("grad") Σℓ and Σ∇ℓ, ("hvp") Σ ∇⟨∇ℓ, v⟩; each divided by N."""
        keys = list(params)
        like = params[keys[0]]
        total = torch.zeros((), dtype=like.dtype, device=like.device)
        acc = [torch.zeros_like(p) for p in params.values()] if what != "value" else []
        count = 0
        for batch in self._iterate(what):
            f, n = self._batch_loss(batch, like)
            count += n
            if what == "value":
                total += f(params).detach()
                continue
            with torch.enable_grad():
                leaves = {k: p.detach().requires_grad_(True) for k, p in params.items()}
                xs = list(leaves.values())
                value = f(leaves)
                if what == "grad":
                    total += value.detach()
                    gs = torch.autograd.grad(value, xs, allow_unused=True)
                else:
                    g = torch.autograd.grad(value, xs, create_graph=True, allow_unused=True)
                    s = sum((gi * v).sum() for gi, v in zip(g, vectors) if gi is not None)
                    if not isinstance(s, Tensor) or not s.requires_grad:
                        continue  # this batch's loss is (at most) linear in params
                    gs = torch.autograd.grad(s, xs, allow_unused=True)
            for a, gi in zip(acc, gs):
                if gi is not None:
                    a.add_(gi.detach())
        counted = torch.tensor(float(count), dtype=like.dtype, device=like.device)
        if self._reduce():
            total, counted, *acc = _dist.all_reduce_sum([total, counted, *acc], self.group)
        n_all = int(round(counted.item()))
        if n_all == 0:
            raise ValueError(f"{self.name}: batches holds no examples")
        if self.count is not None and n_all != self.count:
            raise RuntimeError(
                f"{self.name}: this pass saw {n_all} examples, an earlier one {self.count}; every pass "
                "must see the same examples (no drop_last with shuffle, no random subsets)"
            )
        self.count = n_all
        return total / n_all, [a / n_all for a in acc]


def _move(t, like: Tensor):
    if not isinstance(t, Tensor):
        return t
    if t.is_floating_point():
        return t.to(device=like.device, dtype=like.dtype)
    return t.to(device=like.device)


class _Value(torch.autograd.Function):
    """L(θ); forward = one pass for the value and the gradient (kept for the backward)."""

    @staticmethod
    def forward(ctx, loss: DataLoss, keys, *xs):
        value, grads = loss._pass(dict(zip(keys, xs)), "grad")
        ctx.loss, ctx.keys, ctx.grads = loss, keys, grads
        ctx.save_for_backward(*xs)
        return value

    @staticmethod
    def backward(ctx, dvalue):
        xs = ctx.saved_tensors
        gs = _Grad.apply(ctx.loss, ctx.keys, ctx.grads, *xs)
        gs = gs if isinstance(gs, tuple) else (gs,)
        return (None, None, *[dvalue * g for g in gs])


class _Grad(torch.autograd.Function):
    """∇L(θ) (already computed); its backward is one pass of Hessian-vector products."""

    @staticmethod
    def forward(ctx, loss: DataLoss, keys, grads, *xs):
        ctx.loss, ctx.keys = loss, keys
        ctx.save_for_backward(*xs)
        return tuple(g.clone() for g in grads)

    @staticmethod
    @once_differentiable
    def backward(ctx, *dgs):
        xs = ctx.saved_tensors
        _, hv = ctx.loss._pass(dict(zip(ctx.keys, xs)), "hvp", [d.detach() for d in dgs])
        return (None, None, None, *hv)
