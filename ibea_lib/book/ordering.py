"""Task order and its correction: what the Lie bracket predicts, and how to remove it.

One gradient step on task A then one on task B (step h) ends at θ_AB; the other order ends at
θ_BA. Expanding both to second order (FORMULAS §3),

    θ_AB − θ_BA = h² [∇L_A, ∇L_B] + O(h³),   [∇L_A, ∇L_B] = H_B ∇L_A − H_A ∇L_B,

so for any evaluation loss L_E,

    L_E(θ_AB) − L_E(θ_BA) = h² ⟨∇L_E, [∇L_A, ∇L_B]⟩ + O(h³).

A positive value predicts that B then A ends lower on E (:func:`order_loss_gap` measures the
left side, :func:`predicted_order_loss_gap` computes the right one). With k steps per task, h
becomes the time t = k·h spent on each task. (``ibea_lib.continual.order_gap`` is the position
gap θ_AB − θ_BA itself.)

The same expansion says that one sweep over tasks 1, …, n follows the modified field
−∇(Σ L_i + (h/4) Σ ‖∇L_i‖²) + (h/2) Σ_{i<j} [∇L_i, ∇L_j]. Subtracting (h²/2) Σ_{i<j} [∇L_i, ∇L_j]
from the sweep (:func:`bracket_corrected_steps`) removes the bracket term: the corrected update
follows the flow of the *order-free* field −∇(Σ L_i + (h/4) Σ ‖∇L_i‖²) to O(h³) per step
(:func:`ibea_lib.order_averaged_field` computes that field, :func:`ibea_lib.bracket_sum` the
sum of brackets).

Also here: a class-balanced replay buffer for continual learning, the block schedules of
chapter 11 (:func:`block_order_gaps`: k steps on each task, both orders, many evaluation losses
at once) and chapter 12 (:func:`blocked_replay`, with the optional per-block bracket correction).
The Wilson interval moved to :mod:`ibea_lib.book.stats` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..autodiff import Loss, check_losses, evaluate, grad
from ..bea import lie_bracket
from ..integrate import gd_step, sequential_steps
from ..pytree import Params, add, check_lr, check_params, check_positive_int, dot, norm, sub

__all__ = [
    "block_order_gaps",
    "class_tasks",
    "order_predictions",
    "blocked_replay",
    "order_loss_gap",
    "predicted_order_loss_gap",
    "replay_buffer",
    "train_in_order",
]


def train_in_order(losses: Sequence[Loss], params: Params, lr: float, steps_per_task: int = 1) -> Params:
    """``steps_per_task`` GD steps of size h on each loss in turn, in the given order."""
    k = check_positive_int(steps_per_task, "steps_per_task")
    n = len(check_losses(losses))
    return sequential_steps(losses, params, lr, order=[i for i in range(n) for _ in range(k)])


def order_loss_gap(
    loss_a: Loss,
    loss_b: Loss,
    loss_e: Loss,
    params: Params,
    lr: float,
    steps_per_task: int = 1,
) -> float:
    """L_E(θ_AB) − L_E(θ_BA): the measured effect of the order (k steps on each task).

    Positive means that training B first and A last ends with the lower loss on E.
    """
    check_params(params)
    theta_ab = train_in_order([loss_a, loss_b], params, lr, steps_per_task)
    theta_ba = train_in_order([loss_b, loss_a], params, lr, steps_per_task)
    with torch.no_grad():
        return float(evaluate(loss_e, theta_ab, "loss_e") - evaluate(loss_e, theta_ba, "loss_e"))


def predicted_order_loss_gap(
    loss_a: Loss,
    loss_b: Loss,
    loss_e: Loss,
    params: Params,
    lr: float,
    steps_per_task: int = 1,
) -> float:
    """The bracket's prediction of :func:`order_loss_gap`: t² ⟨∇L_E, [∇L_A, ∇L_B]⟩ with t = k·h.

    Exact to O(t³) for one step per task (k = 1); for k > 1 it is the same leading term for
    the composition of the two task flows over time t each (an extrapolation when t is not
    small). Its sign does not depend on h: only the magnitude does.
    """
    h = check_lr(lr)
    t = check_positive_int(steps_per_task, "steps_per_task") * h
    bracket = lie_bracket(loss_a, loss_b, params)
    return float(t * t * dot(grad(loss_e, params), bracket))


def replay_buffer(labels: Tensor, size: int, seed: int) -> Tensor:
    """Indices of a class-balanced random sample of ``size`` examples (a small episodic memory).

    Each class present in ``labels`` gets ``size // n_classes`` examples, and the remainder goes
    to the first classes, one each; indices are sorted. Deterministic given ``seed``.
    """
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise TypeError("labels must be a 1-D tensor of integer class labels")
    classes = torch.unique(labels.cpu())
    if isinstance(size, bool) or not isinstance(size, int) or not len(classes) <= size <= len(labels):
        raise ValueError(
            f"size must be an integer between the number of classes ({len(classes)}) and the "
            f"number of examples ({len(labels)}), got {size!r}"
        )
    gen = torch.Generator().manual_seed(seed)
    base, extra = divmod(size, len(classes))
    chosen = []
    for i, c in enumerate(classes):
        idx = torch.nonzero(labels.cpu() == c).flatten()
        want = base + (1 if i < extra else 0)
        if want > len(idx):
            raise ValueError(f"class {int(c)} has only {len(idx)} examples, {want} requested")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:want]])
    return torch.sort(torch.cat(chosen)).values.to(labels.device)


def block_order_gaps(
    losses: Sequence[Loss],
    pairs: Sequence[tuple[int, int]],
    evals: dict[str, Loss] | Callable[[int, int], dict[str, Loss]],
    params: Params,
    lr: float,
    steps_per_task: Sequence[int],
) -> dict[int, dict[str, Tensor]]:
    """Measured order gaps L_E(θ_ab) − L_E(θ_ba) for many pairs, block sizes and evaluation losses.

    θ_ab = ``k`` GD steps (size h = ``lr``) on ``losses[a]`` then ``k`` on ``losses[b]``, from
    ``params``. The first block of every task is computed once per k and reused by all pairs.
    ``evals`` maps names to evaluation losses, or is a function ``(a, b) -> {name: loss}`` (for
    evaluations that depend on the pair, e.g. task a's own test loss). Returns
    ``{k: {name: 1-D tensor over pairs}}``.
    """
    losses = check_losses(losses)
    check_params(params)
    h = check_lr(lr)
    ks = [check_positive_int(k, "steps_per_task") for k in steps_per_task]
    out: dict[int, dict[str, Tensor]] = {}
    for k in ks:
        used = sorted({i for pair in pairs for i in pair})
        first = {i: train_in_order([losses[i]], params, h, k) for i in used}
        rows: dict[str, list[float]] = {}
        for a, b in pairs:
            theta_ab = train_in_order([losses[b]], first[a], h, k)
            theta_ba = train_in_order([losses[a]], first[b], h, k)
            ev = evals(a, b) if callable(evals) else evals
            with torch.no_grad():
                for name, loss_e in ev.items():
                    gap = evaluate(loss_e, theta_ab, name) - evaluate(loss_e, theta_ba, name)
                    rows.setdefault(name, []).append(float(gap))
        out[k] = {name: torch.tensor(v, dtype=torch.float64) for name, v in rows.items()}
    return out


def blocked_replay(
    loss_r: Loss,
    loss_new: Loss,
    params: Params,
    lr: float,
    steps_per_block: int,
    blocks: int,
    *,
    correct: bool = False,
    progress: bool = False,
) -> tuple[Params, dict[str, list[float]]]:
    """``blocks`` rounds of k steps on the replay loss L_R then k steps on the new task L_2.

    With ``correct=True`` each round is followed by the bracket correction at the round's start,
    −(t²/2)[∇L_R, ∇L_2](θ_start) with t = k·h: the leading order term by which the round differs
    from the average of its two orders (FORMULAS §3, with t in place of h; for k > 1 this is an
    extrapolation, exact only for small t). Returns the final parameters and a history with the
    size of the correction relative to the round's displacement (``ratio``; zeros when
    ``correct=False``).
    """
    h = check_lr(lr)
    k = check_positive_int(steps_per_block, "steps_per_block")
    n = check_positive_int(blocks, "blocks")
    check_params(params)
    t = k * h
    theta, ratios = params, []
    from tqdm.auto import tqdm

    for _ in tqdm(range(n), disable=not progress, leave=False):
        start = theta
        theta = train_in_order([loss_r, loss_new], start, h, k)
        if correct:
            corr = lie_bracket(loss_r, loss_new, start)
            moved = float(norm(sub(theta, start)))
            ratios.append(float(t * t / 2 * norm(corr)) / moved if moved > 0 else 0.0)
            theta = add(theta, corr, alpha=-t * t / 2)
        else:
            ratios.append(0.0)
    return theta, {"ratio": ratios}


def class_tasks(
    data,
    groups: Sequence[Sequence[int]],
    *,
    hidden: int = 64,
    seed: int = 0,
    pretrain_steps: int = 300,
    pretrain_lr: float = 0.5,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> dict:
    """Tasks made of groups of classes of a classification split, at a partially trained point.

    A tanh MLP ``features → hidden → classes`` (seed ``seed``) is trained with full-batch GD on
    the whole training set for ``pretrain_steps`` steps of size ``pretrain_lr``; that is the
    common starting point θ_0 of both orders. Task i is the mean cross-entropy on the training
    examples whose label is in ``groups[i]``. Returns ``model``, ``params`` (θ_0), ``train`` and
    ``test`` (one loss per group, on the training and the test examples of the group),
    ``test_all`` (the test loss on all classes, the symmetric evaluation) and ``test_acc``
    (a function params → test accuracy on all classes).
    """
    from ..autodiff import model_loss, params_of
    from ..models import mlp

    ce = torch.nn.functional.cross_entropy
    data = data.to(device)
    x, y, xt, yt = (
        t.to(dtype) if t.is_floating_point() else t
        for t in (data.x_train, data.y_train, data.x_test, data.y_test)
    )
    n_classes = int(torch.cat([y, yt]).max()) + 1
    with torch.random.fork_rng(devices=[]):
        model = mlp([x.shape[1], hidden, n_classes], "tanh", seed=seed, dtype=dtype, device=device)
    full = model_loss(model, ce, x, y)
    params = params_of(model)
    for _ in range(check_positive_int(pretrain_steps, "pretrain_steps") if pretrain_steps else 0):
        params = gd_step(full, params, pretrain_lr)

    def member(labels: Tensor, group: Sequence[int]) -> Tensor:
        return torch.isin(labels, torch.as_tensor(list(group), device=labels.device))

    train = [model_loss(model, ce, x[member(y, g)], y[member(y, g)]) for g in groups]
    test = [model_loss(model, ce, xt[member(yt, g)], yt[member(yt, g)]) for g in groups]

    def test_acc(p: Params) -> float:
        with torch.no_grad():
            logits = torch.func.functional_call(model, p, (xt,))
        return float((logits.argmax(-1) == yt).double().mean())

    return {
        "model": model,
        "params": params,
        "train": train,
        "test": test,
        "test_all": model_loss(model, ce, xt, yt),
        "test_acc": test_acc,
    }


def order_predictions(loss_a: Loss, loss_b: Loss, loss_e: Loss, params: Params) -> dict[str, Tensor]:
    """The scores that predict the sign of L_E(θ_ab) − L_E(θ_ba) (positive: b then a is better).

    ``bracket`` = ⟨∇L_E, [∇L_A, ∇L_B]⟩ (times t² it is the predicted gap, FORMULAS §3);
    ``alignment`` = ⟨∇L_E, ĝ_A⟩ − ⟨∇L_E, ĝ_B⟩ with ĝ = g/‖g‖: the heuristic "train last the task
    whose gradient is better aligned with the evaluation" (first order, no bracket). The third
    baseline, recency ("the task trained last wins"), predicts a positive gap whenever E is
    task A's own loss and needs no computation.
    """
    ge, ga, gb = grad(loss_e, params), grad(loss_a, params), grad(loss_b, params)
    bracket = lie_bracket(loss_a, loss_b, params)
    return {
        "bracket": dot(ge, bracket),
        "alignment": dot(ge, ga) / norm(ga) - dot(ge, gb) / norm(gb),
    }
