"""Chapter 05's headline on held-out seeds (300–307; the chapter uses 0–9 plus its offset).

The same protocol and sizes as the chapter, with 8 seeds and three of its rules: two binary groupings of
MNIST-1D (odd digit, digit ≥ 5) on a shared ReLU trunk, full-batch GD at h = 0.5, every run stopped
when L_A + L_B < 0.15. Checked: the direction of the conflict term's effect on the path cosine
(removing it raises the cosine, adding it lowers it, paired by seed), the interval where the chapter
claims significance, and that neither rule moves test accuracy by two points (the chapter's bound).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ibea_lib as ib
from ibea_lib.book.multitask import (
    conflict_free_update,
    conflict_weighted_update,
    stack_models,
    summed_update,
    train_seeds_to_loss,
)

H, THRESHOLD, MAX_STEPS, N_TRAIN, SEEDS = 0.5, 0.15, 1500, 1000, list(range(300, 308))


@pytest.fixture(scope="module")
def results():
    from torch.func import functional_call, grad, vmap

    torch.set_num_threads(1)
    data = ib.data.mnist1d()
    x, y = data.x_train[:N_TRAIN], data.y_train[:N_TRAIN]
    ya, yb = y % 2, (y >= 5).long()
    yta, ytb = data.y_test % 2, (data.y_test >= 5).long()

    def make(seed):
        return ib.models.MultiHeadMLP([40, 64, 64], [2, 2], "relu", seed=seed)

    net = make(0)

    def loss_a(p):
        return F.cross_entropy(functional_call(net, p, (x,))[0], ya)

    def loss_b(p):
        return F.cross_entropy(functional_call(net, p, (x,))[1], yb)

    def dot(a, b):
        return sum((a[k] * b[k]).sum() for k in a)

    def step_with(direction):
        return lambda p, u: {k: p[k] - H * v for k, v in direction(p, u).items()}

    def plain(p, u):
        ga, gb = grad(loss_a)(p), grad(loss_b)(p)
        return {k: ga[k] + gb[k] for k in p}

    def added(p, u):
        return grad(lambda q: loss_a(q) + loss_b(q) + H / 2 * dot(grad(loss_a)(q), grad(loss_b)(q)))(p)

    def removed(p, u):  # random alternation: returns the new parameters directly
        first = (u < 0.5).float()
        g1 = grad(lambda q: first * loss_a(q) + (1 - first) * loss_b(q))(p)
        p = {k: p[k] - H * g1[k] for k in p}
        g2 = grad(lambda q: (1 - first) * loss_a(q) + first * loss_b(q))(p)
        return {k: p[k] - H * g2[k] for k in p}

    def record(p):
        ga, gb = grad(loss_a)(p), grad(loss_b)(p)
        return {"cos": dot(ga, gb) / (dot(ga, ga) * dot(gb, gb)).sqrt()}

    def test_acc(p):
        oa, ob = functional_call(net, p, (data.x_test,))
        return ((oa.argmax(-1) == yta).float().mean() + (ob.argmax(-1) == ytb).float().mean()) / 2

    start = stack_models([make(s) for s in SEEDS])
    out = {}
    for name, step in (("plain", step_with(plain)), ("added", step_with(added)), ("removed", removed)):
        r = train_seeds_to_loss(
            step, start, lambda p: loss_a(p) + loss_b(p), SEEDS, threshold=THRESHOLD, max_steps=MAX_STEPS,
            record=record, every=10, progress=False,
        )
        with torch.no_grad():
            r["test_acc"] = vmap(test_acc)(r["params"]).double()
        r["path_cos"] = torch.nanmean(r["history"]["cos"], 0)
        out[name] = r
    return out


def test_every_run_reaches_the_loss(results):
    for r in results.values():
        assert bool(r["reached"].all()) and not bool(r["diverged"].any())


def _paired(results, rule, outcome):
    return ib.book.stats.t_interval((results[rule][outcome] - results["plain"][outcome]).tolist())


def test_conflict_term_moves_the_path_cosine(results):
    removed, added = _paired(results, "removed", "path_cos"), _paired(results, "added", "path_cos")
    assert removed["mean"] > 0 and added["mean"] < 0, (removed, added)
    assert added["hi"] < 0, added  # the chapter's significant claim: adding lowers the cosine


def test_test_accuracy_unchanged(results):
    for name in ("removed", "added"):
        iv = _paired(results, name, "test_acc")
        assert -0.02 < iv["lo"] and iv["hi"] < 0.02, (name, iv)


def test_conflict_weighted_update_closed_form():
    (A1, b1), (A2, b2) = ib.data.random_quadratic(4, 7), ib.data.random_quadratic(4, 8)
    losses = [ib.data.quadratic_loss(A1, b1), ib.data.quadratic_loss(A2, b2)]
    theta = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    h = 0.2
    g1, g2 = A1 @ theta + b1, A2 @ theta + b2
    for w in (0.0, 1.0, 2.0, -1.5):
        expected = theta - h * (g1 + g2 + (w - 1) * h / 2 * (A1 @ g2 + A2 @ g1))
        assert torch.allclose(conflict_weighted_update(losses, h, w)(theta, 1), expected, atol=1e-12)
    cf, plain = conflict_free_update(losses, h)(theta, 1), summed_update(losses, h)(theta, 1)
    assert torch.allclose(conflict_weighted_update(losses, h, 0.0)(theta, 1), cf)
    assert torch.allclose(conflict_weighted_update(losses, h, 1.0)(theta, 1), plain)
    with pytest.raises(TypeError):
        conflict_weighted_update(losses, h, "2")


def test_train_seeds_to_loss_matches_one_run_at_a_time():
    """Batched runs equal single runs; each stops at its own threshold crossing; blow-ups are flagged."""
    targets = torch.tensor([1.0, 2.0, 4.0])

    def loss(p):
        return 0.5 * (p["w"] ** 2).sum()

    def step(p, u):
        return {"w": p["w"] * 0.9 + 0.0 * u}

    params = {"w": targets.view(3, 1).repeat(1, 2)}
    out = train_seeds_to_loss(step, params, loss, [0, 1, 2], threshold=0.1, max_steps=100, every=5,
                              record=lambda p: {"l": loss(p)}, progress=False)
    for i, t in enumerate(targets.tolist()):
        k = 0
        while 0.5 * 2 * (t * 0.9**k) ** 2 >= 0.1:
            k += 1
        assert int(out["steps"][i]) == k and bool(out["reached"][i])
        assert torch.allclose(out["params"]["w"][i], torch.full((2,), t * 0.9**k))
        assert float(out["final"]["l"][i]) == pytest.approx(0.5 * 2 * (t * 0.9**k) ** 2, rel=1e-5)
    blow = train_seeds_to_loss(lambda p, u: {"w": p["w"] * 2}, params, loss, [0, 1, 2], threshold=0.1,
                               max_steps=50, progress=False)
    assert bool(blow["diverged"].all()) and not bool(blow["reached"].any())
    assert blow["steps"].tolist() == [2, 2, 2]  # loss × 16 > 10 × initial at the second step
    with pytest.raises(ValueError):
        train_seeds_to_loss(step, params, loss, [0, 1], threshold=0.1, max_steps=5, progress=False)
