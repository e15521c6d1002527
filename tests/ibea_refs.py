"""Independent reference implementations and small test problems for the ibea_lib tests.

Nothing here calls the library's derivative code: references are built from explicit
Hessians (``torch.autograd.functional``), closed forms of quadratics, or ``torch.func``
Jacobians of flattened parameters. The library's pytree ``flatten``/``unflatten`` are used
only to move between a dict of tensors and one flat vector (they are tested separately).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import ibea_lib as ib

F64 = torch.float64

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
"""Devices to parametrize over: always the CPU, CUDA when it is present."""


def mse(out: Tensor, target: Tensor) -> Tensor:
    return ((out - target) ** 2).mean()


@dataclass
class Problem:
    """A small MLP and ``n`` regression tasks on it (random data per task)."""

    model: torch.nn.Module
    losses: list[Callable]
    params: dict[str, Tensor]


def mlp_problem(
    n_tasks: int = 2,
    sizes: tuple[int, ...] = (3, 4, 2),
    n: int = 6,
    seed: int = 0,
    dtype: torch.dtype = F64,
    device: str | torch.device = "cpu",
) -> Problem:
    """A tanh MLP (26 parameters by default) and ``n_tasks`` MSE losses on different data."""
    model = ib.models.mlp(list(sizes), "tanh", seed=seed, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(1000 + seed)
    losses = []
    for _ in range(n_tasks):
        x = torch.randn(n, sizes[0], generator=gen, dtype=F64).to(dtype=dtype, device=device)
        y = torch.randn(n, sizes[-1], generator=gen, dtype=F64).to(dtype=dtype, device=device)
        losses.append(ib.model_loss(model, mse, x, y))
    return Problem(model, losses, ib.params_of(model))


def quadratic(d: int, seed: int, dtype: torch.dtype = F64, device: str = "cpu"):
    """(A, b, loss) with loss(θ) = ½θᵀAθ + bᵀθ, A symmetric (indefinite in general)."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=gen, dtype=F64)
    A = ((m + m.T) / 2).to(dtype=dtype, device=device)
    b = torch.randn(d, generator=gen, dtype=F64).to(dtype=dtype, device=device)
    return A, b, (lambda th: 0.5 * th @ (A @ th) + b @ th)


def smooth_loss(d: int, seed: int, m: int = 4) -> Callable[[Tensor], Tensor]:
    """A random non-quadratic loss on one float64 vector θ ∈ R^d (nonzero third derivatives).

    L(θ) = Σ_k c_k log cosh(w_kᵀθ + s_k) + ½ θᵀAθ / d + (1/24) Σ_j θ_j⁴ · e_j.
    """
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(m, d, generator=gen, dtype=F64)
    s = torch.randn(m, generator=gen, dtype=F64)
    c = torch.randn(m, generator=gen, dtype=F64)
    q = torch.randn(d, d, generator=gen, dtype=F64)
    A = (q + q.T) / 2
    e = torch.rand(d, generator=gen, dtype=F64)

    def loss(th: Tensor) -> Tensor:
        z = W @ th + s
        # log cosh written with softplus so that it stays finite and smooth
        logcosh = z + torch.nn.functional.softplus(-2 * z) - torch.log(torch.tensor(2.0, dtype=z.dtype))
        return (c * logcosh).sum() + 0.5 * th @ (A @ th) / d + (e * th**4).sum() / 24

    return loss


# ----- flat views and explicit derivatives ---------------------------------------------------


def flat_loss(loss: Callable, like) -> Callable[[Tensor], Tensor]:
    """The loss as a function of one flat vector (cut into the structure of ``like``)."""
    return lambda v: loss(ib.unflatten(v, like))


def flat(tree) -> Tensor:
    return ib.flatten(tree).detach()


def explicit_grad(loss: Callable, params) -> Tensor:
    f = flat_loss(loss, params)
    return torch.autograd.functional.jacobian(f, flat(params).clone())


def explicit_hessian(loss: Callable, params) -> Tensor:
    f = flat_loss(loss, params)
    return torch.autograd.functional.hessian(f, flat(params).clone())


def rel_err(result, reference) -> float:
    """‖result − reference‖ / ‖reference‖ over all entries (pytrees or tensors)."""
    a = ib.flatten(result) if not isinstance(result, Tensor) else result
    b = ib.flatten(reference) if not isinstance(reference, Tensor) else reference
    a, b = a.detach().to(F64).reshape(-1), b.detach().to(F64).reshape(-1)
    return float((a - b).norm() / b.norm())


def same_structure(result, like) -> None:
    """Assert that ``result`` has the keys, shapes, dtypes and devices of ``like``."""
    if isinstance(like, Tensor):
        assert isinstance(result, Tensor)
        pairs = [(result, like)]
    else:
        assert isinstance(result, dict)
        assert list(result) == list(like)
        pairs = [(result[k], like[k]) for k in like]
    for r, p in pairs:
        assert r.shape == p.shape
        assert r.dtype == p.dtype
        assert r.device == p.device


# ----- vector fields on flat vectors (for brackets of general fields) -------------------------


def grad_field(loss: Callable, like) -> Callable[[Tensor], Tensor]:
    """θ ↦ ∇L(θ) on flat vectors, by torch.func (composable with jacrev)."""
    return torch.func.grad(flat_loss(loss, like))


def bracket(X: Callable, Y: Callable) -> Callable[[Tensor], Tensor]:
    """The Lie bracket of general vector fields, [X, Y](θ) = DY(θ)·X(θ) − DX(θ)·Y(θ)."""
    return lambda t: torch.func.jacrev(Y)(t) @ X(t) - torch.func.jacrev(X)(t) @ Y(t)


# ----- snapshots for the no-mutation checks ---------------------------------------------------


def snapshot(params) -> list[tuple[Tensor, bool, int]]:
    """Clones, requires_grad flags and version counters of the tensors of ``params``."""
    ts = [params] if isinstance(params, Tensor) else list(params.values())
    return [(t.detach().clone(), t.requires_grad, t._version) for t in ts]


def assert_unchanged(params, before) -> None:
    ts = [params] if isinstance(params, Tensor) else list(params.values())
    assert len(ts) == len(before)
    for t, (value, flag, version) in zip(ts, before):
        assert t.requires_grad == flag, "requires_grad was changed"
        assert t._version == version, "the tensor was modified in place"
        assert torch.equal(t.detach(), value), "the tensor's values were changed"
        if t.is_leaf and t.requires_grad:
            assert t.grad is None, "a .grad was accumulated on the caller's tensor"
