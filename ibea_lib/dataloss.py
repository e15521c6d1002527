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
batches (of all ranks, see below). A batch of n_b examples enters with weight n_b/N when the
criterion returns the *mean* over its batch, with weight 1/N when it returns the batch *sum*, and a
per-example vector (``reduction="none"``) is summed, so batches of unequal sizes (a last, smaller
batch) are weighted right. The reduction must be known, never guessed: it is read from
``criterion.reduction`` (``torch.nn`` losses, e.g. ``nn.MSELoss(reduction="sum")``), from the
``reduction`` keyword of a ``functools.partial`` of a ``torch.nn.functional`` loss, or is "mean"
for a ``torch.nn.functional`` loss itself (``F.cross_entropy``); any other criterion (a lambda, a
function of your own) needs ``reduction=`` stated. (A class-weighted ``CrossEntropyLoss`` with mean
reduction divides by the sum of weights, not by n_b: pass ``reduction="sum"`` criteria for such
losses.) The example count n_b is the length of the targets (the first dimension).

Passes see the same examples, in the same order, so every pass gives the same number:

* every pass runs inside ``torch.random.fork_rng`` with the forked CPU generator seeded with a
  fixed seed, so torch's global RNG never advances, and a ``DataLoader(..., shuffle=True)`` (whose
  permutation is drawn from the global RNG) visits the examples in one fixed order in every pass;
  a generator of the loader or of its sampler (``generator=``) is read before each pass and
  restored after it (the caller's generator does not advance, and every pass repeats the same
  order);
* a fingerprint of the examples (count, and sums of a fixed random projection of every input and
  target) is taken in the first pass and checked in every later one: a loader whose examples
  change between passes (random augmentation from Python's or NumPy's RNG, a sampler that draws
  with replacement, an ``IterableDataset`` that streams new data) raises ``RuntimeError``;
* datasets without ``len`` (an ``IterableDataset``) work; the progress bar then has no total.

Several processes: when ``torch.distributed`` is initialized (see :mod:`ibea_lib.distributed`),
each pass ends with one ``all_reduce`` of the sums and the count, so every rank gets the result
for the union of all ranks' batches. ``distributed=False`` turns this off.

Progress: ``progress=True`` shows a ``tqdm.auto`` bar for each pass (off by default: core calls
stay silent; turn it on for long passes, e.g. a large data set on a CPU).

Inputs and targets are moved to the device of the params, and floating-point ones cast to their
dtype (so a float64 check of a float32 data set needs no copies by hand).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
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
        if isinstance(batches, Iterator):
            raise TypeError(
                "batches must be iterable more than once (a list, a tuple or a DataLoader); "
                "a generator or an iterator is used up by the first pass over the data"
            )
        reduction = _reduction(criterion, reduction)
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
        self._fingerprint: list | None = None  # of the first pass (this rank's examples)
        self._projections: dict = {}

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

        try:
            total = len(self.batches)
        except TypeError:  # an IterableDataset without __len__
            total = None
        return tqdm(self.batches, total=total, desc=f"{self.name}: {what} pass", leave=False,
                    disable=not self.progress)

    def _generators(self) -> list[torch.Generator]:
        """The generators a DataLoader (and its samplers) draw from: restored after each pass."""
        found = []
        for obj in (self.batches, getattr(self.batches, "sampler", None),
                    getattr(self.batches, "batch_sampler", None),
                    getattr(getattr(self.batches, "batch_sampler", None), "sampler", None)):
            g = getattr(obj, "generator", None)
            if isinstance(g, torch.Generator) and all(g is not h for h in found):
                found.append(g)
        return found

    def _projection(self, d: int, device: torch.device) -> Tensor:
        key = (d, str(device))
        if key not in self._projections:
            gen = torch.Generator().manual_seed(d)
            self._projections[key] = torch.randn(d, generator=gen, dtype=torch.float64).to(device)
        return self._projections[key]

    def _fingerprint_of(self, batch, acc: list[float]) -> None:
        """Add this batch's examples to the fingerprint: per tensor, Σ s, Σ s², Σ |s| of s = x·r."""
        slot = 0
        for t in batch:
            if not isinstance(t, Tensor) or t.dim() == 0 or t.shape[0] == 0:
                continue
            x = t.detach().reshape(t.shape[0], -1)
            dtype = torch.float32 if x.device.type == "mps" else torch.float64
            s = x.to(dtype) @ self._projection(x.shape[1], x.device).to(dtype)
            stats = torch.stack([s.sum(), (s * s).sum(), s.abs().sum()]).tolist()
            while len(acc) < slot + 3:
                acc.append(0.0)
            for i, v in enumerate(stats):
                acc[slot + i] += v
            slot += 3

    def _check_fingerprint(self, fingerprint: list[float], count: int) -> None:
        if self._fingerprint is None:
            self._fingerprint = [float(count), *fingerprint]
            return
        first = self._fingerprint
        same = len(first) == len(fingerprint) + 1 and first[0] == count
        for i in range(0, len(fingerprint), 3) if same else ():
            (s0, q0, a0), (s1, q1, _) = first[1 + i:4 + i], fingerprint[i:i + 3]
            tol = 1e-9 * (a0 + 1.0)
            if abs(s0 - s1) > tol or abs(q0 - q1) > 1e-9 * (q0 + 1.0):
                same = False
        if not same:
            raise RuntimeError(
                f"{self.name}: this pass saw other examples than the first pass, so the loss is not "
                "one function of the parameters (a sampler with replacement or a random subset, "
                "random augmentation drawn from Python's or NumPy's RNG, a stream of new data?); "
                "pass batches that repeat the same examples, e.g. a list of (inputs, targets) or a "
                "DataLoader without random transforms"
            )

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
        like = next(iter(params.values()))
        cuda = sorted({t.device.index or 0 for t in params.values() if t.is_cuda})
        generators = self._generators()
        states = [g.get_state() for g in generators]
        try:
            with torch.random.fork_rng(devices=cuda):
                torch.default_generator.manual_seed(_PASS_SEED)  # the forked generator only
                total, acc, count, fingerprint = self._accumulate(params, what, vectors, like)
        finally:
            for g, state in zip(generators, states):
                g.set_state(state)
        counted = torch.tensor(float(count), dtype=like.dtype, device=like.device)
        if self._reduce():
            total, counted, *acc = _dist.all_reduce_sum([total, counted, *acc], self.group)
        n_all = int(round(counted.item()))
        if n_all == 0:
            raise ValueError(f"{self.name}: batches holds no examples")
        if self.count is not None and n_all != self.count:
            raise RuntimeError(
                f"{self.name}: this pass saw {n_all} examples, an earlier one {self.count}; every pass "
                "must see the same examples (no random subsets, no stream of new data)"
            )
        self._check_fingerprint(fingerprint, count)
        self.count = n_all
        return total / n_all, [a / n_all for a in acc]

    def _accumulate(self, params, what, vectors, like):
        total = torch.zeros((), dtype=like.dtype, device=like.device)
        acc = [torch.zeros_like(p) for p in params.values()] if what != "value" else []
        count = 0
        fingerprint: list[float] = []
        for batch in self._iterate(what):
            self._fingerprint_of(batch if isinstance(batch, (tuple, list)) else (), fingerprint)
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
        return total, acc, count, fingerprint


_PASS_SEED = 0
"""The seed of the forked global generator in every pass (a shuffling DataLoader's permutation)."""

_FUNCTIONAL_MEAN = (
    F.cross_entropy, F.mse_loss, F.nll_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss,
    F.binary_cross_entropy, F.binary_cross_entropy_with_logits, F.kl_div, F.poisson_nll_loss,
    F.gaussian_nll_loss, F.soft_margin_loss, F.multilabel_soft_margin_loss, F.hinge_embedding_loss,
    F.margin_ranking_loss, F.multi_margin_loss, F.cosine_embedding_loss,
)


def _reduction(criterion, stated: str | None) -> str:
    """How ``criterion`` reduces a batch: stated, or read from it; never guessed."""
    read = getattr(criterion, "reduction", None) if isinstance(criterion, torch.nn.Module) else None
    if isinstance(criterion, functools.partial) and any(criterion.func is f for f in _FUNCTIONAL_MEAN):
        read = criterion.keywords.get("reduction", "mean")
    elif any(criterion is f for f in _FUNCTIONAL_MEAN):
        read = "mean"
    if stated is not None:
        if stated not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {stated!r}")
        if read is not None and read != stated:
            raise ValueError(
                f"reduction={stated!r} was given, but the criterion reduces with {read!r}; state its own"
            )
        return stated
    if read is None:
        raise TypeError(
            "data_loss cannot read how this criterion reduces a batch (it has no 'reduction' "
            "attribute: a lambda or a function of your own); state it, e.g. "
            "ib.data_loss(model, criterion, batches, reduction='mean') ('mean', 'sum' or 'none'), "
            "so that batches are weighted right"
        )
    if read not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {read!r}")
    return read


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
