"""Training loops and metrics shared by the chapters.

Training here is functional: ``params`` is a dict of tensors, an ``update`` maps
``(params, step) -> params``, and :func:`run` repeats it with a ``tqdm`` progress bar while a
``record`` function logs numbers. Any update in the book (a GD step, one step per task,
a regularized or surgery-corrected step) plugs into the same loop.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import torch
from torch import Tensor

from ..pytree import Params, clone


def pick_device() -> torch.device:
    """CUDA when it is there, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_offset() -> int:
    """The shift every experiment adds to its seeds: ``$IBEA_SEED_OFFSET`` (an integer, default 0).

    A chapter written as ``seeds = [seed_offset() + s for s in range(n)]`` re-runs on other seeds with
    ``IBEA_SEED_OFFSET=1000 jupyter nbconvert --execute ...``; its asserts must follow from intervals,
    not from the numbers that seeds 0 … n − 1 happened to give.
    """
    raw = os.environ.get("IBEA_SEED_OFFSET", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"IBEA_SEED_OFFSET must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"IBEA_SEED_OFFSET must be >= 0, got {value}")
    return value


def seed_all(seed: int) -> None:
    """Seed Python's and torch's random generators (CPU and CUDA)."""
    random.seed(seed)
    torch.manual_seed(seed)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose largest logit is the label."""
    return float((logits.argmax(dim=-1) == labels).float().mean())


def run(
    params: Params,
    update: Callable[[Params, int], Params],
    steps: int,
    *,
    record: Callable[[Params, int], dict[str, float]] | None = None,
    every: int = 1,
    progress: bool = True,
    desc: str | None = None,
) -> tuple[Params, dict[str, list[float]]]:
    """Apply ``update`` ``steps`` times from a copy of ``params``.

    ``record(params, step)`` is called at step 0, every ``every`` steps and at the end; its
    numbers are collected into a history ``{name: [values]}`` (with ``"step"``).
    Returns (final params, history). A non-finite parameter stops the run with an error.
    """
    from tqdm.auto import tqdm

    theta = clone(params)
    history: dict[str, list[float]] = {}

    def log(step: int) -> None:
        if record is None:
            return
        row = {"step": step, **record(theta, step)}
        for key, value in row.items():
            history.setdefault(key, []).append(float(value))

    log(0)
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
        theta = update(theta, step)
        if step % every == 0 or step == steps:
            log(step)
    values = theta.values() if isinstance(theta, dict) else [theta]
    if not all(bool(torch.isfinite(v).all()) for v in values):
        raise FloatingPointError("training diverged: parameters are not finite (lower the learning rate)")
    return theta, history
