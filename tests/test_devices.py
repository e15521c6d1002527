"""Device- and dtype-agnostic: the same calls on every available device, in float32 and float64.

Each result keeps the structure, dtype and device of ``params``, and agrees with the float64
CPU result (to 1e-10 in float64, to 1e-3 in float32). Tests marked ``cuda`` need a GPU.
"""

from __future__ import annotations

import pytest
import torch
from ibea_refs import DEVICES, F64, mlp_problem, quadratic, rel_err, same_structure

import ibea_lib as ib

DTYPES = [torch.float32, torch.float64]
TOLS = {torch.float32: 1e-3, torch.float64: 1e-10}
LR = 0.05

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

VECTOR_CALLS = {
    "grad": lambda Ls, p: ib.grad(Ls[0], p),
    "hvp": lambda Ls, p: ib.hvp(Ls[0], p, ib.pytree.tree_map(torch.ones_like, p)),
    "lie_bracket": lambda Ls, p: ib.lie_bracket(Ls[0], Ls[1], p),
    "gd_field": lambda Ls, p: ib.gd_field(Ls[0], p, LR),
    "multitask_field": lambda Ls, p: ib.multitask_field(Ls, p, LR),
    "sequential_field": lambda Ls, p: ib.sequential_field(Ls, p, LR),
    "gd_step": lambda Ls, p: ib.gd_step(Ls[0], p, LR),
    "sequential_steps": lambda Ls, p: ib.sequential_steps(Ls, p, LR),
    "flow": lambda Ls, p: ib.flow(lambda q: ib.sequential_field(Ls, q, LR), p, LR, steps=2),
}

SCALAR_CALLS = {
    "value": lambda Ls, p: ib.value_and_grad(Ls[0], p)[0],
    "alignment": lambda Ls, p: ib.alignment(Ls[0], Ls[1], p),
    "cosine": lambda Ls, p: ib.cosine(Ls[0], Ls[1], p),
    "modified_loss": lambda Ls, p: ib.modified_loss(Ls[0], p, LR),
    "multitask_terms": lambda Ls, p: torch.stack(list(ib.multitask_terms(Ls, p, LR).values())),
}


@pytest.fixture(scope="module")
def reference():
    """float64 CPU results of every call on the 3-task MLP problem."""
    problem = mlp_problem(n_tasks=3, seed=1)
    calls = {**VECTOR_CALLS, **SCALAR_CALLS}
    return {name: fn(problem.losses, problem.params) for name, fn in calls.items()}


def to_f64_cpu(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", F64)
    return {k: t.detach().to("cpu", F64) for k, t in tree.items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(VECTOR_CALLS))
def test_vector_results_keep_structure_dtype_device(name, dtype, device, reference):
    problem = mlp_problem(n_tasks=3, seed=1, dtype=dtype, device=device)
    out = VECTOR_CALLS[name](problem.losses, problem.params)
    same_structure(out, problem.params)
    assert rel_err(to_f64_cpu(out), reference[name]) < TOLS[dtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(SCALAR_CALLS))
def test_scalar_results_keep_dtype_device(name, dtype, device, reference):
    problem = mlp_problem(n_tasks=3, seed=1, dtype=dtype, device=device)
    out = SCALAR_CALLS[name](problem.losses, problem.params)
    assert out.dtype == dtype
    assert out.device.type == torch.device(device).type
    assert rel_err(to_f64_cpu(out), reference[name]) < TOLS[dtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_single_tensor_params_on_device(dtype, device):
    """Quadratics with one tensor of params: closed forms on every device and dtype."""
    (Aa, ba, fa), (Ab, bb, fb) = (quadratic(4, s, dtype=dtype, device=device) for s in (0, 1))
    th = torch.linspace(-1, 1, 4, dtype=dtype, device=device)
    br = ib.lie_bracket(fa, fb, th)
    same_structure(br, th)
    closed = (Ab @ Aa - Aa @ Ab) @ th + Ab @ ba - Aa @ bb
    assert rel_err(br.cpu(), closed.cpu()) < TOLS[dtype]
    field = ib.sequential_field([fa, fb], th, LR)
    same_structure(field, th)


@pytest.mark.parametrize("device", DEVICES)
def test_differentiable_results_on_device(device):
    """modified_loss keeps its graph to a model's own parameters on the device."""
    problem = mlp_problem(n_tasks=2, dtype=torch.float32, device=device)
    own = dict(problem.model.named_parameters())
    out = ib.modified_loss(problem.losses[0], own, LR)
    assert out.requires_grad and out.device.type == torch.device(device).type
    out.backward()
    assert all(p.grad is not None and p.grad.device == p.device for p in own.values())
    problem.model.zero_grad(set_to_none=True)


def test_mixed_dtypes_are_rejected_in_v():
    p = {"w": torch.ones(2, dtype=torch.float32)}
    with pytest.raises(ValueError, match="dtype torch.float64 but params\\['w'\\] has dtype torch.float32"):
        ib.hvp(lambda q: (q["w"] ** 2).sum(), p, {"w": torch.ones(2, dtype=F64)})


@pytest.mark.cuda
@needs_cuda
def test_cuda_matches_cpu_and_rejects_cross_device_v():
    cpu = mlp_problem(n_tasks=2, seed=2)
    gpu = mlp_problem(n_tasks=2, seed=2, device="cuda")
    assert all(t.is_cuda for t in gpu.params.values())
    for name in ("lie_bracket", "sequential_field", "flow"):
        out = VECTOR_CALLS[name](gpu.losses, gpu.params)
        same_structure(out, gpu.params)
        assert rel_err(to_f64_cpu(out), VECTOR_CALLS[name](cpu.losses, cpu.params)) < 1e-10
    v_cpu = ib.pytree.tree_map(torch.ones_like, cpu.params)
    with pytest.raises(ValueError, match="is on cpu but params.* is on cuda"):
        ib.hvp(gpu.losses[0], gpu.params, v_cpu)
