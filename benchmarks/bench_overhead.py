"""What does the library add on top of bare autograd? Paired timings of the core calls.

    python benchmarks/bench_overhead.py            # about a minute on one CPU thread
    python benchmarks/bench_overhead.py --quick    # smoke run (a few seconds)

Each core call is timed right next to the *same computation written in bare autograd*
(``torch.autograd.grad`` on a ``functional_call`` loss): one pair = the bare call and the
library call, in alternating order from pair to pair. The reported number is the median over
pairs of time(library) / time(bare), so a slow phase of a shared machine hits both calls of a
pair alike. The library side includes everything a user pays for: ``ib.model_loss`` (the
checks, the RNG guard, the buffer handling), the input checks, the fused finiteness check and
the tree handling.

Problems: the 784-1024-256-10 tanh MLP (1.07M parameters), a batch of 256, cross-entropy,
float32, on the CPU with ``torch.set_num_threads(1)`` (the machine is shared: paired ratios
only); and a tiny 10-32-3 MLP (batch 32), where a call costs a few hundred microseconds and the
library's fixed per-call cost (checks, RNG guard, tree handling) shows: there each timing is a
block of ``TINY_BLOCK`` calls, and the table also gives the per-call overhead in microseconds
(library minus bare, median over pairs of blocks). Results: ``benchmarks/results/overhead.md``.

The methods (two tasks = the same network on two different batches):

==================  ==============================================================================
``grad``            ∇L
``hvp``             ∇_θ⟨∇L, sg(v)⟩
``lie_bracket``     ∇_θ(⟨∇L_b, sg(g_a)⟩ − ⟨∇L_a, sg(g_b)⟩)
``sequential_fld``  −g_a − g_b + ∇_θ(⟨∇L_a, u_a⟩ + ⟨∇L_b, u_b⟩), u_a = −(h/2)(g_a + g_b),
                    u_b = (h/2)(g_a − g_b)
``modified_loss``   L + (h/4)‖∇L‖² on the model's own parameters, then ``.backward()``
==================  ==============================================================================
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

import ibea_lib as ib

HERE = pathlib.Path(__file__).resolve().parent
SIZES = (784, 1024, 256, 10)
BATCH = 256
LR = 0.1
TINY = (10, 32, 3)
TINY_BATCH = 32
TINY_BLOCK = 50


def problem(sizes=SIZES, batch=BATCH):
    model = ib.models.mlp(list(sizes), "tanh", seed=0)
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(2, batch, sizes[0], generator=gen)
    ys = torch.randint(0, sizes[-1], (2, batch), generator=gen)
    lib_losses = [ib.model_loss(model, F.cross_entropy, xs[i], ys[i]) for i in range(2)]

    def bare_loss(i):
        return lambda p: F.cross_entropy(functional_call(model, p, (xs[i],)), ys[i])

    return model, ib.params_of(model), lib_losses, [bare_loss(0), bare_loss(1)]


def bare_leaves(params):
    return {k: v.detach().requires_grad_(True) for k, v in params.items()}


def methods(model, params, L, B):
    """name -> (bare(), lib()): the same result computed both ways."""
    v = {k: torch.randn_like(t) for k, t in params.items()}
    names = list(params)
    own = dict(model.named_parameters())

    def bare_grad():
        p = bare_leaves(params)
        return dict(zip(names, torch.autograd.grad(B[0](p), list(p.values()))))

    def bare_hvp():
        p = bare_leaves(params)
        xs = list(p.values())
        g = torch.autograd.grad(B[0](p), xs, create_graph=True)
        s = sum((gi * v[k]).sum() for gi, k in zip(g, names))
        return dict(zip(names, torch.autograd.grad(s, xs)))

    def two_grads(p):
        xs = list(p.values())
        ga = torch.autograd.grad(B[0](p), xs, create_graph=True)
        gb = torch.autograd.grad(B[1](p), xs, create_graph=True)
        return xs, ga, gb

    def bare_bracket():
        xs, ga, gb = two_grads(bare_leaves(params))
        s = sum((b * a.detach()).sum() - (a * b.detach()).sum() for a, b in zip(ga, gb))
        return dict(zip(names, torch.autograd.grad(s, xs)))

    def bare_sequential():
        xs, ga, gb = two_grads(bare_leaves(params))
        s = 0.0
        for a, b in zip(ga, gb):
            a0, b0 = a.detach(), b.detach()
            s = s + (a * (-(LR / 2) * (a0 + b0))).sum() + (b * ((LR / 2) * (a0 - b0))).sum()
        hv = torch.autograd.grad(s, xs)
        return {k: h - a.detach() - b.detach() for k, h, a, b in zip(names, hv, ga, gb)}

    def bare_modified():
        model.zero_grad(set_to_none=True)
        value = B[0](own)
        g = torch.autograd.grad(value, list(own.values()), create_graph=True)
        (value + (LR / 4) * sum((t * t).sum() for t in g)).backward()

    def lib_modified():
        model.zero_grad(set_to_none=True)
        ib.modified_loss(L[0], own, LR).backward()

    return {
        "grad": (bare_grad, lambda: ib.grad(L[0], params)),
        "hvp": (bare_hvp, lambda: ib.hvp(L[0], params, v)),
        "lie_bracket": (bare_bracket, lambda: ib.lie_bracket(L[0], L[1], params)),
        "sequential_fld": (bare_sequential, lambda: ib.sequential_field(L, params, LR)),
        "modified_loss": (bare_modified, lib_modified),
    }


def check_agreement(pairs, model):
    """The two sides compute the same thing (a benchmark of different results means nothing)."""
    for name, (bare, lib) in pairs.items():
        if name == "modified_loss":
            bare()
            ref = {k: p.grad.clone() for k, p in model.named_parameters()}
            lib()
            got = {k: p.grad.clone() for k, p in model.named_parameters()}
            model.zero_grad(set_to_none=True)
        else:
            ref, got = bare(), lib()
        err = float(ib.norm(ib.sub(got, ref)) / ib.norm(ref))
        assert err < 1e-5, f"{name}: library and bare autograd differ (relative error {err:.1e})"


def timed(fn: Callable[[], object]) -> float:
    """CPU time of one call (this process): waiting for a core on a busy machine is not counted."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def paired_ratios(
    bare, lib, pairs: int, warmup: int = 2, diffs: list | None = None
) -> tuple[list[float], float]:
    for _ in range(warmup):
        bare(), lib()
    ratios, bare_times = [], []
    for i in range(pairs):
        if i % 2 == 0:
            tb = timed(bare)
            tl = timed(lib)
        else:
            tl = timed(lib)
            tb = timed(bare)
        ratios.append(tl / tb)
        bare_times.append(tb)
        if diffs is not None:
            diffs.append(tl - tb)
    return ratios, statistics.median(bare_times)


def block(fn: Callable[[], object], n: int = TINY_BLOCK) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            fn()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small network, few pairs (smoke run)")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "overhead.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes, pairs = ((784, 64, 32, 10), 6) if args.quick else (SIZES, args.pairs)
    model, params, L, B = problem(sizes)
    ms = methods(model, params, L, B)
    check_agreement(ms, model)
    load = os.getloadavg()
    rows = []
    for name, (bare, lib) in ms.items():
        ratios, t_bare = paired_ratios(bare, lib, pairs)
        q = statistics.quantiles(ratios, n=4)
        rows.append((name, statistics.median(ratios), q[0], q[2], t_bare))
        print(
            f"{name:15s} library/bare = {rows[-1][1]:.3f} (IQR {q[0]:.3f}-{q[2]:.3f}), "
            f"bare {t_bare * 1e3:.1f} ms"
        )
    tiny_rows = []
    if not args.quick:  # the fixed per-call cost, on a tiny model
        model_t, params_t, L_t, B_t = problem(TINY, TINY_BATCH)
        ms_t = methods(model_t, params_t, L_t, B_t)
        check_agreement(ms_t, model_t)
        for name in ("grad", "hvp", "lie_bracket"):
            bare, lib = ms_t[name]
            diffs: list[float] = []
            ratios, t_bare = paired_ratios(block(bare), block(lib), args.pairs, warmup=1, diffs=diffs)
            q = statistics.quantiles(ratios, n=4)
            over = statistics.median(diffs) / TINY_BLOCK
            tiny_rows.append((name, statistics.median(ratios), q[0], q[2], t_bare / TINY_BLOCK, over))
            print(f"tiny {name:10s} library/bare = {tiny_rows[-1][1]:.3f} (IQR {q[0]:.3f}-{q[2]:.3f}), "
                  f"bare {t_bare / TINY_BLOCK * 1e6:.0f} us, overhead {over * 1e6:.0f} us per call")
    load_after = os.getloadavg()
    lines = [
        "# Overhead of the core calls over bare autograd",
        "",
        f"Generated by `python benchmarks/bench_overhead.py{' --quick' if args.quick else ''}`: MLP "
        f"{'-'.join(map(str, sizes))} (tanh), batch {BATCH}, float32, CPU, torch {torch.__version__}, "
        f"{args.threads} thread(s), {pairs} pairs per call, {platform.machine()}.",
        f"Load average (1 min) {load[0]:.2f} before, {load_after[0]:.2f} after, "
        f"on {os.cpu_count()} cores shared "
        "with other jobs: only the paired ratios are meaningful, not the absolute times.",
        "",
        "| call | library / bare autograd (median of pairs) | interquartile range | bare time (ms) |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{n}` | {r:.3f} | {lo:.3f}-{hi:.3f} | {t * 1e3:.1f} |" for n, r, lo, hi, t in rows]
    if tiny_rows:
        lines += [
            "",
            f"Tiny MLP {'-'.join(map(str, TINY))} (tanh), batch {TINY_BATCH}: each timing is a block of "
            f"{TINY_BLOCK} calls; the overhead is (library − bare) per call, median over pairs of blocks.",
            "",
            "| call | library / bare autograd | interquartile range | bare time per call (µs) "
            "| overhead per call (µs) |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| `{n}` | {r:.3f} | {lo:.3f}-{hi:.3f} | {t * 1e6:.0f} | {o * 1e6:.0f} |"
                  for n, r, lo, hi, t, o in tiny_rows]
    lines += [
        "",
        "Where the overhead of ibea_lib 0.1 went (profiled on this problem): the finiteness checks,",
        "`torch.isfinite(t).all()` per tensor, cost 1.5 ms per gradient of 1.07M parameters (about 12% of",
        "a 13 ms gradient; 0.1 measured grad 1.14x, sequential_field 1.11x). 0.2 checks one sum per tensor",
        "(a NaN or an infinity makes a sum non-finite; only then is every entry examined): 0.06 ms.",
        "The rest of the checks (structure, RNG guard of `model_loss`, attention kernel context) cost",
        "microseconds. `hessian_terms` takes coefficients as (c, w) pairs, so brackets and fields form",
        "no scaled copies (c·w): the library does the tensor operations of the bare version, no more.",
        "",
        "On the tiny model the fixed cost per call matters (the chapters of Parts I–III make thousands of",
        "such calls). Before the changes of issue 17 it was about 120 µs for `grad` (1.65× a bare gradient)",
        "and 300 µs for `hvp` (1.57×), measured the same way in one paired run. Removed since: `fork_rng`",
        "around every model-loss evaluation (the RNG guard now reads the state before and after, and",
        "restores it only when it changed), the finiteness check's tensor stack on the CPU (sums read as",
        "Python floats), torch's `sdpa_kernel` context at every differentiated evaluation (the five flags",
        "are read and set directly), and a walk over the model's modules at every call (read once when the",
        "loss is made). What is left is Python bookkeeping: checks of the structure, shapes and values,",
        "the fresh leaves, the tree handling; `functional_call`, on both sides, costs about as much again.",
        "",
    ]
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
