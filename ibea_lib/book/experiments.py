"""Protocols shared by the experiment chapters (Part IV).

* :func:`pick_scale` — one switch (``"cpu"`` / ``"gpu"``) between a setting that fits the book's
  CPU budget and a larger one for a reader with a GPU.
* :func:`train_to_loss` — (S)GD on a model until the training loss first drops below a threshold
  (the "equal training loss" comparison), optionally with an explicit penalty: the gradient-norm
  regularizer of implicit gradient regularization, or the micro-batch regularizer of SGD (full, or
  only its gradient-variance part); it records the sharpness along the way on request.
  :func:`run_grid` runs it for several configurations and seeds, paired by initialization.
* :func:`top_eigenvalue` — the sharpness λ_max(∇²L) by (warm-startable) power iteration on
  Hessian-vector products.
* :func:`paired`, :func:`gap_fractions` — paired differences over seeds (Student-t intervals from
  :mod:`ibea_lib.book.stats`), fractions of a gap that a treatment closes.
* :func:`gd_update`, :func:`modified_gd_update`, :func:`trajectory` — full-batch updates
  θ ← θ − h∇L and θ ← θ − h∇(L + (λ/4)‖∇L‖²) run for a time with snapshots (trajectory matching).
* :func:`microbatch_penalty` — params ↦ mean_j ‖∇L_j‖² over micro-batches j (vmap), differentiable.
* :func:`cnn1d` — the small 1-D convolutional network of Part IV's second-network checks (MNIST-1D).
* :func:`outcomes` — how many runs of a configuration reached the threshold / diverged, over *all*
  seeds, with Wilson intervals (divergence is an outcome, not a dropped run).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..autodiff import Loss, value_and_grad
from ..bea import modified_loss
from ..pytree import Params, add, check_lr, dot, flatten, rebuild, tensors
from . import stats
from .training import run

SCALES = ("cpu", "gpu")


def pick_scale(scale: str, cpu: Mapping[str, Any], gpu: Mapping[str, Any]) -> dict[str, Any]:
    """The setting for ``scale``: a copy of ``cpu`` or of ``cpu`` updated with ``gpu``.

    ``gpu`` may override only keys that ``cpu`` defines, so both settings describe the same
    experiment and a typo cannot silently add an unused knob.
    """
    if not isinstance(scale, str) or scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    unknown = sorted(set(gpu) - set(cpu))
    if unknown:
        raise ValueError(f"the gpu setting has keys that the cpu setting lacks: {unknown}")
    out = dict(cpu)
    if scale == "gpu":
        out.update(gpu)
    return out


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------- full-batch GD


def gd_update(loss: Loss, lr: float) -> Callable[[Params, int], Params]:
    """The update (θ, step) ↦ θ − h ∇L(θ)."""
    h = check_lr(lr)
    return lambda params, step: add(params, value_and_grad(loss, params)[1], alpha=-h)


def modified_gd_update(loss: Loss, lr: float, reg_lr: float) -> Callable[[Params, int], Params]:
    """The update (θ, step) ↦ θ − h ∇L̃_H(θ), with L̃_H = L + (H/4)‖∇L‖², H = ``reg_lr``.

    Gradient descent with a small step h on the modified loss of GD at the large step H: by
    backward error analysis it follows the flow of L̃_H (up to O(h)), the flow that GD at H
    follows up to O(H²). ∇L̃_H = ∇L + (H/2)∇²L ∇L is obtained by differentiating
    :func:`ibea_lib.modified_loss` at parameters that require grad (double backward).
    """
    h = check_lr(lr)
    big = check_lr(reg_lr, "reg_lr")

    def update(params: Params, step: int) -> Params:
        leaves = rebuild(params, [t.detach().requires_grad_(True) for t in tensors(params)])
        value = modified_loss(loss, leaves, big)
        grads = torch.autograd.grad(value, tensors(leaves))
        return add(params, rebuild(params, list(grads)), alpha=-h)

    return update


def trajectory(
    loss: Loss,
    params: Params,
    lr: float,
    duration: float,
    *,
    reg_lr: float | None = None,
    record_dt: float | None = None,
    snapshot_times: Sequence[float] = (),
    desc: str | None = None,
    progress: bool = True,
) -> tuple[dict[str, list[float]], dict[float, Tensor]]:
    """Full-batch GD with step ``lr`` for time ``duration`` (⌊duration/h⌉ steps).

    Without ``reg_lr`` the update is θ − h∇L; with it, θ − h∇(L + (reg_lr/4)‖∇L‖²).
    Every ``record_dt`` units of time (default: every step) the history gets ``t`` = step·h,
    ``loss`` = L(θ) and ``grad_norm2`` = ‖∇L(θ)‖² (always of the *plain* loss L).
    ``snapshot_times`` are times (multiples of h) at which θ is stored, flattened, in the
    returned dict ``{t: θ(t)}``; time 0 is the initial θ.
    Returns (history, snapshots).
    """
    h = check_lr(lr)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a finite time > 0, got {duration}")
    steps = round(duration / h)
    if steps < 1 or abs(steps * h - duration) > 1e-9 * max(1.0, duration):
        raise ValueError(f"duration={duration} is not a positive multiple of lr={h}")
    every = 1 if record_dt is None else max(1, round(record_dt / h))
    wanted: dict[int, float] = {}
    for t in snapshot_times:
        k = round(t / h)
        if abs(k * h - t) > 1e-9 * max(1.0, abs(t)) or not 0 <= k <= steps:
            raise ValueError(f"snapshot time {t} is not a multiple of lr={h} in [0, {duration}]")
        wanted[k] = float(t)
    snaps: dict[float, Tensor] = {}

    def record(theta: Params, step: int) -> dict[str, float]:
        if step in wanted:
            snaps[wanted[step]] = flatten(theta).detach().clone()
        if step % every != 0 and step != steps:
            return {}
        value, g = value_and_grad(loss, theta)
        return {"t": step * h, "loss": float(value), "grad_norm2": float(dot(g, g))}

    update = gd_update(loss, h) if reg_lr is None else modified_gd_update(loss, h, reg_lr)
    history = _run_sparse(params, update, steps, record, desc=desc, progress=progress)
    return history, snaps


def _run_sparse(params, update, steps, record, *, desc, progress):
    """:func:`ibea_lib.training.run` with a record that may return nothing on some steps."""
    rows: list[dict[str, float]] = []

    def keep(theta: Params, step: int) -> dict[str, float]:
        row = record(theta, step)
        if row:
            rows.append(row)
        return {}

    run(params, update, steps, record=keep, every=1, progress=progress, desc=desc)
    history: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            history.setdefault(key, []).append(float(value))
    return history


# --------------------------------------------------------------------------- minibatch SGD


def microbatch_penalty(
    model: torch.nn.Module,
    criterion: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    micro_size: int,
) -> Callable[[dict[str, Tensor]], Tensor]:
    """The function params ↦ (1/J) Σ_j ‖∇L_j(params)‖², L_j the loss on micro-batch j.

    The N examples are cut, in order, into J = N / ``micro_size`` consecutive micro-batches
    (N must be a multiple of ``micro_size``). The per-micro-batch gradients are computed at
    once with ``torch.func.vmap``; the result is differentiable in ``params`` (so it can be
    added to a training objective). With the micro-batches as the m batches of an epoch,
    L + (h/4)·penalty is :func:`ibea_lib.sgd.sgd_modified_loss`.
    """
    from torch.func import functional_call, grad, vmap

    _check_count(micro_size, "micro_size")
    n = len(inputs)
    if n % micro_size != 0:
        raise ValueError(f"the {n} examples do not split into micro-batches of {micro_size}")
    xs = inputs.reshape(n // micro_size, micro_size, *inputs.shape[1:])
    ys = targets.reshape(n // micro_size, micro_size, *targets.shape[1:])

    def micro_loss(params, x, y):
        return criterion(functional_call(model, params, (x,)), y)

    per_micro = vmap(grad(micro_loss), in_dims=(None, 0, 0))

    def penalty(params: dict[str, Tensor]) -> Tensor:
        gs = per_micro(params, xs, ys)
        return sum((g**2).sum() for g in gs.values()) / xs.shape[0]

    return penalty


# --------------------------------------------------------------------------- Part IV on MNIST-1D

PENALTIES = ("grad_norm", "micro", "micro_variance")


def top_eigenvalue(
    loss: Loss, params: Params, *, iters: int = 20, init: Params | None = None, seed: int = 0
) -> tuple[Tensor, Params]:
    """λ_max(∇²L(θ)) and its eigenvector, by power iteration on Hessian-vector products.

    ∇L is built once with its graph; each iteration is one extra reverse pass
    (H v = ∇⟨∇L, v⟩, read off the same graph). ``init`` warm-starts the iteration (for instance
    with the eigenvector found at the previous point of a training run); otherwise it starts
    from a seeded Gaussian vector. Returns (Rayleigh quotient vᵀHv/vᵀv as a 0-dim tensor, v
    normalized). Power iteration finds the eigenvalue of largest *modulus*; near a minimum and
    along GD training that is the top eigenvalue λ_max ≥ 0 (the "sharpness").
    """
    _check_count(iters, "iters")
    leaves = [t.detach().requires_grad_(True) for t in tensors(params)]
    tree = rebuild(params, leaves)
    with torch.enable_grad():
        g = torch.autograd.grad(loss(tree), leaves, create_graph=True)
    if init is None:
        gen = torch.Generator().manual_seed(seed)
        v = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in leaves]
    else:
        v = [t.detach().clone() for t in tensors(init)]
    size = torch.sqrt(sum((t * t).sum() for t in v))
    v = [t / size for t in v]
    lam = torch.zeros((), dtype=leaves[0].dtype)
    for _ in range(iters):
        hv = torch.autograd.grad(g, leaves, grad_outputs=v, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(t) if h is None else h for h, t in zip(hv, leaves)]
        lam = sum((a * b).sum() for a, b in zip(v, hv)).detach()
        size = torch.sqrt(sum((t * t).sum() for t in hv))
        if float(size) == 0.0:
            return torch.zeros((), dtype=lam.dtype), rebuild(params, v)
        v = [t.detach() / size for t in hv]
    return lam, rebuild(params, v)


def train_to_loss(
    model: torch.nn.Module,
    criterion: Callable[[Tensor, Tensor], Tensor],
    split,
    *,
    lr: float,
    threshold: float,
    max_steps: int,
    batch_size: int | None = None,
    seed: int = 0,
    reg_lr: float = 0.0,
    penalty: str = "grad_norm",
    micro_size: int | None = None,
    check_every: int = 1,
    sharpness_every: int | None = None,
    sharpness_iters: int = 8,
    progress: bool = True,
    desc: str | None = None,
) -> dict[str, Any]:
    """Train a copy of ``model`` with (S)GD until the training loss first drops below ``threshold``.

    Each step is θ ← θ − h ∇(L_B + (λ/4)·P_B) with h = ``lr``, λ = ``reg_lr`` (0: plain (S)GD),
    L_B the mean loss on the current batch (the whole training set when ``batch_size`` is None)
    and the explicit penalty P_B given by ``penalty``:

    * ``"grad_norm"``: ‖∇L_B‖² (on the full batch: the IGR regularizer of Barrett & Dherin);
    * ``"micro"``: (1/J) Σ_j ‖∇L_{B,j}‖², the J = B/b micro-batches of b = ``micro_size``
      examples (the SGD regularizer of batch size b, Smith et al. 2021);
    * ``"micro_variance"``: (1/J) Σ_j ‖∇L_{B,j}‖² − ‖∇L_B‖², only the part of it beyond what
      (S)GD with batch B already supplies (the gradient-variance part).

    Batches: random reshuffling (each epoch a permutation from a generator seeded with
    ``seed``, cut into consecutive batches; an incomplete last batch is dropped). Micro-batches
    are consecutive blocks of the (shuffled) batch, so with a full batch they form a fresh random
    partition at every step. The training loss L on the *whole* training set is checked every
    ``check_every`` steps (on a full batch it is the value computed for the step, every step);
    training stops at the first check with L < ``threshold`` (``reached``), when L is not
    finite or exceeds 10 × its initial value (``diverged``), or after ``max_steps``.

    Returns a dict: ``steps``, ``time`` (= steps·h), ``reached``, ``diverged``, ``train_loss``,
    ``train_acc``, ``test_loss``, ``test_acc``, ``grad_norm2`` (‖∇L‖² of the full training loss
    at the stopping point), as 0-dim tensors; ``history`` {``step``, ``loss``} (1-D tensors, the
    checks); with ``sharpness_every``, ``sharp_step`` and ``sharpness`` (λ_max of the full training
    loss every that many steps, by warm-started power iteration, ``sharpness_iters`` iterations
    after 4× as many at the first point); ``params``, the final parameters. ``model`` is not changed.
    """
    import copy

    h = check_lr(lr)
    _check_count(max_steps, "max_steps")
    _check_count(check_every, "check_every")
    if not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"threshold must be a training loss > 0, got {threshold!r}")
    if isinstance(reg_lr, bool) or not isinstance(reg_lr, (int, float)) or reg_lr < 0:
        raise ValueError(f"reg_lr must be a number ≥ 0, got {reg_lr!r}")
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    x, y = split.x_train, split.y_train
    n = len(x)
    full = batch_size is None or batch_size == n
    if batch_size is None:
        batch_size = n
    _check_count(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} training examples")
    micro = reg_lr > 0 and penalty != "grad_norm"
    if micro:
        if micro_size is None:
            raise ValueError(f"penalty={penalty!r} needs micro_size (the size of the micro-batches)")
        _check_count(micro_size, "micro_size")
        if batch_size % micro_size != 0:
            raise ValueError(f"batch_size={batch_size} is not a multiple of micro_size={micro_size}")

    net = copy.deepcopy(model)
    names = [k for k, _ in net.named_parameters()]
    ps = [p for _, p in net.named_parameters()]
    gen = torch.Generator().manual_seed(seed)
    state = {"perm": None, "pos": n}

    def next_batch():
        if state["pos"] + batch_size > n:
            state["perm"] = torch.randperm(n, generator=gen).to(x.device)
            state["pos"] = 0
        idx = state["perm"][state["pos"] : state["pos"] + batch_size]
        state["pos"] += batch_size
        return idx

    if micro:
        from torch.func import functional_call, grad, vmap

        def micro_loss(params, xb, yb):
            return criterion(functional_call(net, params, (xb,)), yb)

        per_micro = vmap(grad(micro_loss), in_dims=(None, 0, 0))

    def step_grads(idx):
        """(loss on the batch, gradient of the objective) at the current parameters."""
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        value = criterion(net(xb), yb)
        if reg_lr == 0:
            return value, torch.autograd.grad(value, ps)
        need_batch_grad = penalty in ("grad_norm", "micro_variance")
        objective = value
        if need_batch_grad:
            g = torch.autograd.grad(value, ps, create_graph=True)
            sq = sum((t * t).sum() for t in g)
            objective = objective + (reg_lr / 4) * (sq if penalty == "grad_norm" else -sq)
        if micro:
            j = batch_size // micro_size
            xs = xb.reshape(j, micro_size, *xb.shape[1:])
            ys = yb.reshape(j, micro_size, *yb.shape[1:])
            gs = per_micro(dict(zip(names, ps)), xs, ys)
            objective = objective + (reg_lr / 4) * sum((t**2).sum() for t in gs.values()) / j
        return value, torch.autograd.grad(objective, ps)

    def full_loss():
        with torch.no_grad():
            return criterion(net(x), y)

    rows_step, rows_loss, sharp_step, sharp_val = [], [], [], []
    start = float(full_loss())
    reached = diverged = False
    eig_v = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, desc=desc, leave=False)
    for step in range(max_steps + 1):
        if sharpness_every is not None and step % sharpness_every == 0:
            iters = sharpness_iters * (4 if eig_v is None else 1)
            lam, eig_v = top_eigenvalue(
                _module_loss(net, criterion, x, y), dict(zip(names, ps)), iters=iters, init=eig_v, seed=seed
            )
            sharp_step.append(step)
            sharp_val.append(float(lam))
        gs = None
        if full:  # the step's own loss value is the training loss: check it at every step
            value, gs = step_grads(next_batch() if micro else None)
            current = float(value.detach())
        elif step % check_every == 0 or step == max_steps:
            current = float(full_loss())
        else:
            current = None
        if current is not None:
            rows_step.append(step)
            rows_loss.append(current)
            if not math.isfinite(current) or current > 10 * max(start, 1e-12):
                diverged = True
                break
            if current < threshold:
                reached = True
                break
        if step == max_steps:
            break
        if gs is None:
            _, gs = step_grads(next_batch())
        with torch.no_grad():
            for p, g in zip(ps, gs):
                p.sub_(h * g)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    steps_done = step
    out: dict[str, Any] = {
        "steps": torch.tensor(steps_done),
        "time": torch.tensor(steps_done * h, dtype=torch.float64),
        "reached": torch.tensor(reached),
        "diverged": torch.tensor(diverged),
    }
    with torch.no_grad():
        logits, logits_t = net(x), net(split.x_test)
        out["train_loss"] = criterion(logits, y).detach().double()
        out["test_loss"] = criterion(logits_t, split.y_test).detach().double()
        out["train_acc"] = (logits.argmax(-1) == y).double().mean()
        out["test_acc"] = (logits_t.argmax(-1) == split.y_test).double().mean()
    g_full = torch.autograd.grad(criterion(net(x), y), ps)
    out["grad_norm2"] = sum((t.double() ** 2).sum() for t in g_full).detach()
    out["history"] = {
        "step": torch.tensor(rows_step),
        "loss": torch.tensor(rows_loss, dtype=torch.float64),
    }
    if sharpness_every is not None:
        out["sharp_step"] = torch.tensor(sharp_step)
        out["sharpness"] = torch.tensor(sharp_val, dtype=torch.float64)
    out["params"] = {k: p.detach().clone() for k, p in zip(names, ps)}
    return out


def _module_loss(net, criterion, x, y) -> Loss:
    from torch.func import functional_call

    return lambda params: criterion(functional_call(net, dict(params), (x,)), y)


# --------------------------------------------------------------------------- a second network


def cnn1d(
    length: int = 40,
    channels: int = 16,
    classes: int = 10,
    *,
    kernel: int = 5,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.nn.Sequential:
    """A small ReLU 1-D CNN for signals (N × ``length``), seeded (PyTorch's default initialization).

    Two convolutions with ``channels`` filters of width ``kernel``, stride 2 and padding kernel // 2
    (each halves the length), ReLU after each, then a linear head on the flattened feature map:
    ``length → (channels, length/2) → (channels, length/4) → classes``. The global torch RNG is left
    alone. It is the natural model for MNIST-1D (translation-equivariant features), and a second
    architecture for the Part IV effects measured on the MLP.
    """
    _check_count(length, "length", 4)
    _check_count(channels, "channels")
    _check_count(classes, "classes")
    _check_count(kernel, "kernel")
    pad = kernel // 2
    l1 = (length + 2 * pad - kernel) // 2 + 1
    l2 = (l1 + 2 * pad - kernel) // 2 + 1
    nn = torch.nn
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Unflatten(1, (1, length)),
            nn.Conv1d(1, channels, kernel, stride=2, padding=pad),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel, stride=2, padding=pad),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(channels * l2, classes),
        )
    return net.to(dtype=dtype, device=device)


# --------------------------------------------------------------------------- statistics


def outcomes(
    results: Mapping[tuple[str, int], Mapping[str, Any]], name: str, seeds: Sequence[int]
) -> dict[str, Any]:
    """Counts of the runs ``name`` over *all* ``seeds``: ``n``, ``reached``, ``diverged``, ``stalled``.

    Also the Wilson 95% intervals of the divergence and reaching rates (``diverged_ci``,
    ``reached_ci``) and the list ``ok`` of the seeds whose run reached the threshold. A diverged run
    stays in the count: it is an outcome of the configuration, not a run to drop.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("outcomes needs at least one seed")
    reached = [s for s in seeds if bool(results[name, s]["reached"])]
    diverged = [s for s in seeds if bool(results[name, s]["diverged"])]
    n = len(seeds)
    return {
        "n": n,
        "reached": len(reached),
        "diverged": len(diverged),
        "stalled": n - len(reached) - len(diverged),
        "diverged_ci": stats.wilson_interval(len(diverged), n),
        "reached_ci": stats.wilson_interval(len(reached), n),
        "ok": reached,
    }


def gap_fractions(base, treated, target) -> Tensor:
    """Per-pair fraction (treated − base) / (target − base) of a gap that a treatment closes.

    ``base``, ``treated``, ``target`` hold one number per pair (seed, shared initialization):
    0 means the treatment did nothing, 1 that it reached the target.
    """
    b, tr, ta = (torch.as_tensor(v, dtype=torch.float64) for v in (base, treated, target))
    if not b.shape == tr.shape == ta.shape or b.dim() != 1:
        raise ValueError("base, treated and target need one number per pair, of equal lengths")
    return (tr - b) / (ta - b)


def run_grid(
    runs: Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    make_model: Callable[[int], torch.nn.Module],
    criterion: Callable[[Tensor, Tensor], Tensor],
    split,
    *,
    desc: str = "runs",
    progress: bool = True,
    **common: Any,
) -> dict[tuple[str, int], dict[str, Any]]:
    """:func:`train_to_loss` for every run configuration and seed, with one progress bar.

    ``runs`` maps a name to the keyword arguments of one configuration (``lr``, ``batch_size``,
    ``reg_lr``, ...); ``common`` holds those shared by all (``threshold``, ``max_steps``, ...).
    For each seed, every configuration starts from the same initialization
    ``make_model(seed)`` and uses ``seed`` for its batches: runs are *paired* by seed.
    A value of a configuration may be a function of the seed (for instance
    ``sharpness_every=lambda s: 10 if s == 0 else None``). Returns {(name, seed): result}.
    """
    from tqdm.auto import tqdm

    if not runs or not seeds:
        raise ValueError("runs and seeds must not be empty")
    out = {}
    with tqdm(total=len(runs) * len(seeds), desc=desc, disable=not progress) as bar:
        for seed in seeds:
            model = make_model(seed)
            for name, kw in runs.items():
                args = {**common, **{k: (v(seed) if callable(v) else v) for k, v in kw.items()}}
                out[name, seed] = train_to_loss(model, criterion, split, seed=seed, progress=False, **args)
                bar.update(1)
    return out


def paired(
    results: Mapping[tuple[str, int], Mapping[str, Any]],
    treated: str,
    base: str,
    key: str,
    seeds: Sequence[int],
    level: float = 0.95,
) -> dict[str, Tensor]:
    """:func:`ibea_lib.book.stats.t_interval` of the per-seed differences ``key`` (treated − base)."""
    diffs = [float(results[treated, s][key]) - float(results[base, s][key]) for s in seeds]
    return stats.t_interval(diffs, level)
