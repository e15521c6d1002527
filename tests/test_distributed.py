"""Data-set losses over two processes (torch.distributed, gloo on 127.0.0.1) give one process's result.

``benchmarks/dist_bracket.py --check`` is started with ``torchrun`` (2 CPU processes, each with its
shard of every task); each rank's grad, hvp, lie_bracket, sequential_field, bracket_sum,
modified_loss (and its gradient) and multitask_terms must equal those of one process holding
all the data, to float64 round-off.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch

import ibea_lib as ib

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "dist_bracket.py"


def _load():
    spec = importlib.util.spec_from_file_location("dist_bracket", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return all(_close(a[k], b[k]) for k in b)
    return torch.allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_two_gloo_processes_equal_one_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           str(SCRIPT), "--check", str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    db = _load()
    model, tasks, v = db.check_problem()
    whole = [ib.data_loss(model, db.CE, db.batches_of(x, y, 7)) for x, y in tasks]
    reference = db.check_results(whole, ib.params_of(model), v)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.pop("world_size") == 2
        assert set(got) == set(reference)
        for name, ref in reference.items():
            assert _close(got[name], ref), (rank, name)
    # the shards differ from the whole: a rank without the all-reduce would get another answer
    x, y = tasks[0]
    alone = ib.grad(ib.model_loss(model, db.CE, *ib.distributed.shard(x, y, rank=0, world_size=2)),
                    ib.params_of(model))
    assert not _close(alone, reference["grad"])
