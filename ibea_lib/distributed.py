"""Several processes: all-reduce of data-set losses with ``torch.distributed``.

Nothing here starts processes: launch them with ``torchrun`` (or any launcher that sets up a
process group) and call ``torch.distributed.init_process_group`` ("gloo" on CPU, "nccl" on GPU)
before building the losses. When a process group is initialized, a loss made by
:func:`ibea_lib.data_loss` sums its per-example contributions over *all* ranks in every pass
over the data (one ``all_reduce`` per pass: the value, the example count and the gradient, or
the Hessian-vector product, in one flat buffer), so that every core call — ``ib.grad``,
``ib.hvp``, ``ib.lie_bracket``, ``ib.sequential_field``, … — returns on every rank the result of
one process holding all the data. Each rank holds its own shard (see :func:`shard`); ranks must
make the same calls in the same order (the usual SPMD rule of ``torch.distributed``).

Example (two processes on one machine, CPU)::

    torchrun --nproc-per-node 2 benchmarks/dist_bracket.py

Because the example count is reduced with the sums, a rank that holds *all* the data (no
sharding) still gets the right mean; it only does the work twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _dist():
    import torch.distributed as dist

    return dist


def active(group=None) -> bool:
    """True when ``torch.distributed`` is initialized with more than one process in ``group``."""
    if not torch.distributed.is_available():
        return False
    dist = _dist()
    return dist.is_initialized() and dist.get_world_size(group) > 1


def rank_and_world(group=None) -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without a process group."""
    if not active(group):
        return 0, 1
    dist = _dist()
    return dist.get_rank(group), dist.get_world_size(group)


def all_reduce_sum(values: Sequence[Tensor], group=None) -> list[Tensor]:
    """Σ over ranks of each tensor, with one collective (the tensors are packed in one buffer).

    Without an active process group the tensors are returned unchanged. All tensors must share a
    device ("cpu" for gloo, the rank's GPU for nccl) and a dtype.
    """
    values = list(values)
    if not active(group) or not values:
        return values
    flat = torch.cat([v.reshape(-1) for v in values])
    _dist().all_reduce(flat, op=_dist().ReduceOp.SUM, group=group)
    out, start = [], 0
    for v in values:
        out.append(flat[start : start + v.numel()].view_as(v))
        start += v.numel()
    return out


def shard(*tensors: Tensor, rank: int | None = None, world_size: int | None = None) -> tuple[Tensor, ...]:
    """This rank's contiguous block of the examples (first dimension) of each tensor.

    The blocks of ranks 0, …, world_size−1 are consecutive and cover every example once (their
    sizes differ by at most one). ``rank`` and ``world_size`` default to the process group's
    (0 and 1 without one).
    """
    if not tensors:
        raise ValueError("shard needs at least one tensor")
    r, w = rank_and_world()
    rank = r if rank is None else rank
    world_size = w if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError("every tensor given to shard must have the same number of examples (first dim)")
    start = rank * n // world_size
    stop = (rank + 1) * n // world_size
    return tuple(t[start:stop] for t in tensors)
