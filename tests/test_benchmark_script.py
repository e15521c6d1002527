"""Smoke test of benchmarks/bench_bracket.py on tiny networks.

Every bracket of the benchmark (the library, bare autograd, torch.func, finite differences and the
peers that are installed) must agree with a dense-Hessian bracket in float64, and the timing,
memory and report functions must produce sane numbers. Timings are not asserted.
"""

import importlib.util
import json
import pathlib
import sys

import pytest
import torch

import ibea_lib as ib

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_bracket.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_bracket", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_bracket"] = module
    spec.loader.exec_module(module)
    return module


bb = _load()
CASES = [("mlp", (6, 5, 4, 10), 8), ("cnn", (2, 3, 8), 6), ("transformer", (8, 2, 16, 3), 4)]


def _dense_bracket(p):
    """H_b g_a − H_a g_b with dense Hessians of the flattened parameters (independent of ib)."""
    like = p.params
    flat = ib.flatten(like)
    fs = [lambda v, f=f: f(ib.unflatten(v, like)) for f in (p.la, p.lb)]
    ga, gb = (torch.func.grad(f)(flat) for f in fs)
    ha, hb = (torch.func.hessian(f)(flat) for f in fs)
    return hb @ ga - ha @ gb


@pytest.mark.parametrize("kind, spec, batch", CASES)
def test_every_method_is_the_bracket(kind, spec, batch):
    p = bb.make_problem("tiny", kind, spec, batch, dtype=torch.float64)
    with bb.kernel(p):
        # torch.func.hessian (forward mode) would take the encoder layer's inference fast path, whose
        # derivatives differ: the transformer is checked against the double backward instead
        ref = bb.autograd_bracket(p) if kind == "transformer" else _dense_bracket(p)
        for name, fn in bb.METHODS.items():
            if name in ("two_grads", "ib.sequential_field", "compiled") or not bb.available(name):
                continue
            if kind == "transformer" and name not in ("ib.lie_bracket", "ib.generic", "func.vjp"):
                continue
            out = fn(p)
            tol = 1e-6 if name == "finite_diff" else 1e-11
            assert bb.rel_error(out, ref) < tol, name
        fld = bb.ib_sequential_field(p)
        with ib.factored.disabled():
            assert bb.rel_error(fld, ib.flatten(ib.sequential_field([p.la, p.lb], p.params, 0.1))) < 1e-12
    assert p.d == sum(t.numel() for t in p.model.parameters())
    assert (kind == "mlp") == ib.factored.applies([p.la, p.lb], p.params)


def test_run_and_report(tmp_path):
    problems = [("MLP tiny", "mlp", (6, 5, 4, 10), 8, ("two_grads", "ib.lie_bracket", "autograd", "func.vjp"),
                 2, True)]
    res = bb.run(problems, threads=1, compile_on=(), log=lambda s: None)
    r = res["problems"][0]
    assert set(r["timing"]) == {"two_grads", "ib.lie_bracket", "autograd", "func.vjp"}
    for t in r["timing"].values():
        assert t["ratio"] > 0 and t["pairs"] == 2 and t["ratio_q25"] <= t["ratio_q75"]
    assert r["accuracy"]["ib.lie_bracket"]["float32"] < 1e-5
    assert r["accuracy"]["ib.lie_bracket"]["float64"] < 1e-12
    assert r["accuracy"]["autograd"]["float64"] is None  # the reference itself
    text = bb.report(res)
    assert "MLP tiny" in text and "| ib.lie_bracket |" in text and "reference" in text
    json.dumps(res)  # the stored results are plain JSON


def test_main_merges_partial_runs(tmp_path, monkeypatch):
    tiny = [("A", "mlp", (4, 3, 10), 4, ("two_grads", "ib.lie_bracket"), 1, False),
            ("B", "mlp", (4, 5, 10), 4, ("two_grads", "ib.lie_bracket"), 1, False)]
    monkeypatch.setattr(bb, "QUICK", tiny)
    bb.main(["--quick", "--threads", "1", "--out", str(tmp_path), "--only", "B"])
    bb.main(["--quick", "--threads", "1", "--out", str(tmp_path), "--only", "A"])
    stored = json.loads((tmp_path / "cpu_quick.json").read_text())
    assert [r["name"] for r in stored["problems"]] == ["A", "B"]
    assert "## A" in (tmp_path / "cpu_quick.md").read_text()
