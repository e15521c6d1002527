"""Shared fixtures for the ibea_lib tests.

Exactness tests run in float64 on the CPU; device tests are parametrized over
``ibea_refs.DEVICES`` (the CPU, plus CUDA when present). Tests marked ``@pytest.mark.cuda`` are
skipped on machines without CUDA.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings
from ibea_refs import mlp_problem

# Few, unhurried examples: the whole suite must stay fast on a shared 2-core machine.
settings.register_profile("ibea", max_examples=25, deadline=None, derandomize=True, database=None)
settings.load_profile("ibea")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def mlp2():
    """A 26-parameter tanh MLP with two MSE tasks, float64 on the CPU."""
    return mlp_problem(n_tasks=2)


@pytest.fixture
def mlp3():
    """The same MLP with three tasks."""
    return mlp_problem(n_tasks=3)
