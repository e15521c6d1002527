"""Smoke test of benchmarks/bench_bracket.py on tiny networks.

The benchmark's alternative brackets (forward-over-reverse HVPs, a vmapped version, central
finite differences) must agree with ``ib.lie_bracket`` and with a dense-Hessian computation,
and the timing, accuracy, memory and report functions must produce sane numbers.
"""

import importlib.util
import json
import math
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
TINY = (6, 5, 4, 3)


@pytest.fixture(scope="module")
def problem64():
    return bb.make_problem(TINY, batch=8, dtype=torch.float64, seed=3)


def _dense_bracket(p):
    """H_b g_a − H_a g_b with dense Hessians of the flattened parameters (independent of ib)."""
    like = p.params
    flat = ib.flatten(like)

    def loss_of(loss):
        return lambda v: loss(ib.unflatten(v, like))

    ga = torch.func.grad(loss_of(p.loss_a))(flat)
    gb = torch.func.grad(loss_of(p.loss_b))(flat)
    ha = torch.func.hessian(loss_of(p.loss_a))(flat)
    hb = torch.func.hessian(loss_of(p.loss_b))(flat)
    return hb @ ga - ha @ gb


def test_problem_shapes(problem64):
    assert problem64.d == bb.count_mlp_params(TINY) == 6 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3
    assert problem64.inputs.shape == (2, 8, 6)
    # the two tasks use different batches, so their gradients differ
    ga, gb = bb.two_grads(problem64)
    assert bb.rel_error(ga, gb) > 0.1


@pytest.mark.parametrize("method", ["lie_bracket", "jvp_hvp", "vmap_jvp", "finite_diff"])
def test_brackets_match_dense_hessians(problem64, method):
    dense = _dense_bracket(problem64)
    value = ib.flatten(bb.METHODS[method](problem64))
    err = float((value - dense).norm() / dense.norm())
    assert err < (1e-6 if method == "finite_diff" else 1e-12), (method, err)


def test_float32_agreement():
    p = bb.make_problem((20, 16, 8, 4), batch=16, seed=1)
    lib = bb.lie_bracket(p)
    assert bb.rel_error(bb.jvp_hvp(p), lib) < 1e-5
    assert bb.rel_error(bb.vmap_jvp(p), lib) < 1e-5
    assert bb.rel_error(bb.finite_diff(p), lib) < 3e-2


def test_sequential_field_matches_separate_hvps(problem64):
    assert bb.rel_error(bb.sequential_fld(problem64), bb.sequential_reference(problem64)) < 1e-12


def test_fd_epsilon_rule(problem64):
    ga, _ = bb.two_grads(problem64)
    eps = bb.fd_epsilon(problem64.params, ga, scale=2.0)
    expected = 2.0 * torch.finfo(torch.float64).eps ** (1 / 3) * max(float(ib.norm(problem64.params)), 1.0)
    assert math.isclose(eps * float(ib.norm(ga)), expected, rel_tol=1e-12)
    with pytest.raises(ValueError, match="zero"):
        bb.fd_epsilon(problem64.params, ib.zeros_like(ga))


def test_time_methods_ratios(problem64):
    out = bb.time_methods(problem64, ("lie_bracket", "finite_diff"), rounds=3, warmup=1)
    assert list(out) == ["two_grads", "lie_bracket", "finite_diff"]
    assert out["two_grads"]["ratio"] == 1.0 and out["two_grads"]["ratio_min"] == 1.0
    for t in out.values():
        assert 0 < t["min_s"] <= t["median_s"]
        assert t["ratio_q25"] <= t["ratio"] <= t["ratio_q75"]
        assert math.isfinite(t["ratio"]) and t["ratio"] > 0
    with pytest.raises(ValueError, match="unknown methods"):
        bb.time_methods(problem64, ("no_such_method",))


def test_accuracy_dict():
    p = bb.make_problem((20, 16, 8, 4), batch=16, seed=2)
    acc = bb.accuracy(p, fd_scales=(0.1, 1.0))
    assert acc["vs_lie_bracket"]["lie_bracket"] == 0.0
    assert acc["vs_float64"]["lie_bracket"] < 1e-5
    assert acc["vs_float64"]["jvp_hvp"] < 1e-5
    assert 1e-7 < acc["vs_float64"]["finite_diff"] < 3e-2  # finite differences are visibly worse
    assert set(acc["fd_scan"]) == {"0.1", "1"}
    assert acc["sequential_fld_vs_hvps"] < 1e-5


def test_linear_fit_and_parse_sizes():
    fit = bb.linear_fit([1, 2, 3, 4], [5, 7, 9, 11])
    assert math.isclose(fit["slope"], 2.0) and math.isclose(fit["intercept"], 3.0)
    assert math.isclose(fit["r2"], 1.0)
    with pytest.raises(ValueError):
        bb.linear_fit([1], [2])
    assert bb.parse_sizes("784-10") == (784, 10)
    for bad in ("784", "a-b", "3-0"):
        with pytest.raises(ValueError):
            bb.parse_sizes(bad)


def test_memory_probe_in_process():
    out = bb.memory_probe((10, 8, 3), "lie_bracket", batch=4)
    assert out["d"] == bb.count_mlp_params((10, 8, 3))
    assert out["extra_bytes"] >= 0


def test_command_line_run(tmp_path):
    out = tmp_path / "tiny.json"
    argv = ["--quick", "--threads", "1", "--batch", "8", "--main", "12-10-3", "--sizes", "12-6-3", "12-10-3",
            "--memory-sizes", "12-6-3", "12-40-3", "--memory-methods", "lie_bracket", "--out", str(out)]
    result = bb.main(argv)
    stored = json.loads(out.read_text())
    assert stored["config"]["main_params"] == bb.count_mlp_params((12, 10, 3))
    assert set(stored["main"]) == set(bb.METHODS)
    expected = [bb.count_mlp_params((12, 6, 3)), bb.count_mlp_params((12, 10, 3))]
    assert [s["d"] for s in stored["scaling"]] == expected
    assert len(stored["memory"]["lie_bracket"]["points"]) == 2
    assert stored["accuracy"]["vs_lie_bracket"]["jvp_hvp"] < 1e-5
    assert result["config"]["quick"] is True
    text = out.with_suffix(".md").read_text()
    assert "| lie_bracket |" in text and "bytes / parameter" in text
