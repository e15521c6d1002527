"""Forgetting in continual learning: what one step of task B does to task A, and the measures at θ_A.

After one step of task B from θ, task A's loss changes by
−h⟨g_A, g_B⟩ + (h²/2) g_Bᵀ H_A g_B + O(h³), and g_Bᵀ H_A g_B = ⟨g_B, H_B g_A⟩ − ⟨g_B, [g_A, g_B]⟩,
so at a minimum of task A (g_A = 0) the first forgetting is −(h²/2)⟨g_B, [g_A, g_B]⟩
(:func:`forgetting_terms`). :func:`start_measures` computes, at the end θ_A of task A, the
bracket next to the trivial baselines (‖∇L_B‖, L_B, the cosine of the two gradients) that
chapter 08 compares with the forgetting measured after a whole phase of task B.
(Moved here from ``ibea_lib.book.continual``; rank correlations are in ``ibea_lib.book.stats``.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..autodiff import Loss, check_losses, grad, hvp, model_loss
from ..bea import lie_bracket
from ..data import Split
from ..pytree import Params, add, check_lr, dot

__all__ = [
    "classification_losses",
    "evaluate_task",
    "forgetting",
    "forgetting_terms",
    "schedule",
    "start_measures",
    "train_phase",
]


def forgetting_terms(loss_a: Loss, loss_b: Loss, params: Params, lr: float) -> dict[str, float]:
    """Second-order prediction of how one step of task B changes task A's loss.

    L_A(θ − h g_B) − L_A(θ) = −h⟨g_A, g_B⟩ + (h²/2) g_Bᵀ H_A g_B + O(h³), and
    g_Bᵀ H_A g_B = ⟨g_B, H_B g_A⟩ − ⟨g_B, [g_A, g_B]⟩. Returns ``first`` = −h⟨g_A, g_B⟩,
    ``second`` = (h²/2) g_Bᵀ H_A g_B, ``bracket_part`` = −(h²/2)⟨g_B, [g_A, g_B]⟩,
    ``bracket_norm`` = ‖[g_A, g_B]‖ and ``predicted`` = first + second.
    """
    h = check_lr(lr)
    ga, gb = grad(loss_a, params), grad(loss_b, params)
    br = lie_bracket(loss_a, loss_b, params)
    first = -h * float(dot(ga, gb))
    second = h * h / 2 * float(dot(gb, hvp(loss_a, params, gb)))
    return {
        "first": first,
        "second": second,
        "bracket_part": -h * h / 2 * float(dot(gb, br)),
        "bracket_norm": float(torch.sqrt(dot(br, br))),
        "predicted": first + second,
    }


def start_measures(loss_a: Loss, loss_b: Loss, params: Params, lr: float) -> dict[str, float]:
    """Everything chapter 08 measures at θ_A = ``params`` before task B starts.

    The bracket measures ``bracket_norm`` = ‖[∇L_A, ∇L_B]‖ and ``bracket_part`` =
    −(h²/2)⟨g_B, [g_A, g_B]⟩ (the predicted first-step forgetting), and the trivial baselines
    ``grad_norm_b`` = ‖∇L_B‖, ``loss_b`` = L_B(θ_A), ``cosine`` = cos(∇L_A, ∇L_B) and
    ``curvature_part`` = (h²/2) g_Bᵀ H_A g_B (the full second-order term). Training losses.
    """
    h = check_lr(lr)
    ga, gb = grad(loss_a, params), grad(loss_b, params)
    br = lie_bracket(loss_a, loss_b, params)
    na, nb = float(torch.sqrt(dot(ga, ga))), float(torch.sqrt(dot(gb, gb)))
    with torch.no_grad():
        lb = float(loss_b(params))
    return {
        "bracket_norm": float(torch.sqrt(dot(br, br))),
        "bracket_part": -h * h / 2 * float(dot(gb, br)),
        "curvature_part": h * h / 2 * float(dot(gb, hvp(loss_a, params, gb))),
        "grad_norm_b": nb,
        "loss_b": lb,
        "cosine": float(dot(ga, gb)) / (na * nb) if na * nb > 0 else 0.0,
    }


def classification_losses(model: torch.nn.Module, split: Split) -> tuple[Loss, Loss]:
    """(train loss, test loss) of ``model`` on ``split`` with cross-entropy, as functions of params."""
    return (
        model_loss(model, F.cross_entropy, split.x_train, split.y_train),
        model_loss(model, F.cross_entropy, split.x_test, split.y_test),
    )


def evaluate_task(model: torch.nn.Module, params: Params, split: Split) -> dict[str, float]:
    """Test loss and test accuracy of ``model`` with ``params`` on ``split``."""
    with torch.no_grad():
        logits = torch.func.functional_call(model, dict(params), (split.x_test,))
        return {
            "loss": float(F.cross_entropy(logits, split.y_test)),
            "acc": float((logits.argmax(-1) == split.y_test).float().mean()),
        }


def forgetting(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Forgetting of a task: increase of its test loss and drop of its test accuracy."""
    return {"loss_increase": after["loss"] - before["loss"], "acc_drop": before["acc"] - after["acc"]}


def train_phase(
    model: torch.nn.Module,
    params: Params,
    task_loss: Loss | Callable[[int], Loss],
    lr: float,
    steps: int,
    *,
    watch: tuple[Loss, Split] | None = None,
    every: int = 10,
    desc: str | None = None,
    progress: bool = True,
) -> tuple[Params, dict[str, list[float]]]:
    """Full-batch GD on a task for ``steps`` steps, watching an earlier task A.

    ``task_loss`` is a loss, or a function ``step -> loss`` (a task that changes during the phase,
    e.g. a gradual shift; step counts from 1). With ``watch = (loss_A, split_A)`` the history holds,
    every ``every`` steps: ``bracket`` = ‖[∇L_A, ∇L_cur]‖ (``loss_A`` is A's training loss, L_cur the
    task of the next step), ``loss_a`` and ``acc_a`` (test loss and accuracy of task A).
    """
    h = check_lr(lr)
    current = task_loss if _is_schedule(task_loss) else (lambda step: task_loss)

    def update(p: Params, step: int) -> Params:
        return add(p, grad(current(step), p), alpha=-h)

    record = None
    if watch is not None:
        loss_a, split_a = watch

        def record(p: Params, step: int) -> dict[str, float]:
            ev = evaluate_task(model, p, split_a)
            br = lie_bracket(loss_a, current(min(step + 1, steps)), p)
            return {"bracket": float(torch.sqrt(dot(br, br))), "loss_a": ev["loss"], "acc_a": ev["acc"]}

    from .training import run

    return run(params, update, steps, record=record, every=every, desc=desc, progress=progress)


def _is_schedule(task_loss) -> bool:
    """True for a ``step -> loss`` schedule (marked with ``schedule.is_schedule = True``)."""
    if not callable(task_loss):
        raise TypeError(f"task_loss must be a loss or a schedule, got {type(task_loss).__name__}")
    return bool(getattr(task_loss, "is_schedule", False))


def schedule(losses: Sequence[Loss], steps: int) -> Callable[[int], Loss]:
    """A task that changes during a phase: ``losses[k]`` for the k-th of ``len(losses)`` equal stretches
    of ``steps`` steps (a gradual shift when ``losses`` are increasingly shifted versions of a task)."""
    losses = check_losses(losses)
    if steps < len(losses):
        raise ValueError(f"steps ({steps}) must be at least the number of stages ({len(losses)})")

    def current(step: int) -> Loss:
        return losses[min((max(step, 1) - 1) * len(losses) // steps, len(losses) - 1)]

    current.is_schedule = True  # type: ignore[attr-defined]
    return current
