"""What does a Lie bracket cost? ``ib.lie_bracket`` side by side with the alternatives.

    python benchmarks/bench_bracket.py                 # full run (about 5 minutes on 2 CPU cores)
    python benchmarks/bench_bracket.py --quick         # smoke run (about 30 s)
    python benchmarks/bench_bracket.py --device cuda   # the same on a GPU
    python benchmarks/bench_bracket.py --sizes 784-1024-256-10 784-4096-1536-10   # scaling sizes

Everything is relative to the *baseline*: the two task gradients ∇L_a(θ), ∇L_b(θ) by
``torch.autograd.grad``, for an MLP (tanh) with cross-entropy losses on two different random
batches (task a, task b). The methods, all computing [∇L_a, ∇L_b] = H_b∇L_a − H_a∇L_b
(or, for ``sequential_field``, the modified field of one step per task), are

==================  ==================================================================
``two_grads``       baseline: ∇L_a, ∇L_b (2 backward passes)
``lie_bracket``     ``ib.lie_bracket``: ∇_θ(⟨∇L_b, sg(g_a)⟩ − ⟨∇L_a, sg(g_b)⟩), reverse-over-reverse
``sequential_fld``  ``ib.sequential_field`` for two tasks (same single extra reverse pass)
``jvp_hvp``         g_a = ∇L_a, then two forward-over-reverse HVPs ``torch.func.jvp(grad(L), θ, v)``
``vmap_jvp``        both gradients and both HVPs as one ``torch.func.vmap`` over (batch, tangent)
``finite_diff``     central differences, 6 gradients: H_b g_a ≈ (∇L_b(θ+εg_a) − ∇L_b(θ−εg_a))/(2ε)
==================  ==================================================================

Timing interleaves the methods (round-robin, the order rotated every round, after a warm-up)
and reports the median over rounds of the per-round ratio time(method) / time(two_grads), so
slow phases of a shared machine hit all methods alike. Accuracy is measured against a float64
bracket of the same network and batches. Memory: each (size, method) runs in a fresh
subprocess that reports its peak resident memory (``ru_maxrss``) before and after the method;
the growth is fitted against the parameter count d (a Hessian would need 4·d² bytes).
Results go to ``benchmarks/results/<device>.json`` (and ``.md``) and are printed.
"""

import argparse
import copy
import json
import math
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.func import functional_call

import ibea_lib as ib

HERE = pathlib.Path(__file__).resolve().parent
MAIN_SIZES = (784, 1024, 256, 10)
SCALING_SIZES = (
    (784, 12, 12, 10),
    (784, 128, 64, 10),
    (784, 1024, 256, 10),
    (784, 2048, 768, 10),
    (784, 4096, 1536, 10),
)
QUICK_MAIN_SIZES = (784, 256, 64, 10)
MEMORY_SIZES = ((784, 256, 64, 10), (784, 1024, 256, 10), (784, 2048, 768, 10), (784, 4096, 1536, 10))
QUICK_MEMORY_SIZES = ((784, 64, 32, 10), (784, 256, 64, 10))
MEMORY_METHODS = ("two_grads", "lie_bracket", "sequential_fld", "jvp_hvp", "finite_diff")
LR = 0.1  # learning rate of the sequential field (does not change its cost)

Params = dict[str, Tensor]


# ----------------------------------------------------------------------------- problem


@dataclass
class Problem:
    """An MLP, its parameters and two task losses on two different random batches."""

    model: torch.nn.Module
    params: Params
    loss_a: Callable[[Params], Tensor]
    loss_b: Callable[[Params], Tensor]
    inputs: Tensor  # shape (2, batch, in): the batches of task a and task b
    targets: Tensor  # shape (2, batch)
    criterion: Callable[[Tensor, Tensor], Tensor] = field(default=torch.nn.functional.cross_entropy)

    @property
    def d(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def batched_loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """The loss of one batch as a function of (params, data), for ``torch.func.vmap``."""
        return self.criterion(functional_call(self.model, params, (x,)), y)


def parse_sizes(text: str) -> tuple[int, ...]:
    """'784-1024-256-10' -> (784, 1024, 256, 10)."""
    try:
        sizes = tuple(int(s) for s in text.split("-"))
    except ValueError:
        raise ValueError(f"sizes must look like 784-1024-256-10, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes needs at least an input and an output size >= 1, got {text!r}")
    return sizes


def count_mlp_params(sizes: Sequence[int]) -> int:
    """Weights and biases of the MLP ``sizes[0] → … → sizes[-1]``."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def make_problem(
    sizes: Sequence[int] = MAIN_SIZES,
    batch: int = 256,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Problem:
    """A seeded tanh MLP and two cross-entropy task losses on two random batches (Gaussian inputs)."""
    model = ib.models.mlp(sizes, "tanh", seed=seed, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(2, batch, sizes[0], generator=gen, dtype=dtype).to(device)
    targets = torch.randint(0, sizes[-1], (2, batch), generator=gen).to(device)
    crit = torch.nn.functional.cross_entropy
    return Problem(
        model=model,
        params=ib.params_of(model),
        loss_a=ib.model_loss(model, crit, inputs[0], targets[0]),
        loss_b=ib.model_loss(model, crit, inputs[1], targets[1]),
        inputs=inputs,
        targets=targets,
    )


def to_dtype(problem: Problem, dtype: torch.dtype) -> Problem:
    """The same network, weights and batches in another dtype (for a float64 reference)."""
    model = copy.deepcopy(problem.model).to(dtype)
    inputs = problem.inputs.to(dtype)
    crit = problem.criterion
    return Problem(
        model=model,
        params={k: v.to(dtype) for k, v in problem.params.items()},
        loss_a=ib.model_loss(model, crit, inputs[0], problem.targets[0]),
        loss_b=ib.model_loss(model, crit, inputs[1], problem.targets[1]),
        inputs=inputs,
        targets=problem.targets,
    )


# ----------------------------------------------------------------------------- methods


def _leaves(params: Params) -> Params:
    return {k: v.detach().requires_grad_(True) for k, v in params.items()}


def _autograd(loss: Callable[[Params], Tensor], params: Params) -> Params:
    """∇L(θ) by one ``torch.autograd.grad`` call."""
    leaves = _leaves(params)
    return dict(zip(leaves, torch.autograd.grad(loss(leaves), list(leaves.values())), strict=True))


def two_grads(p: Problem) -> tuple[Params, Params]:
    """Baseline: the two task gradients (∇L_a, ∇L_b), plain autograd."""
    return _autograd(p.loss_a, p.params), _autograd(p.loss_b, p.params)


def lie_bracket(p: Problem) -> Params:
    """``ib.lie_bracket``: one reverse-over-reverse pass on top of the two gradients."""
    return ib.lie_bracket(p.loss_a, p.loss_b, p.params)


def sequential_fld(p: Problem, lr: float = LR) -> Params:
    """``ib.sequential_field`` for the two tasks (a then b)."""
    return ib.sequential_field([p.loss_a, p.loss_b], p.params, lr)


def jvp_hvp(p: Problem) -> Params:
    """Forward-over-reverse: g_a = ∇L_a; (g_b, H_b g_a) = jvp(∇L_b, θ, g_a); H_a g_b = jvp(∇L_a, θ, g_b)."""
    grad_a, grad_b = torch.func.grad(p.loss_a), torch.func.grad(p.loss_b)
    ga = grad_a(p.params)
    gb, hb_ga = torch.func.jvp(grad_b, (p.params,), (ga,))
    _, ha_gb = torch.func.jvp(grad_a, (p.params,), (gb,))
    return {k: hb_ga[k] - ha_gb[k] for k in p.params}


def vmap_jvp(p: Problem) -> Params:
    """Both gradients in one vmapped ``grad``, then both HVPs in one vmapped ``jvp`` over (batch, tangent)."""
    grad_fn = torch.func.grad(p.batched_loss)  # (params, x, y) -> ∇ of that batch's loss
    gs = torch.func.vmap(grad_fn, in_dims=(None, 0, 0))(p.params, p.inputs, p.targets)  # [g_a, g_b]

    def hvp(x: Tensor, y: Tensor, tangent: Params) -> Params:
        return torch.func.jvp(lambda q: grad_fn(q, x, y), (p.params,), (tangent,))[1]

    swap = torch.tensor([1, 0], device=p.inputs.device)  # pair batch b with g_a, batch a with g_b
    hv = torch.func.vmap(hvp)(p.inputs[swap], p.targets[swap], gs)  # [H_b g_a, H_a g_b]
    return {k: hv[k][0] - hv[k][1] for k in p.params}


def fd_epsilon(params: Params, v: Params, scale: float = 1.0) -> float:
    """Step ε of a central difference along v: ε = scale · ε_mach^(1/3) · max(‖θ‖, 1) / ‖v‖.

    The truncation error of a central difference is O(ε²) and the rounding error
    O(ε_mach · ‖θ‖ / ε) (θ + εv is rounded), so the best relative step is about ε_mach^(1/3)
    of ‖θ‖: about 5e-3 in float32 and 6e-6 in float64.
    """
    dtype = next(iter(params.values())).dtype
    vnorm = float(ib.norm(v))
    if vnorm == 0:
        raise ValueError("the direction v is zero; a finite difference along it is undefined")
    return scale * torch.finfo(dtype).eps ** (1 / 3) * max(float(ib.norm(params)), 1.0) / vnorm


def finite_diff(p: Problem, scale: float = 1.0) -> Params:
    """Central differences of gradients (6 gradient evaluations, one per call of ``_autograd``).

    H_b g_a ≈ (∇L_b(θ + ε_a g_a) − ∇L_b(θ − ε_a g_a)) / (2ε_a), and H_a g_b likewise.
    """
    ga, gb = two_grads(p)
    ea, eb = fd_epsilon(p.params, ga, scale), fd_epsilon(p.params, gb, scale)
    th = p.params
    plus_a = _autograd(p.loss_b, {k: th[k] + ea * ga[k] for k in th})
    minus_a = _autograd(p.loss_b, {k: th[k] - ea * ga[k] for k in th})
    plus_b = _autograd(p.loss_a, {k: th[k] + eb * gb[k] for k in th})
    minus_b = _autograd(p.loss_a, {k: th[k] - eb * gb[k] for k in th})
    return {k: (plus_a[k] - minus_a[k]) / (2 * ea) - (plus_b[k] - minus_b[k]) / (2 * eb) for k in th}


METHODS: dict[str, Callable[[Problem], object]] = {
    "two_grads": two_grads,
    "lie_bracket": lie_bracket,
    "sequential_fld": sequential_fld,
    "jvp_hvp": jvp_hvp,
    "vmap_jvp": vmap_jvp,
    "finite_diff": finite_diff,
}
BRACKET_METHODS = ("lie_bracket", "jvp_hvp", "vmap_jvp", "finite_diff")


def sequential_reference(p: Problem, lr: float = LR) -> Params:
    """−(g_a + g_b) − (h/2)(H_a g_a + H_b g_b) + (h/2)[∇L_a, ∇L_b] with separate ``ib.hvp`` calls."""
    ga, gb = ib.grad(p.loss_a, p.params), ib.grad(p.loss_b, p.params)
    ha_ga, hb_gb = ib.hvp(p.loss_a, p.params, ga), ib.hvp(p.loss_b, p.params, gb)
    br = ib.lie_bracket(p.loss_a, p.loss_b, p.params)
    return {k: -(ga[k] + gb[k]) - lr / 2 * (ha_ga[k] + hb_gb[k]) + lr / 2 * br[k] for k in p.params}


def rel_error(x: Params, ref: Params) -> float:
    """‖x − ref‖ / ‖ref‖ (computed in float64)."""
    num = math.sqrt(sum(float(((x[k].double() - ref[k].double()) ** 2).sum()) for k in ref))
    den = math.sqrt(sum(float((ref[k].double() ** 2).sum()) for k in ref))
    return num / den


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_methods(
    problem: Problem,
    methods: Sequence[str] = tuple(METHODS),
    rounds: int = 10,
    warmup: int = 1,
    baseline: str = "two_grads",
) -> dict[str, dict[str, float]]:
    """Interleaved timing: every round runs each method once (order rotated each round).

    Returns, per method, the median and the minimum time (s), the median over rounds of the
    per-round ratio time(method)/time(baseline) with its 25% and 75% quantiles, and the ratio
    of the minimum times (``ratio_min``: the least disturbed runs, robust on a busy machine).
    """
    names = list(dict.fromkeys([baseline, *methods]))
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    device = problem.inputs.device
    for _ in range(warmup):
        for n in names:
            METHODS[n](problem)
    _sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            METHODS[n](problem)
            _sync(device)
            times[n].append(time.perf_counter() - t0)
    out = {}
    for n in names:
        ratios = [t / b for t, b in zip(times[n], times[baseline], strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out[n] = {
            "median_s": statistics.median(times[n]),
            "min_s": min(times[n]),
            "ratio_min": min(times[n]) / min(times[baseline]),
            "ratio": statistics.median(ratios),
            "ratio_q25": q[0],
            "ratio_q75": q[2],
        }
    return out


# ----------------------------------------------------------------------------- accuracy


def accuracy(problem: Problem, fd_scales: Sequence[float] = (0.01, 0.1, 1.0, 10.0)) -> dict[str, object]:
    """Relative errors of each bracket (in the problem's dtype) vs float64 and vs ``ib.lie_bracket``.

    Also the sequential field vs an assembly from separate HVPs, and the finite-difference error
    for several multiples of the default step (``fd_scales``; 1.0 is the default rule).
    """
    ref64 = lie_bracket(to_dtype(problem, torch.float64))
    lib = lie_bracket(problem)
    out: dict[str, object] = {"vs_float64": {}, "vs_lie_bracket": {}}
    for n in BRACKET_METHODS:
        value = lib if n == "lie_bracket" else METHODS[n](problem)
        out["vs_float64"][n] = rel_error(value, ref64)
        out["vs_lie_bracket"][n] = rel_error(value, lib)
    out["sequential_fld_vs_hvps"] = rel_error(sequential_fld(problem), sequential_reference(problem))
    out["fd_scan"] = {f"{s:g}": rel_error(finite_diff(problem, s), ref64) for s in fd_scales}
    ga, _ = two_grads(problem)
    out["fd_eps_a"] = fd_epsilon(problem.params, ga)
    out["param_norm"] = float(ib.norm(problem.params))
    return out


# ----------------------------------------------------------------------------- memory


def _proc_status_bytes(field: str) -> int | None:
    """``VmRSS`` (current) or ``VmHWM`` (peak) resident memory from /proc/self/status, in bytes."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status_bytes("VmHWM") is not None


def _max_rss_bytes() -> int:
    """Peak resident memory of this process so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def memory_probe(
    sizes: Sequence[int], method: str, batch: int = 256, device: str = "cpu", repeats: int = 2
) -> dict[str, int]:
    """Extra peak memory (bytes) of ``method`` on top of the problem itself, in this process.

    On CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call.
    On Linux: the peak-RSS counter is reset after the set-up, and the extra memory is the peak
    during the calls minus the resident memory before them. Elsewhere: the growth of
    ``ru_maxrss``, which only sees the method if it goes above the set-up's own peak. Freed
    memory that the allocator keeps is reused, so run each measurement in a fresh process
    (:func:`measure_memory` does).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    problem = make_problem(sizes, batch, device=device)
    dev = problem.inputs.device
    problem.loss_a(problem.params)  # first forward pass: lazy allocations that are not the method's
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        for _ in range(repeats):
            METHODS[method](problem)
        torch.cuda.synchronize(dev)
        return {"d": problem.d, "extra_bytes": torch.cuda.max_memory_allocated(dev) - before, "how": "cuda"}
    if _reset_peak_rss():
        before = _proc_status_bytes("VmRSS")
        for _ in range(repeats):
            METHODS[method](problem)
        return {"d": problem.d, "extra_bytes": _proc_status_bytes("VmHWM") - before, "how": "VmHWM"}
    before = _max_rss_bytes()
    for _ in range(repeats):
        METHODS[method](problem)
    return {"d": problem.d, "extra_bytes": _max_rss_bytes() - before, "how": "ru_maxrss"}


def measure_memory(
    sizes_list: Sequence[Sequence[int]],
    methods: Sequence[str] = MEMORY_METHODS,
    batch: int = 256,
    device: str = "cpu",
    threads: int = 2,
) -> dict[str, dict[str, object]]:
    """Extra peak memory of each method for each network size, and a linear fit against d.

    Each CPU measurement runs in a fresh subprocess. The fit extra = a + b·d gives b in bytes per
    parameter; ``vectors`` = b / bytes-per-float32 is the number of parameter-sized float32
    vectors the method keeps alive at its peak (a Hessian would instead need d of them).
    """
    out: dict[str, dict[str, object]] = {}
    for method in methods:
        points = []
        for sizes in sizes_list:
            if torch.device(device).type == "cuda":
                points.append(memory_probe(sizes, method, batch, device))
                continue
            cmd = [
                sys.executable,
                str(pathlib.Path(__file__).resolve()),
                "--probe-memory",
                "-".join(map(str, sizes)),
                method,
                "--batch",
                str(batch),
                "--threads",
                str(threads),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"memory probe {sizes} {method} failed:\n{done.stderr[-2000:]}")
            points.append(json.loads(done.stdout.strip().splitlines()[-1]))
        fit = linear_fit([p["d"] for p in points], [p["extra_bytes"] for p in points])
        out[method] = {"points": points, **fit}
        out[method]["vectors"] = out[method]["slope"] / 4
    return out


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line y = intercept + slope·x, with R²."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("linear_fit needs two equally long sequences of at least 2 numbers")
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sxx
    intercept = my - slope * mx
    ss_res = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y, strict=True))
    ss_tot = sum((b - my) ** 2 for b in y)
    return {"slope": slope, "intercept": intercept, "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0}


# ----------------------------------------------------------------------------- whole run


def _rounds_for(problem: Problem, budget_s: float, n_methods: int, lo: int = 3, hi: int = 20) -> int:
    """How many interleaved rounds fit in ``budget_s`` (a method costs about 3 baselines)."""
    two_grads(problem)  # the first call is a warm-up
    t0 = time.perf_counter()
    two_grads(problem)
    _sync(problem.inputs.device)
    per_round = (time.perf_counter() - t0) * 3 * n_methods
    return int(min(hi, max(lo, budget_s // max(per_round, 1e-9))))


def run_benchmark(
    *,
    quick: bool = False,
    threads: int = 2,
    device: str = "cpu",
    main_sizes: Sequence[int] | None = None,
    scaling_sizes: Sequence[Sequence[int]] | None = None,
    memory_sizes: Sequence[Sequence[int]] | None = None,
    memory_methods: Sequence[str] | None = None,
    batch: int = 256,
    progress: bool = True,
) -> dict[str, object]:
    """The whole benchmark: main timing table, accuracy, scaling with d and memory growth."""
    torch.set_num_threads(threads)
    say = print if progress else (lambda *a, **k: None)
    if main_sizes is None:
        main_sizes = QUICK_MAIN_SIZES if quick else MAIN_SIZES
    if scaling_sizes is None:
        scaling_sizes = SCALING_SIZES[:2] if quick else SCALING_SIZES
    if memory_sizes is None:
        memory_sizes = QUICK_MEMORY_SIZES if quick else MEMORY_SIZES
    started = time.time()
    result: dict[str, object] = {
        "config": {
            "device": device,
            "threads": threads,
            "batch": batch,
            "dtype": "float32",
            "quick": quick,
            "main_sizes": list(main_sizes),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average_start": list(_loadavg()),
        }
    }
    problem = make_problem(main_sizes, batch, device=device)
    result["config"]["main_params"] = problem.d
    rounds = 5 if quick else 20
    say(f"[1/4] timing all methods on {'-'.join(map(str, main_sizes))} (d = {problem.d:,}), {rounds} rounds")
    result["main"] = time_methods(problem, tuple(METHODS), rounds=rounds, warmup=1)
    say("[2/4] accuracy against a float64 bracket")
    result["accuracy"] = accuracy(problem, (1.0,) if quick else (0.01, 0.1, 1.0, 10.0, 100.0))
    scaling_methods = ("lie_bracket", "sequential_fld", "jvp_hvp", "finite_diff")
    result["scaling"] = []
    for sizes in scaling_sizes:
        p = make_problem(sizes, batch, device=device)
        r = _rounds_for(
            p, 4.0 if quick else 25.0, len(scaling_methods) + 1, lo=3 if quick else 5, hi=5 if quick else 15
        )
        say(f"[3/4] scaling: {'-'.join(map(str, sizes))} (d = {p.d:,}), {r} rounds")
        timing = time_methods(p, scaling_methods, rounds=r, warmup=1)
        result["scaling"].append({"sizes": list(sizes), "d": p.d, "rounds": r, "timing": timing})
        del p
    if memory_methods is None:
        memory_methods = ("lie_bracket",) if quick else MEMORY_METHODS
    say(f"[4/4] memory: {len(memory_sizes)} sizes x {len(memory_methods)} methods, fresh processes")
    result["memory"] = measure_memory(memory_sizes, memory_methods, batch, device, threads)
    result["config"]["load_average_end"] = list(_loadavg())
    result["config"]["seconds"] = round(time.time() - started, 1)
    return result


def _loadavg() -> tuple[float, float, float]:
    try:
        return tuple(round(x, 2) for x in __import__("os").getloadavg())
    except OSError:
        return (float("nan"),) * 3


# ----------------------------------------------------------------------------- report


def report(result: dict[str, object]) -> str:
    """The results as markdown tables."""
    c = result["config"]
    lines = [
        f"# Lie bracket cost ({c['device']}, {c['threads']} threads, {c['dtype']}, batch {c['batch']})",
        "",
        f"{c['date']}, torch {c['torch']}, {c['processor']}; load average {c['load_average_start']} "
        f"at the start, {c.get('load_average_end')} at the end; {c.get('seconds')} s.",
        "",
        f"## Main network {'-'.join(map(str, c['main_sizes']))} (d = {c['main_params']:,})",
        "",
        "| method | median time (ms) | ratio to two gradients (median) | quartiles | ratio of fastest runs "
        "| rel. error vs float64 | rel. error vs ib.lie_bracket |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    acc = result["accuracy"]
    for n, t in result["main"].items():
        e64 = acc["vs_float64"].get(n)
        elib = acc["vs_lie_bracket"].get(n)
        lines.append(
            f"| {n} | {1e3 * t['median_s']:.1f} | {t['ratio']:.2f} "
            f"| {t['ratio_q25']:.2f}–{t['ratio_q75']:.2f} | {t['ratio_min']:.2f} "
            f"| {'' if e64 is None else f'{e64:.1e}'} | {'' if elib is None else f'{elib:.1e}'} |"
        )
    lines += [
        "",
        f"sequential_fld vs assembly from separate HVPs: rel. error {acc['sequential_fld_vs_hvps']:.1e}.",
        f"Finite differences, ‖θ‖ = {acc['param_norm']:.3g}, ε_a = {acc['fd_eps_a']:.3g}; "
        "rel. error vs float64 for multiples of the default step: "
        + ", ".join(f"×{s}: {e:.1e}" for s, e in acc["fd_scan"].items()),
        "",
        "## Scaling with the number of parameters (ratio to two gradients: median, fastest runs)",
        "",
        "| network | d | two grads (ms) | " + " | ".join(result["scaling"][0]["timing"]) + " |",
        "| --- | ---: | ---: |" + " ---: |" * len(result["scaling"][0]["timing"]),
    ]
    for s in result["scaling"]:
        t = s["timing"]
        lines.append(
            f"| {'-'.join(map(str, s['sizes']))} | {s['d']:,} | {1e3 * t['two_grads']['median_s']:.1f} | "
            + " | ".join(f"{v['ratio']:.2f}, {v['ratio_min']:.2f}" for v in t.values())
            + " |"
        )
    lines += [
        "",
        "## Extra peak memory (MB) and linear fit against d",
        "",
        "| method | "
        + " | ".join(f"d = {p['d']:,}" for p in next(iter(result["memory"].values()))["points"])
        + " | bytes / parameter | float32 vectors | R² |",
        "| --- |" + " ---: |" * (len(next(iter(result["memory"].values()))["points"]) + 3),
    ]
    for n, m in result["memory"].items():
        lines.append(
            f"| {n} | "
            + " | ".join(f"{p['extra_bytes'] / 1e6:.0f}" for p in m["points"])
            + f" | {m['slope']:.1f} | {m['vectors']:.1f} | {m['r2']:.3f} |"
        )
    d = c["main_params"]
    lines += ["", f"(A dense float32 Hessian of the main network would take {4 * d * d / 1e12:.1f} TB.)", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, object] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about 30 s)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch", type=int, default=256, help="batch size of each task (default 256)")
    parser.add_argument(
        "--main", default=None, help="main network (default 784-1024-256-10; with --quick 784-256-64-10)"
    )
    parser.add_argument("--sizes", nargs="+", default=None, help="networks of the scaling table")
    parser.add_argument("--memory-sizes", nargs="+", default=None, help="networks of the memory fit")
    parser.add_argument("--memory-methods", nargs="+", default=None, help="methods of the memory fit")
    parser.add_argument("--out", default=None, help="output JSON (default benchmarks/results/<device>.json)")
    parser.add_argument("--probe-memory", nargs=2, metavar=("SIZES", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe_memory:
        print(json.dumps(memory_probe(parse_sizes(args.probe_memory[0]), args.probe_memory[1], args.batch)))
        return None
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch.cuda.is_available() is False")
    result = run_benchmark(
        quick=args.quick,
        threads=args.threads,
        device=args.device,
        main_sizes=None if args.main is None else parse_sizes(args.main),
        scaling_sizes=None if args.sizes is None else [parse_sizes(s) for s in args.sizes],
        memory_sizes=None if args.memory_sizes is None else [parse_sizes(s) for s in args.memory_sizes],
        memory_methods=args.memory_methods,
        batch=args.batch,
    )
    text = report(result)
    print("\n" + text)
    name = torch.device(args.device).type + ("_quick" if args.quick else "")
    out = pathlib.Path(args.out) if args.out else HERE / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(text)
    print(f"written: {out} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
