"""Multitask learning: the conflict term, a regularizer that cancels it, and gradient surgery.

One GD step of size h on L = Σ_i L_i follows, to O(h³) per step, the gradient flow of
(FORMULAS §2)

    L̃ = Σ_i L_i + (h/4) Σ_i ‖g_i‖² + (h/2) Σ_{i<j} ⟨g_i, g_j⟩,      g_i = ∇L_i,

loss + flatness + conflict. This module adds what Part II of the book needs on top of
:func:`ibea_lib.multitask_terms` and :func:`ibea_lib.multitask_field`:

* :func:`conflict_free_loss`, the explicitly regularized objective
  L_cf = Σ_i L_i − (h/2) Σ_{i<j} ⟨g_i, g_j⟩, whose GD modified loss is
  Σ_i L_i + (h/4) Σ_i ‖g_i‖² + O(h²): the conflict term is cancelled, the flatness term kept;
* :func:`flatness_field`, the field −∇(Σ_i L_i + (h/4) Σ_i ‖g_i‖²) that GD on L_cf (and the
  mean of the two alternating orders A→B, B→A) follows to O(h³);
* :func:`conflict_gradient`, ∇ Σ_{i<j}⟨g_i, g_j⟩ = Σ_i H_i Σ_{j≠i} g_j;
* :func:`pcgrad`, the "projecting conflicting gradients" surgery of Yu et al. (2020);
* update functions ``(params, step) -> params`` for :func:`ibea_lib.training.run`
  (:func:`conflict_weighted_update` puts any weight on the conflict term);
* :func:`train_seeds_to_loss`, many seeds trained at once (``torch.func.vmap``) to a training loss;
* :func:`task_metrics` (losses, ‖g_i‖², alignments, cosines from one set of gradients);
* two-task constructions: :func:`product_tasks` (a 2-parameter toy), :func:`digits_two_tasks`
  and :func:`head_losses` (two labelings of scikit-learn's digits on a shared trunk).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..autodiff import (
    Loss,
    check_finite,
    check_losses,
    detach,
    grad,
    gradient_terms,
    hessian_terms,
    model_loss,
)
from ..bea import order_averaged_field
from ..data import Split
from ..integrate import sequential_steps
from ..pytree import Params, add, check_lr, check_params, dot, sum_trees, tree_map
from ..regularizers import conflict_free_loss, pcgrad

Update = Callable[[Params, int], Params]


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


# ---------------------------------------------------------------------------------------------
# The regularizer that cancels the conflict term, and its modified field
# ---------------------------------------------------------------------------------------------


def conflict_gradient(losses: Sequence[Loss], params: Params) -> Params:
    """∇ Σ_{i<j} ⟨∇L_i, ∇L_j⟩ = Σ_i H_i (Σ_{j≠i} ∇L_j) (one extra reverse pass).

    The conflict term (h/2)Σ_{i<j}⟨g_i, g_j⟩ adds −(h/2)·conflict_gradient to the modified
    field; along it the alignment changes at the rate −(h/2)‖conflict_gradient‖² ≤ 0.
    """
    losses = check_losses(losses)
    if len(losses) < 2:
        raise ValueError("the conflict term needs at least two task losses")
    hv, _ = hessian_terms(losses, params, lambda gs: [tree_map(torch.sub, sum_trees(gs), g) for g in gs])
    return check_finite(hv, "the conflict gradient")


# ---------------------------------------------------------------------------------------------
# Gradient surgery
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Updates for ibea_lib.training.run
# ---------------------------------------------------------------------------------------------


def _checked(losses: Sequence[Loss], lr: float) -> tuple[list[Loss], float]:
    losses = check_losses(losses)
    if len(losses) < 2:
        raise ValueError("a multitask update needs at least two task losses")
    return losses, check_lr(lr)


def summed_update(losses: Sequence[Loss], lr: float) -> Update:
    """θ ← θ − h Σ_i ∇L_i(θ): plain multitask GD (modified loss: loss + flatness + conflict)."""
    losses, h = _checked(losses, lr)
    return lambda params, step: add(params, sum_trees([grad(f, params) for f in losses]), alpha=-h)


def conflict_free_update(losses: Sequence[Loss], lr: float) -> Update:
    """θ ← θ − h ∇L_cf(θ), L_cf = Σ_i L_i − (h/2)Σ_{i<j}⟨g_i, g_j⟩ (:func:`conflict_free_loss`).

    Its modified loss is Σ_i L_i + (h/4)Σ_i ‖g_i‖² + O(h²): flatness kept, conflict cancelled.
    """
    losses, h = _checked(losses, lr)
    def update(params: Params, step: int) -> Params:
        return add(params, grad(lambda p: conflict_free_loss(losses, p, h), params), alpha=-h)

    return update


def conflict_weighted_update(losses: Sequence[Loss], lr: float, weight: float) -> Update:
    """θ ← θ − h ∇(Σ_i L_i + (w − 1)(h/2) Σ_{i<j}⟨g_i, g_j⟩), w = ``weight``.

    Its modified loss is Σ_i L_i + (h/4)Σ_i ‖g_i‖² + w·(h/2)Σ_{i<j}⟨g_i, g_j⟩ + O(h²): the conflict
    term with the weight w. w = 1 is plain GD (:func:`summed_update`), w = 0 conflict-free GD
    (:func:`conflict_free_update`), w = 2 doubles the conflict term ("conflict added").
    """
    losses, h = _checked(losses, lr)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"weight must be a real number, got {type(weight).__name__}")
    w = float(weight)

    def objective(p: Params) -> Tensor:
        def combine(values: list[Tensor], gs: list[Params]) -> Tensor:
            return sum(values) + (w - 1) * (h / 2) * sum(dot(gs[i], gs[j]) for i, j in _pairs(len(gs)))

        return gradient_terms(losses, p, combine)

    def update(params: Params, step: int) -> Params:
        return add(params, grad(objective, params), alpha=-h)

    return update


def pcgrad_update(losses: Sequence[Loss], lr: float, *, seed: int | None = 0) -> Update:
    """θ ← θ − h Σ_i PCGrad(g)_i (:func:`pcgrad`); ``seed`` draws the projection orders."""
    losses, h = _checked(losses, lr)
    def update(params: Params, step: int) -> Params:
        projected = pcgrad([grad(f, params) for f in losses], seed=None if seed is None else seed + step)
        return add(params, sum_trees(projected), alpha=-h)

    return update


def alternating_update(losses: Sequence[Loss], lr: float, *, order: str = "fixed", seed: int = 0) -> Update:
    """One GD step of size h per task in turn (a sweep covers flow time h, FORMULAS §3).

    ``order="fixed"``: always 0, 1, …, n−1 (modified field with the bracket terms,
    :func:`ibea_lib.sequential_field`). ``order="random"``: a fresh random order per sweep,
    drawn with ``seed``; the mean over orders follows :func:`flatness_field` (no conflict
    term, no bracket) to O(h³).
    """
    losses, h = _checked(losses, lr)
    if order not in ("fixed", "random"):
        raise ValueError(f"order must be 'fixed' or 'random', got {order!r}")
    generator = torch.Generator().manual_seed(seed)

    def update(params: Params, step: int) -> Params:
        idx = list(range(len(losses)))
        if order == "random":
            idx = torch.randperm(len(losses), generator=generator).tolist()
        return sequential_steps(losses, params, h, order=idx)

    return update


# ---------------------------------------------------------------------------------------------
# Many seeds at once (torch.func), each trained to a training loss
# ---------------------------------------------------------------------------------------------


def stack_models(models: Sequence[torch.nn.Module]) -> dict[str, Tensor]:
    """The parameters of equally shaped models stacked along a new first axis (one row per seed).

    Wraps :func:`torch.func.stack_module_state`; the result is detached (plain tensors).
    """
    from torch.func import stack_module_state

    models = list(models)
    if not models:
        raise ValueError("models is empty")
    params, _ = stack_module_state(models)
    return {k: v.detach().clone() for k, v in params.items()}


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *[1] * (like.dim() - 1))


def train_seeds_to_loss(
    step: Callable[[dict[str, Tensor], Tensor], dict[str, Tensor]],
    params: dict[str, Tensor],
    loss: Callable[[dict[str, Tensor]], Tensor],
    seeds: Sequence[int],
    *,
    threshold: float,
    max_steps: int,
    record: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    every: int = 10,
    diverge_factor: float = 10.0,
    progress: bool = True,
    desc: str | None = None,
) -> dict[str, object]:
    """Train one run per seed in a single batched loop until each run's loss drops below ``threshold``.

    ``params`` holds the runs' parameters stacked along the first axis (:func:`stack_models`), one
    row per entry of ``seeds``. ``step(p, u) -> p`` is one update of *one* run (a dict of
    unstacked tensors) and ``u`` a uniform random number in [0, 1) for that run and step, drawn
    from a generator seeded with the run's seed (for randomized rules, e.g. the order of an
    alternating sweep; deterministic rules ignore it); it is vectorized over the runs with
    :func:`torch.func.vmap`. ``loss(p)`` is one run's training loss (0-dim).

    Before every step each run's loss is checked: a run stops (its parameters are frozen) at the
    first check with loss < ``threshold`` (``reached``), or when the loss is not finite or exceeds
    ``diverge_factor`` × its initial value (``diverged``), or after ``max_steps`` steps (neither).
    ``record(p)`` (one run, a dict of 0-dim tensors) is evaluated every ``every`` steps for the runs
    still training (NaN for stopped runs) and once more at each run's stopping point.

    Returns ``steps`` (the step at which each run stopped), ``reached``, ``diverged`` (bool
    tensors), ``loss`` (at the stopping point), ``params`` (stacked, final), ``history``
    ({``step``: 1-D, name: steps × runs}) and ``final`` ({name: one value per run} at the stopping
    point).
    """
    from torch.func import vmap
    from tqdm.auto import tqdm

    seeds = [int(s) for s in seeds]
    n = len(seeds)
    if n == 0:
        raise ValueError("seeds is empty")
    if any(v.shape[0] != n for v in params.values()):
        raise ValueError(f"every stacked parameter needs a first axis of length {n} (one per seed)")
    if not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"threshold must be a training loss > 0, got {threshold!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    batched_step = vmap(step, randomness="different")
    batched_loss = vmap(loss)
    batched_record = vmap(record) if record is not None else None
    p = {k: v.detach().clone() for k, v in params.items()}
    device = next(iter(p.values())).device
    done = torch.zeros(n, dtype=torch.bool, device=device)
    reached = torch.zeros(n, dtype=torch.bool, device=device)
    diverged = torch.zeros(n, dtype=torch.bool, device=device)
    steps = torch.full((n,), max_steps, dtype=torch.long)
    final_loss = torch.full((n,), float("nan"), dtype=torch.float64)
    hist_steps: list[int] = []
    hist: dict[str, list[Tensor]] = {}
    final: dict[str, Tensor] = {}
    with torch.no_grad():
        start = batched_loss(p).detach()
    for k in tqdm(range(max_steps + 1), desc=desc, disable=not progress, leave=False):
        with torch.no_grad():
            current = batched_loss(p).detach()
        bad = ~torch.isfinite(current) | (current > diverge_factor * start.clamp_min(1e-12))
        now_reached = ~done & ~bad & (current < threshold)
        now_diverged = ~done & bad
        stopping = now_reached | now_diverged | (~done & torch.tensor(k == max_steps, device=device))
        for i in torch.nonzero(stopping).flatten().tolist():
            steps[i], final_loss[i] = k, float(current[i])
        reached |= now_reached
        diverged |= now_diverged
        if batched_record is not None and (k % every == 0 or bool(stopping.any())):
            values = {name: v.detach().double().cpu() for name, v in batched_record(p).items()}
            live = (~done).cpu()
            hist_steps.append(k)
            for name, v in values.items():
                hist.setdefault(name, []).append(torch.where(live, v, torch.nan))
                row = final.setdefault(name, torch.full((n,), float("nan"), dtype=torch.float64))
                row[stopping.cpu()] = v[stopping.cpu()]
        done |= stopping
        if bool(done.all()):
            break
        u = torch.stack([torch.rand((), generator=g) for g in gens]).to(device=device)
        moved = batched_step(p, u)
        p = {name: torch.where(_rows(done, v), v, moved[name].detach()) for name, v in p.items()}
    history: dict[str, Tensor] = {"step": torch.tensor(hist_steps)}
    history.update({name: torch.stack(rows) for name, rows in hist.items()})
    return {
        "steps": steps,
        "reached": reached.cpu(),
        "diverged": diverged.cpu(),
        "loss": final_loss,
        "params": p,
        "history": history,
        "final": final,
    }


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def task_metrics(losses: Sequence[Loss], params: Params) -> dict[str, float]:
    """Per-task losses and ‖∇L_i‖², pairwise alignments ⟨g_i, g_j⟩ and cosines, as floats.

    Keys: ``loss_i``, ``grad_sq_i`` for each task i, ``alignment_ij`` and ``cosine_ij`` for
    i < j (cosine is NaN if a gradient is zero), and ``sum_grad_sq`` = ‖Σ_i g_i‖².
    One gradient per task is computed (no Hessians).
    """
    losses = check_losses(losses)
    check_params(params)

    def combine(values: list[Tensor], gs: list[Params]) -> dict[str, Tensor]:
        terms = {}
        for i, v in enumerate(values):
            terms[f"loss_{i}"] = v
            terms[f"grad_sq_{i}"] = dot(gs[i], gs[i])
        for i, j in _pairs(len(gs)):
            terms[f"alignment_{i}{j}"] = dot(gs[i], gs[j])
        total = sum_trees(gs)
        terms["sum_grad_sq"] = dot(total, total)
        return terms

    terms = gradient_terms(losses, detach(params), combine)
    out = {k: float(v) for k, v in terms.items() if not k.startswith("sum")}
    for i, j in _pairs(len(losses)):
        den = (out[f"grad_sq_{i}"] * out[f"grad_sq_{j}"]) ** 0.5
        out[f"cosine_{i}{j}"] = out[f"alignment_{i}{j}"] / den if den > 0 else float("nan")
    out["sum_grad_sq"] = float(terms["sum_grad_sq"])
    return out


# ---------------------------------------------------------------------------------------------
# Two-task constructions
# ---------------------------------------------------------------------------------------------


def product_tasks(a: float, b: float) -> tuple[Loss, Loss]:
    """Two tasks on a 2-parameter "shared trunk" θ = (x, y) with the prediction x·y:

    L_A = ½(xy − a)², L_B = ½(xy − b)², g_A = (xy − a)(y, x), g_B = (xy − b)(y, x).

    For a ≠ b the summed loss is minimal on the hyperbola xy = (a+b)/2, where
    g_A = −g_B ≠ 0: the tasks conflict there, ⟨g_A, g_B⟩ = −((a−b)/2)²(x² + y²), and the full
    implicit regularizer (h/4)‖g_A + g_B‖² vanishes while the flatness part does not.
    """
    for name, v in (("a", a), ("b", b)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a real number, got {type(v).__name__}")

    def check(theta: Tensor) -> Tensor:
        if not isinstance(theta, Tensor) or theta.shape != (2,):
            raise ValueError("product_tasks losses take a tensor θ = (x, y) of shape (2,)")
        return theta[0] * theta[1]

    return (lambda t: 0.5 * (check(t) - a) ** 2), (lambda t: 0.5 * (check(t) - b) ** 2)


@dataclass
class TwoTaskSplit:
    """Inputs shared by two tasks, with one label vector per task (train and test)."""

    x_train: Tensor
    y_train: tuple[Tensor, Tensor]
    x_test: Tensor
    y_test: tuple[Tensor, Tensor]
    n_classes: tuple[int, int]
    names: tuple[str, str]

    def to(self, device: torch.device | str) -> TwoTaskSplit:
        return TwoTaskSplit(
            self.x_train.to(device),
            tuple(y.to(device) for y in self.y_train),
            self.x_test.to(device),
            tuple(y.to(device) for y in self.y_test),
            self.n_classes,
            self.names,
        )


LABELINGS = ("class", "parity", "ge5", "mod3", "shuffled")


def relabel(y: Tensor, labeling: str, seed: int = 0) -> tuple[Tensor, int]:
    """Another labeling of digit classes 0…9; returns (labels, number of classes).

    ``class``: the digit; ``parity``: y mod 2; ``ge5``: 1 if y ≥ 5; ``mod3``: y mod 3;
    ``shuffled``: the labels of a seeded random permutation of the examples (random labels,
    that the network can only memorize: a task that competes with the others for the trunk).
    """
    if labeling == "class":
        return y.clone(), 10
    if labeling == "parity":
        return y % 2, 2
    if labeling == "ge5":
        return (y >= 5).long(), 2
    if labeling == "mod3":
        return y % 3, 3
    if labeling == "shuffled":
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        return y[perm.to(y.device)], 10
    raise ValueError(f"labeling must be one of {LABELINGS}, got {labeling!r}")


def digits_two_tasks(
    split: Split, task_a: str = "class", task_b: str = "parity", seed: int = 0
) -> TwoTaskSplit:
    """Two labelings (see :func:`relabel`) of the same digits images (``ib.data.digits()``)."""
    if not isinstance(split, Split):
        raise TypeError(f"split must be an ibea_lib.data.Split, got {type(split).__name__}")
    ya_train, na = relabel(split.y_train, task_a, seed)
    yb_train, nb = relabel(split.y_train, task_b, seed + 1)
    ya_test, _ = relabel(split.y_test, task_a, seed + 2)
    yb_test, _ = relabel(split.y_test, task_b, seed + 3)
    return TwoTaskSplit(
        split.x_train, (ya_train, yb_train), split.x_test, (ya_test, yb_test), (na, nb), (task_a, task_b)
    )


def head_losses(model: torch.nn.Module, inputs: Tensor, targets: Sequence[Tensor]) -> list[Loss]:
    """One cross-entropy loss per head of a multi-head model (``forward`` returns a tuple).

    Loss i is ``params -> cross_entropy(model(inputs; params)[i], targets[i])``.
    """
    targets = list(targets)
    if not targets:
        raise ValueError("targets is empty; give one label tensor per head")
    for i, t in enumerate(targets):
        if not isinstance(t, Tensor) or t.shape != (len(inputs),):
            raise ValueError(f"targets[{i}] must be a tensor of {len(inputs)} labels")
    return [
        model_loss(model, lambda out, y, i=i: F.cross_entropy(out[i], y), inputs, t)
        for i, t in enumerate(targets)
    ]


def head_accuracies(
    model: torch.nn.Module, params: Params, inputs: Tensor, targets: Sequence[Tensor]
) -> list[float]:
    """Accuracy of each head of a multi-head model with parameters ``params`` (no gradients)."""
    from torch.func import functional_call

    with torch.no_grad():
        outs = functional_call(model, dict(params), (inputs,))
    if len(outs) != len(targets):
        raise ValueError(f"the model has {len(outs)} heads but {len(targets)} label tensors were given")
    return [float((o.argmax(-1) == t).float().mean()) for o, t in zip(outs, targets, strict=True)]


__all__ = [
    "LABELINGS",
    "TwoTaskSplit",
    "alternating_update",
    "conflict_free_loss",
    "conflict_free_update",
    "conflict_gradient",
    "conflict_weighted_update",
    "digits_two_tasks",
    "flatness_field",
    "head_accuracies",
    "head_losses",
    "pcgrad",
    "pcgrad_update",
    "product_tasks",
    "relabel",
    "stack_models",
    "summed_update",
    "task_metrics",
    "train_seeds_to_loss",
]


flatness_field = order_averaged_field
"""F = −∇(Σ_i L_i + (h/4) Σ_i ‖∇L_i‖²): the multitask modified field without the conflict term.

To O(h³) per step it is followed by one GD step on :func:`conflict_free_loss` and by the *mean*
of the two alternating sweeps A→B and B→A; not by one GD step on Σ_i L_i (that needs
:func:`ibea_lib.multitask_field`). Another name for :func:`ibea_lib.bea.order_averaged_field`.
"""
