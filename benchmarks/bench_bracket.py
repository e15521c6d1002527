"""What a Lie bracket [∇L_a, ∇L_b] = H_b ∇L_a − H_a ∇L_b costs: ibea_lib against the peers, in one run.

    python benchmarks/bench_bracket.py                  # CPU, 2 threads -> results/cpu.json and cpu.md
    python benchmarks/bench_bracket.py --quick          # tiny networks, a smoke run (seconds)
    python benchmarks/bench_bracket.py --device cuda    # on a GPU -> results/cuda.json and cuda.md

Methods (each computes the bracket of two cross-entropy tasks on two different batches, except
``ib.sequential_field``, the sequential modified field of the two tasks):

* ``two_grads``: the baseline, ∇L_a and ∇L_b with ``torch.autograd.grad``;
* ``ib.lie_bracket``: the library (the factored Gram path on MLPs, see ``ibea_lib.factored``;
  the generic double backward elsewhere); ``ib.generic``: the library with the factored path off;
* ``autograd``: bare reverse-over-reverse, ∇_θ(⟨∇L_b, sg(g_a)⟩ − ⟨∇L_a, sg(g_b)⟩);
* ``func.vjp``: ``torch.func.vjp`` of ``torch.func.grad`` (the HVPs as vjps of the gradients);
  ``func.jvp``: forward-over-reverse ``torch.func.jvp`` of ``torch.func.grad``;
* ``pyhessian``, ``backpack``, ``curvlinops``: the HVPs of these libraries (``hessian_vector_product``
  of PyHessian and of BackPACK's hessianfree module with the gradients passed in,
  ``HessianLinearOperator @ v`` of curvlinops), skipped when the package is not installed;
* ``finite_diff``: central differences of gradients (6 gradients), ε = ε_mach^(1/3)·max(‖θ‖,1)/‖v‖;
* ``compiled``: ``torch.compile(fullgraph=True)`` of the ``func.vjp`` bracket (compile time excluded,
  reported apart; only where ``--compile`` lists the problem).

Timing is *paired*: in every round each method runs right after a ``two_grads`` call, and the
table gives the median over rounds of the per-pair ratio time(method)/time(two_grads), with its
quartiles; a busy machine slows both calls of a pair alike. Accuracy: the relative error
‖x − ref‖/‖ref‖ of each method in float32 and in float64 against the float64 bare-autograd bracket
(the float64 column of ``autograd`` is the reference itself). Memory: the peak resident memory
during one call above the memory before it (Linux, ``/proc/self/clear_refs``, glibc told to give
large blocks back at once), divided by the number of parameters: bytes per parameter (a float32
vector is 4); on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ibea_lib as ib  # noqa: E402
from ibea_lib import factored  # noqa: E402

CE = nn.functional.cross_entropy


# -- problems -------------------------------------------------------------------------------------
class Block(nn.Module):
    """A transformer encoder block (no dropout) and a linear head on the mean over the sequence."""

    def __init__(self, width=128, heads=4, ff=512, classes=10):
        super().__init__()
        self.block = nn.TransformerEncoderLayer(width, heads, ff, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.block(x).mean(1))


def build_model(kind: str, spec, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if kind == "mlp":
            return ib.models.mlp(list(spec), seed=seed)
        if kind == "cnn":
            c1, c2, length = spec
            return nn.Sequential(nn.Conv1d(1, c1, 5, padding=2), nn.Tanh(), nn.Conv1d(c1, c2, 5, padding=2),
                                 nn.Tanh(), nn.Flatten(), nn.Linear(c2 * length, 10))
        if kind == "transformer":
            width, heads, ff, _ = spec
            return Block(width, heads, ff).eval()
    raise ValueError(f"unknown kind {kind!r}")


def input_shape(kind: str, spec) -> tuple:
    if kind == "mlp":
        return (spec[0],)
    if kind == "cnn":
        return (1, spec[2])
    return (spec[3], spec[0])  # (sequence, width)


@dataclass
class Problem:
    name: str
    kind: str
    model: nn.Module
    params: dict
    inputs: tuple
    targets: tuple
    d: int = 0
    la: object = None
    lb: object = None
    extra: dict = field(default_factory=dict)

    @property
    def dtype(self):
        return next(iter(self.params.values())).dtype


def make_problem(name, kind, spec, batch, *, dtype=torch.float32, device="cpu", seed=0) -> Problem:
    model = build_model(kind, spec, seed).to(dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed + 1)
    xs = tuple(torch.randn(batch, *input_shape(kind, spec), generator=gen).to(dtype=dtype, device=device)
               for _ in range(2))
    ys = tuple(torch.randint(0, 10, (batch,), generator=gen).to(device) for _ in range(2))
    params = ib.params_of(model)
    p = Problem(name, kind, model, params, xs, ys, d=sum(t.numel() for t in params.values()))
    p.la, p.lb = (ib.model_loss(model, CE, x, y) for x, y in zip(xs, ys))
    return p


def kernel(problem):
    """The SDPA math kernel for attention (the only one with a double backward on every device)."""
    if problem.kind == "transformer":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


# -- methods (each returns the bracket as one flat vector, or None for the baseline) ---------------
def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _leaves(p):
    return {k: t.detach().requires_grad_(True) for k, t in p.params.items()}


def two_grads(p):
    q = _leaves(p)
    xs = list(q.values())
    torch.autograd.grad(p.la(q), xs)
    torch.autograd.grad(p.lb(q), xs)


def ib_lie_bracket(p):
    return ib.flatten(ib.lie_bracket(p.la, p.lb, p.params))


def ib_generic(p):
    with factored.disabled():
        return ib.flatten(ib.lie_bracket(p.la, p.lb, p.params))


def ib_sequential_field(p):
    return ib.flatten(ib.sequential_field([p.la, p.lb], p.params, 0.1))


def autograd_bracket(p):
    q = _leaves(p)
    xs = list(q.values())
    ga = torch.autograd.grad(p.la(q), xs, create_graph=True)
    gb = torch.autograd.grad(p.lb(q), xs, create_graph=True)
    s = sum((b * a.detach()).sum() - (a * b.detach()).sum() for a, b in zip(ga, gb))
    return _flat(torch.autograd.grad(s, xs))


def _func_losses(p):
    from torch.func import functional_call

    def make(x, y):
        return lambda q: CE(functional_call(p.model, q, (x,)), y)

    return [make(x, y) for x, y in zip(p.inputs, p.targets)]


def func_vjp(p, params=None):
    fa, fb = _func_losses(p)
    params = p.params if params is None else params
    ga, vjp_a = torch.func.vjp(torch.func.grad(fa), params)
    gb, vjp_b = torch.func.vjp(torch.func.grad(fb), params)
    (hb_ga,), (ha_gb,) = vjp_b(ga), vjp_a(gb)
    return _flat([hb_ga[k] - ha_gb[k] for k in params])


def func_jvp(p):
    fa, fb = _func_losses(p)
    ga, gb = torch.func.grad(fa)(p.params), torch.func.grad(fb)(p.params)
    hb_ga = torch.func.jvp(torch.func.grad(fb), (p.params,), (ga,))[1]
    ha_gb = torch.func.jvp(torch.func.grad(fa), (p.params,), (gb,))[1]
    return _flat([hb_ga[k] - ha_gb[k] for k in p.params])


def finite_diff(p):
    """Central differences: H v ≈ (∇L(θ + εv) − ∇L(θ − εv)) / 2ε, with the rule's ε per direction."""
    ga, gb = ib.grad(p.la, p.params), ib.grad(p.lb, p.params)
    scale = max(float(ib.norm(p.params)), 1.0) * torch.finfo(p.dtype).eps ** (1 / 3)

    def hv(loss, v):
        eps = scale / float(ib.norm(v))
        plus = ib.grad(loss, ib.add(p.params, v, alpha=eps))
        minus = ib.grad(loss, ib.add(p.params, v, alpha=-eps))
        return ib.scale(ib.sub(plus, minus), 1 / (2 * eps))

    return ib.flatten(ib.sub(hv(p.lb, ga), hv(p.la, gb)))


def pyhessian_bracket(p):
    from pyhessian import hessian
    from pyhessian.utils import hessian_vector_product

    objs = []
    for x, y in zip(p.inputs, p.targets):
        for t in p.model.parameters():
            t.grad = None  # PyHessian reads .grad: start each task from zero
        objs.append(hessian(p.model, CE, data=(x, y), cuda=p.params[next(iter(p.params))].is_cuda))
    ha, hb = objs
    ga = [g.detach() for g in ha.gradsH]
    gb = [g.detach() for g in hb.gradsH]
    out = _flat([u - w for u, w in zip(hessian_vector_product(hb.gradsH, hb.params, ga),
                                          hessian_vector_product(ha.gradsH, ha.params, gb))])
    for t in p.model.parameters():
        t.grad = None
    return out


def backpack_bracket(p):
    from backpack.hessianfree.hvp import hessian_vector_product

    params = list(p.model.parameters())
    la = CE(p.model(p.inputs[0]), p.targets[0])
    lb = CE(p.model(p.inputs[1]), p.targets[1])
    ga = torch.autograd.grad(la, params, create_graph=True)
    gb = torch.autograd.grad(lb, params, create_graph=True)
    hb_ga = hessian_vector_product(lb, params, [g.detach() for g in ga], grad_params=gb)
    ha_gb = hessian_vector_product(la, params, [g.detach() for g in gb], grad_params=ga)
    return _flat([u - w for u, w in zip(hb_ga, ha_gb)])


def curvlinops_bracket(p):
    from curvlinops import HessianLinearOperator

    params = list(p.model.parameters())
    ops, grads = [], []
    for x, y in zip(p.inputs, p.targets):
        ops.append(HessianLinearOperator(p.model, nn.CrossEntropyLoss(), params, [(x, y)],
                                         check_deterministic=False))
        grads.append(_flat(torch.autograd.grad(CE(p.model(x), y), params)))
    return ops[1] @ grads[0] - ops[0] @ grads[1]


_COMPILED = {}


def compiled(p):
    key = id(p)
    if key not in _COMPILED:
        t0 = time.perf_counter()
        fn = torch.compile(lambda q: func_vjp(p, q), fullgraph=True)
        fn(p.params)
        p.extra["compile_s"] = time.perf_counter() - t0
        _COMPILED[key] = fn
    return _COMPILED[key](p.params)


METHODS = {
    "two_grads": two_grads,
    "ib.lie_bracket": ib_lie_bracket,
    "ib.sequential_field": ib_sequential_field,
    "ib.generic": ib_generic,
    "autograd": autograd_bracket,
    "func.vjp": func_vjp,
    "func.jvp": func_jvp,
    "pyhessian": pyhessian_bracket,
    "backpack": backpack_bracket,
    "curvlinops": curvlinops_bracket,
    "finite_diff": finite_diff,
    "compiled": compiled,
}
PEERS = {"pyhessian": "pyhessian", "backpack": "backpack", "curvlinops": "curvlinops"}
SCALING = ("two_grads", "ib.lie_bracket", "ib.sequential_field", "ib.generic", "autograd", "func.vjp")


def available(name: str) -> bool:
    if name not in PEERS:
        return True
    try:
        __import__(PEERS[name])
        return True
    except Exception:  # not installed, or installed against another torch
        return False


# -- measurements ---------------------------------------------------------------------------------
def _malloc_release():
    """Make glibc return large freed blocks at once, so that resident memory tracks live tensors."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: fixed, 64 KiB
        libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def _rss_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name):
                return int(line.split()[1])
    return 0


def peak_memory(fn, p) -> tuple[object, float]:
    """(result, extra peak bytes of one call)."""
    gc.collect()
    if p.params[next(iter(p.params))].is_cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn(p)
        torch.cuda.synchronize()
        return out, float(torch.cuda.max_memory_allocated() - base)
    if not os.path.exists("/proc/self/clear_refs"):
        return fn(p), float("nan")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _rss_kb("VmRSS:")
    out = fn(p)
    return out, 1024.0 * (_rss_kb("VmHWM:") - base)


def _sync(p):
    if p.params[next(iter(p.params))].is_cuda:
        torch.cuda.synchronize()


CLOCK = [time.perf_counter]
"""The timer of the pairs: wall time, or with ``--clock process`` this process's CPU time (on a
shared machine with one thread per process, waiting for a core is then not counted)."""


def paired_times(p, names, rounds) -> dict:
    """For every round and method: t(two_grads) then t(method); per-pair ratios."""
    pairs = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            _sync(p)
            t0 = CLOCK[0]()
            two_grads(p)
            _sync(p)
            t1 = CLOCK[0]()
            METHODS[n](p)
            _sync(p)
            t2 = CLOCK[0]()
            pairs[n].append((t1 - t0, t2 - t1))
    out = {}
    for n, ts in pairs.items():
        ratios = sorted(m / b for b, m in ts)
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out[n] = {"ratio": statistics.median(ratios), "ratio_q25": q[0], "ratio_q75": q[2],
                  "median_s": statistics.median(m for _, m in ts),
                  "base_s": statistics.median(b for b, _ in ts), "pairs": len(ts)}
    return out


def _load():
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def rel_error(x, ref) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


def run_problem(name, kind, spec, batch, names, rounds, *, device, with_accuracy=True, log=print):
    names = [n for n in names if available(n)]
    load0 = _load()
    p32 = make_problem(name, kind, spec, batch, device=device)
    result = {"name": name, "kind": kind, "spec": list(spec), "batch": batch, "d": p32.d,
              "factored": factored.applies([p32.la, p32.lb], p32.params)}
    with kernel(p32):
        outs, memory = {}, {}
        for n in names:
            outs[n] = METHODS[n](p32)  # warm-up (and the compile of `compiled`); its result is kept
            _, extra = peak_memory(METHODS[n], p32)
            memory[n] = extra / p32.d
        if with_accuracy:
            p64 = make_problem(name, kind, spec, batch, dtype=torch.float64, device=device)
            ref = autograd_bracket(p64)
            with factored.disabled():
                ref_seq = ib.flatten(ib.sequential_field([p64.la, p64.lb], p64.params, 0.1))
            acc = {}
            for n in names:
                if n == "two_grads":
                    continue
                r = ref_seq if n == "ib.sequential_field" else ref
                out64 = None if n in ("autograd", "compiled") else METHODS[n](p64)
                acc[n] = {"float32": rel_error(outs[n], r),
                          "float64": None if out64 is None else rel_error(out64, r)}
            result["accuracy"] = acc
            del p64
        log(f"  {name}: d = {p32.d:,}, timing {len(names)} methods x {rounds} rounds")
        result["timing"] = paired_times(p32, names, rounds)
    result["bytes_per_param"] = memory
    result["load_average"] = [load0, _load()]
    if "compile_s" in p32.extra:
        result["compile_s"] = p32.extra["compile_s"]
    return result


# -- the run and the report -----------------------------------------------------------------------
FULL = [  # name, kind, spec, batch, methods, rounds, accuracy
    ("MLP 1M", "mlp", (784, 1024, 256, 10), 256, tuple(METHODS), 7, True),
    ("MLP 3M", "mlp", (784, 2048, 768, 10), 256, SCALING, 5, True),
    ("MLP 10M", "mlp", (784, 4096, 1536, 10), 256, SCALING, 3, False),
    ("CNN 1-D", "cnn", (32, 64, 128), 256, tuple(n for n in METHODS if n != "compiled"), 5, True),
    ("transformer", "transformer", (128, 4, 512, 32), 64, tuple(n for n in METHODS if n != "compiled"), 5,
     True),
]
QUICK = [
    ("MLP tiny", "mlp", (20, 32, 16, 10), 32, tuple(n for n in METHODS if n != "compiled"), 3, True),
    ("CNN tiny", "cnn", (4, 4, 16), 16, ("two_grads", "ib.lie_bracket", "autograd", "finite_diff"), 2,
     True),
    ("transformer tiny", "transformer", (16, 2, 32, 4), 8, ("two_grads", "ib.lie_bracket", "func.vjp"), 2,
     True),
]


def run(problems, *, device="cpu", threads=2, compile_on=("MLP 1M",), log=print) -> dict:
    torch.set_num_threads(threads)
    _malloc_release()
    t0 = time.time()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    config = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
              "device": device, "threads": threads, "machine": platform.machine(),
              "clock": "process CPU time" if CLOCK[0] is time.process_time else "wall time",
              "load_average_start": [round(x, 2) for x in load0] if load0 else None,
              "peers": {n: available(n) for n in PEERS}}
    results = []
    for name, kind, spec, batch, names, rounds, acc in problems:
        names = [n for n in names if n != "compiled" or name in compile_on]
        results.append(run_problem(name, kind, spec, batch, list(names), rounds, device=device,
                                   with_accuracy=acc, log=log))
    load1 = os.getloadavg() if hasattr(os, "getloadavg") else None
    config["load_average_end"] = [round(x, 2) for x in load1] if load1 else None
    config["seconds"] = round(time.time() - t0, 1)
    return {"config": config, "problems": results}


def _fmt(x, spec=".1e"):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def report(res: dict) -> str:
    c = res["config"]
    runs = c.get("partial_runs")
    dates = sorted(r["date"] for r in runs or [])
    when = (f"{len(runs)} runs, {dates[0]} to {dates[-1]} (one per problem)" if runs
            else f"{c['date']}, {c['seconds']} s")
    threads = f"{c['threads']} thread" + ("s" if c["threads"] > 1 else "")
    lines = [f"# Lie bracket cost ({c['device']}, {threads}, float32)", "",
             f"{when}; torch {c['torch']}, {c['machine']}. Peers installed: "
             + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in c["peers"].items()) + ".", "",
             "1-minute load averages are given per problem: a load above the number of cores means a "
             "shared machine, whose absolute times are inflated; the paired ratios are the numbers to read.",
             ""]
    lines += [f"Timer: {c.get('clock', 'wall time')}.", ""]
    lines += ["Ratios: median over rounds of time(method) / time(two task gradients) measured right before "
             "it (paired), quartiles in brackets. Errors: relative to the float64 bare-autograd bracket "
             "(`ib.sequential_field` against the float64 generic field). Memory: extra peak bytes per "
             "parameter during one call (4 = one float32 vector).", ""]
    for r in res["problems"]:
        load = r.get("load_average")
        lines += [f"## {r['name']} (d = {r['d']:,}, batch {r['batch']}"
                  + (", factored path" if r["factored"] else "") + ")", "",
                  f"1-minute load average {load[0]} before, {load[1]} after." if load else "", "",
                  "| method | ratio to two gradients | quartiles | median time (ms) | float32 error | "
                  "float64 error | bytes / parameter |", "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
        acc = r.get("accuracy", {})
        for n, t in r["timing"].items():
            a = acc.get(n, {})
            e64 = "reference" if n == "autograd" and acc else _fmt(a.get("float64"))
            lines.append(f"| {n} | {t['ratio']:.2f} | {t['ratio_q25']:.2f}–{t['ratio_q75']:.2f} | "
                         f"{1e3 * t['median_s']:.1f} | {_fmt(a.get('float32'))} | {e64} | "
                         f"{_fmt(r['bytes_per_param'].get(n), '.1f')} |")
        if "compile_s" in r:
            lines.append(f"\n`compiled`: compile time {r['compile_s']:.0f} s (not in the ratio).")
        lines.append("")
    mlps = [r for r in res["problems"] if r["kind"] == "mlp"]
    if len(mlps) > 1:
        lines += ["## Scaling (MLPs)", "", "| network | d | " + " | ".join(SCALING[1:]) + " |",
                  "| --- | ---: |" + " ---: |" * (len(SCALING) - 1)]
        for r in mlps:
            lines.append(f"| {'-'.join(map(str, r['spec']))} | {r['d']:,} | " + " | ".join(
                _fmt(r["timing"].get(n, {}).get("ratio"), ".2f") for n in SCALING[1:]) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny networks (a smoke run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="names of the problems to run (e.g. 'MLP 1M')")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--methods", nargs="*", help="only these methods (e.g. two_grads ib.lie_bracket "
                    "ib.generic autograd: the library's own ratios, without the peers)")
    ap.add_argument("--rounds", type=int, help="rounds per problem (default: the problem's own)")
    ap.add_argument("--clock", choices=("wall", "process"), default="wall",
                    help="time the pairs by wall time (default) or by this process's CPU time (a shared "
                    "machine, --threads 1, CPU only)")
    args = ap.parse_args(argv)
    CLOCK[0] = time.process_time if args.clock == "process" else time.perf_counter
    problems = QUICK if args.quick else FULL
    if args.only:
        problems = [p for p in problems if p[0] in args.only]
    if args.methods or args.rounds:
        problems = [(n, k, s, b, tuple(m for m in ms if not args.methods or m in args.methods),
                     args.rounds or r, a) for n, k, s, b, ms, r, a in problems]
    res = run(problems, device=args.device, threads=args.threads, log=lambda s: print(s, flush=True))
    text = report(res)
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = torch.device(args.device).type + ("_quick" if args.quick else "")
    path = out / f"{stem}.json"
    if args.only and path.exists():  # a partial run replaces its problems in the stored results
        old = json.loads(path.read_text())
        mine = {r["name"] for r in res["problems"]}
        res["problems"] = [r for r in old["problems"] if r["name"] not in mine] + res["problems"]
        order = [p[0] for p in (QUICK if args.quick else FULL)]
        res["problems"].sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        runs = old["config"].pop("partial_runs", None) or [old["config"]]
        res["config"]["partial_runs"] = runs + [dict(res["config"])]
        text = report(res)
    path.write_text(json.dumps(res, indent=1))
    (out / f"{stem}.md").write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
