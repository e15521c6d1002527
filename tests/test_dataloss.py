"""Data-set losses (ib.data_loss): the full-data result of every core call, in passes over the batches."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ibea_lib as ib

CE = torch.nn.functional.cross_entropy


def _rel(a, b) -> float:
    return float(ib.norm(ib.sub(a, b)) / ib.norm(b))


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    model = ib.models.mlp([5, 7, 3], seed=0, dtype=torch.float64)
    xs = [torch.randn(n, 5, generator=gen, dtype=torch.float64) for n in (23, 17, 11)]
    ys = [torch.randint(0, 3, (n,), generator=gen) for n in (23, 17, 11)]
    sizes = (5, 4, 3)  # uneven last batches: weights by batch size matter
    data = [ib.data_loss(model, CE, [(x[i:i + s], y[i:i + s]) for i in range(0, len(x), s)])
            for x, y, s in zip(xs, ys, sizes)]
    full = [ib.model_loss(model, CE, x, y) for x, y in zip(xs, ys)]
    params = ib.params_of(model)
    v = {k: torch.randn(t.shape, generator=gen, dtype=t.dtype) for k, t in params.items()}
    return model, data, full, params, v


def test_every_core_call_gives_the_full_data_result(problem):
    _, data, full, p, v = problem
    (da, db, dc), (fa, fb, fc) = data, full
    h = 0.1
    vectors = {
        "grad": (ib.grad(da, p), ib.grad(fa, p)),
        "hvp": (ib.hvp(da, p, v), ib.hvp(fa, p, v)),
        "lie_bracket": (ib.lie_bracket(da, db, p), ib.lie_bracket(fa, fb, p)),
        "sequential_field": (ib.sequential_field([da, db, dc], p, h),
                             ib.sequential_field([fa, fb, fc], p, h)),
        "bracket_sum": (ib.bracket_sum([da, db, dc], p), ib.bracket_sum([fa, fb, fc], p)),
        "order_averaged_field": (ib.order_averaged_field([da, db], p, h),
                                 ib.order_averaged_field([fa, fb], p, h)),
        "multitask_field": (ib.multitask_field([da, db], p, h), ib.multitask_field([fa, fb], p, h)),
        "gd_field": (ib.gd_field(da, p, h), ib.gd_field(fa, p, h)),
        "bracket_corrected_steps": (ib.bracket_corrected_steps([da, db], p, h),
                                    ib.bracket_corrected_steps([fa, fb], p, h)),
    }
    for name, (mine, ref) in vectors.items():
        assert _rel(mine, ref) < 1e-13, name
    scalars = {
        "value": (da(p), fa(p)),
        "modified_loss": (ib.modified_loss(da, p, h), ib.modified_loss(fa, p, h)),
        "conflict_free_loss": (ib.conflict_free_loss([da, db], p, h), ib.conflict_free_loss([fa, fb], p, h)),
        "alignment": (ib.alignment(da, db, p), ib.alignment(fa, fb, p)),
        "cosine": (ib.cosine(da, db, p), ib.cosine(fa, fb, p)),
        "sgd_modified_loss": (ib.sgd_modified_loss([da, db], p, h), ib.sgd_modified_loss([fa, fb], p, h)),
    }
    terms = ib.multitask_terms([da, db, dc], p, h)
    ref_terms = ib.multitask_terms([fa, fb, fc], p, h)
    scalars.update({f"multitask_terms[{k}]": (terms[k], ref_terms[k]) for k in terms})
    for name, (mine, ref) in scalars.items():
        assert mine.dim() == 0 and torch.allclose(mine, ref, rtol=1e-13, atol=1e-15), name


def test_differentiable_objectives_with_model_parameters(problem):
    """A modified loss of a data-set loss can be minimized: its gradient is exact (one HVP pass)."""
    _, (da, db, _), (fa, fb, _), p, _ = problem
    attached = {k: t.clone().requires_grad_(True) for k, t in p.items()}
    for mine, ref in [
        (ib.modified_loss(da, attached, 0.2), ib.modified_loss(fa, attached, 0.2)),
        (ib.conflict_free_loss([da, db], attached, 0.2), ib.conflict_free_loss([fa, fb], attached, 0.2)),
    ]:
        g1 = torch.autograd.grad(mine, list(attached.values()))
        g2 = torch.autograd.grad(ref, list(attached.values()))
        assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-15) for a, b in zip(g1, g2))
    # as a gradient field of an objective too
    obj = lambda q: ib.conflict_free_loss([da, db], q, 0.2)  # noqa: E731
    ref = lambda q: ib.conflict_free_loss([fa, fb], q, 0.2)  # noqa: E731
    assert _rel(ib.grad(obj, p), ib.grad(ref, p)) < 1e-13


def test_dataloader_reductions_and_devices():
    gen = torch.Generator().manual_seed(1)
    model = ib.models.mlp([4, 6, 2], seed=1)  # float32 model and data ...
    x, y = torch.randn(50, 4, generator=gen), torch.randn(50, 2, generator=gen)
    model64 = ib.models.mlp([4, 6, 2], seed=1, dtype=torch.float64)
    p64 = ib.params_of(model64)  # ... evaluated in float64: the batches are cast to the params' dtype
    ref = ib.grad(ib.model_loss(model64, torch.nn.functional.mse_loss, x.double(), y.double()), p64)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    for criterion, factor in [(torch.nn.MSELoss(), 1.0), (torch.nn.MSELoss(reduction="sum"), 2.0),
                              (torch.nn.MSELoss(reduction="none"), 2.0)]:
        # sum / none reductions sum the 2 outputs of each example as well: twice the mean of mse_loss
        loss = ib.data_loss(model64, criterion, loader)
        assert _rel(ib.grad(loss, p64), ib.scale(ref, factor)) < 1e-12
        assert loss.count == 50
    with pytest.raises(TypeError, match="more than once"):
        ib.data_loss(model, CE, ((x[i:i + 5], y[i:i + 5]) for i in range(0, 50, 5)))
    with pytest.raises(ValueError, match="reduction"):
        ib.data_loss(model, CE, [(x, y)], reduction="max")
    with pytest.raises(TypeError, match="dict"):
        ib.data_loss(model, CE, [(x, y)])(torch.zeros(3))
    with pytest.raises(RuntimeError, match="process group"):
        ib.data_loss(model, CE, [(x, y)], distributed=True)
    dropping = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, drop_last=True)
    loss = ib.data_loss(model64, torch.nn.functional.mse_loss, dropping)
    loss.count = 49  # as if an earlier pass had seen other examples
    with pytest.raises(RuntimeError, match="same examples"):
        ib.grad(loss, p64)


def test_progress_bar_and_value_without_grad(problem, capsys):
    model, (da, _, _), (fa, _, _), p, _ = problem
    shown = ib.data_loss(model, CE, da.batches, progress=True, name="task a")
    with torch.no_grad():
        assert torch.allclose(shown(p), fa(p), rtol=1e-14)
    assert "task a: value pass" in capsys.readouterr().err


def test_memory_does_not_grow_with_the_number_of_batches():
    """Each batch's graph is freed before the next batch is evaluated, in every kind of pass.

    The criterion keeps a weak reference to each batch's network output (which every autograd
    graph of that batch holds); when batch k is evaluated, the outputs of batches < k must be gone
    (freed by reference counting, without a garbage-collector run).
    """
    gen = torch.Generator().manual_seed(2)
    model = ib.models.mlp([3, 5, 2], seed=2, dtype=torch.float64)
    n_batches = 100
    x = torch.randn(n_batches * 2, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (n_batches * 2,), generator=gen)
    alive_max = [0]
    refs: list = []

    def criterion(out, target):
        alive_max[0] = max(alive_max[0], sum(r() is not None for r in refs))
        refs.append(weakref.ref(out))
        return CE(out, target)

    batches = [(x[2 * i:2 * i + 2], y[2 * i:2 * i + 2]) for i in range(n_batches)]
    la = ib.data_loss(model, criterion, batches, reduction="mean")
    lb = ib.data_loss(model, criterion, [(xb, 1 - yb) for xb, yb in batches], reduction="mean")
    p = ib.params_of(model)
    br = ib.lie_bracket(la, lb, p)  # gradient passes, then HVP passes
    assert len(refs) == 4 * n_batches
    assert alive_max[0] == 0  # no earlier batch's graph was alive when a new batch started
    ref = ib.lie_bracket(ib.model_loss(model, CE, x, y), ib.model_loss(model, CE, x, 1 - y), p)
    assert _rel(br, ref) < 1e-12


# ---- issue 17: data pipelines that cannot drift (one test per row of the table) ----

def _shuffled_problem(drop_last=True, generator=None):
    gen = torch.Generator().manual_seed(5)
    model = ib.models.mlp([4, 6, 3], seed=5, dtype=torch.float64)
    x = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, drop_last=drop_last,
                        generator=generator)
    return model, x, y, loader


@pytest.mark.parametrize("with_generator", [False, True])
def test_row_shuffled_dataloader_with_drop_last_gives_the_same_number_every_pass(with_generator):
    gen = torch.Generator().manual_seed(3) if with_generator else None
    model, _, _, loader = _shuffled_problem(generator=gen)
    p = ib.params_of(model)
    v = {k: torch.ones_like(t) for k, t in p.items()}
    d = ib.data_loss(model, CE, loader)
    d2 = ib.data_loss(model, CE, loader)
    state = gen.get_state() if gen is not None else None
    h1, h2 = ib.hvp(d, p, v), ib.hvp(d, p, v)
    assert all(torch.equal(h1[k], h2[k]) for k in h1)  # bit-identical passes
    g = ib.grad(d, p)
    bracket = ib.lie_bracket(d, d2, p)  # two equal losses: zero to round-off
    assert float(ib.norm(bracket)) <= 1e-14 * float(ib.norm(g))
    if gen is not None:
        assert torch.equal(gen.get_state(), state)  # the caller's generator does not advance


def test_row_lambda_criterion_with_sum_reduction_must_state_it():
    model, x, y, _ = _shuffled_problem()
    p = ib.params_of(model)
    batches = [(x[i:i + 10], y[i:i + 10]) for i in range(0, 50, 10)]
    def summed(out, t):
        return torch.nn.functional.cross_entropy(out, t, reduction="sum")

    with pytest.raises(TypeError, match="reduction="):
        ib.data_loss(model, summed, batches)
    ref = ib.grad(ib.model_loss(model, CE, x, y), p)
    assert _rel(ib.grad(ib.data_loss(model, summed, batches, reduction="sum"), p), ref) < 1e-12
    with pytest.raises(ValueError, match="reduces with 'sum'"):
        ib.data_loss(model, torch.nn.CrossEntropyLoss(reduction="sum"), batches, reduction="mean")
    import functools
    partial = functools.partial(torch.nn.functional.cross_entropy, reduction="sum")
    assert ib.data_loss(model, partial, batches).reduction == "sum"


def test_row_data_loss_never_advances_the_global_rng():
    model, _, _, loader = _shuffled_problem(drop_last=False)
    p = ib.params_of(model)
    d = ib.data_loss(model, CE, loader)
    before = torch.get_rng_state()
    ib.grad(d, p)
    ib.lie_bracket(d, ib.data_loss(model, CE, loader), p)
    with torch.no_grad():
        d(p)
    assert torch.equal(torch.get_rng_state(), before)


def test_row_iterable_dataset_without_len():
    model, x, y, _ = _shuffled_problem()

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(zip(x, y))

    loader = DataLoader(Stream(), batch_size=16)
    with pytest.raises(TypeError):
        len(loader)
    p = ib.params_of(model)
    got = ib.grad(ib.data_loss(model, CE, loader, progress=True), p)
    assert _rel(got, ib.grad(ib.model_loss(model, CE, x, y), p)) < 1e-12


def test_examples_that_change_between_passes_are_refused():
    model, x, y, _ = _shuffled_problem()
    import random

    class Augmented(torch.utils.data.Dataset):  # noise from Python's RNG: not controlled by torch
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return x[i] + random.gauss(0.0, 0.1), y[i]

    d = ib.data_loss(model, CE, DataLoader(Augmented(), batch_size=10))
    p = ib.params_of(model)
    with pytest.raises(RuntimeError, match="other examples"):
        ib.grad(d, p)
        ib.grad(d, p)
    # torch's own RNG in a transform is fixed per pass: accepted, the same number every pass
    class TorchAugmented(Augmented):
        def __getitem__(self, i):
            return x[i] + 0.1 * torch.randn(4, dtype=x.dtype), y[i]

    d = ib.data_loss(model, CE, DataLoader(TorchAugmented(), batch_size=10, shuffle=True))
    g1, g2 = ib.grad(d, p), ib.grad(d, p)
    assert all(torch.equal(g1[k], g2[k]) for k in g1)
