"""A data-set Lie bracket with several processes (torch.distributed): each rank holds a shard.

    torchrun --nproc-per-node 2 benchmarks/dist_bracket.py            # MNIST-1D, two class splits
    torchrun --nproc-per-node 2 benchmarks/dist_bracket.py --check DIR   # the test's small problem

Each rank builds the same model, takes its shard of the examples of each task
(``ib.distributed.shard``), wraps them in ``ib.data_loss`` and calls the core functions as one
process would. Every data-set loss all-reduces its sums in every pass, so every rank gets the
full-data bracket. The backend is gloo on CPU and NCCL when every rank has a GPU
(``--device cuda``); ``torchrun`` sets the rank, world size and rendezvous address.

With ``--check DIR`` each rank writes its results to ``DIR/rank<r>.pt``; ``tests/test_distributed.py``
compares them with one process holding all the data.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

import torch
import torch.distributed as dist

import ibea_lib as ib

CE = torch.nn.functional.cross_entropy


def check_problem():
    """A tiny float64 problem with three tasks of unequal sizes (the same on every rank)."""
    gen = torch.Generator().manual_seed(0)
    model = ib.models.mlp([6, 8, 4], seed=0, dtype=torch.float64)
    tasks = []
    for n in (37, 29, 21):
        x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 4, (n,), generator=gen)
        tasks.append((x, y))
    v = {k: torch.randn(t.shape, generator=gen, dtype=t.dtype) for k, t in model.named_parameters()}
    return model, tasks, v


def check_results(losses, params, v, h=0.1):
    """The core calls compared by the test (the same code for one process and for each rank)."""
    la, lb, lc = losses
    attached = {k: t.clone().requires_grad_(True) for k, t in params.items()}
    objective = ib.modified_loss(la, attached, h)
    grad_of_modified = dict(zip(attached, torch.autograd.grad(objective, list(attached.values()))))
    return {
        "value": la(params),
        "grad": ib.grad(la, params),
        "hvp": ib.hvp(la, params, v),
        "lie_bracket": ib.lie_bracket(la, lb, params),
        "sequential_field": ib.sequential_field([la, lb, lc], params, h),
        "bracket_sum": ib.bracket_sum([la, lb, lc], params),
        "modified_loss": ib.modified_loss(la, params, h),
        "multitask_terms": ib.multitask_terms([la, lb, lc], params, h),
        "grad_of_modified_loss": grad_of_modified,
    }


def batches_of(x, y, batch_size):
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", metavar="DIR", help="run the test problem and save each rank's results")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args()

    torch.set_num_threads(1)
    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if args.device == "cuda" else "cpu"
    if args.device == "cuda":
        torch.cuda.set_device(device)
    try:
        if args.check:
            model, tasks, v = check_problem()
            losses = [ib.data_loss(model, CE, batches_of(*ib.distributed.shard(x, y), 5)) for x, y in tasks]
            out = check_results(losses, ib.params_of(model), v)
            out["world_size"] = world
            torch.save(out, pathlib.Path(args.check) / f"rank{rank}.pt")
            return

        data = ib.data.mnist1d()  # the standard 4000/1000 split, generated locally
        model = ib.models.mlp([40, 128, 128, 10], seed=0).to(device)
        params = ib.params_of(model)
        low = data.y_train < 5  # task a: digits 0-4, task b: digits 5-9 (all training examples)
        losses = []
        for name, mask in (("digits 0-4", low), ("digits 5-9", ~low)):
            x, y = ib.distributed.shard(data.x_train[mask], data.y_train[mask])
            losses.append(ib.data_loss(model, CE, batches_of(x, y, args.batch_size), name=name))
        t0 = time.perf_counter()
        br = ib.lie_bracket(losses[0], losses[1], params)
        seconds = time.perf_counter() - t0
        ga, gb = ib.grad(losses[0], params), ib.grad(losses[1], params)
        if rank == 0:
            print(f"{world} processes ({backend}), {losses[0].count} + {losses[1].count} examples, "
                  f"d = {ib.flatten(params).numel():,}")
            print(f"‖[∇L_a, ∇L_b]‖ = {float(ib.norm(br)):.4e}  (‖g_a‖ = {float(ib.norm(ga)):.3e}, "
                  f"‖g_b‖ = {float(ib.norm(gb)):.3e}); bracket in {seconds:.2f} s")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
