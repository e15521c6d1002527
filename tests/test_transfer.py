"""The bracket tournament (ibea_lib.transfer): against a dense float64 Hessian and against simulation."""

import itertools

import pytest
import torch

import ibea_lib as ib
from ibea_lib.data import quadratic_loss, random_quadratic

D, N = 5, 5


def quadratic_tasks(n=N, d=D, first_seed=200):
    pairs = [random_quadratic(d, first_seed + i) for i in range(n)]
    return pairs, [quadratic_loss(A, b) for A, b in pairs]


def test_matches_a_dense_hessian_reference_on_a_network():
    torch.manual_seed(0)
    net = ib.models.mlp([3, 4, 2], "tanh", seed=7, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    mse = torch.nn.functional.mse_loss
    losses = [
        ib.model_loss(
            net,
            mse,
            torch.randn(6, 3, generator=gen, dtype=torch.float64),
            torch.randn(6, 2, generator=gen, dtype=torch.float64),
        )
        for _ in range(4)
    ]
    target = losses[0]
    theta = ib.flatten(ib.params_of(net))

    def flat(loss):
        return lambda v: loss(ib.unflatten(v, ib.params_of(net)))

    params = ib.params_of(net)
    m = ib.bracket_matrix(losses[1:], params, target=target, time=0.3)
    gt = torch.func.grad(flat(target))(theta)
    gs = [torch.func.grad(flat(loss))(theta) for loss in losses[1:]]
    hs = [torch.func.hessian(flat(loss))(theta) for loss in losses[1:]]
    for i, j in itertools.product(range(3), range(3)):
        ref = 0.09 * float(gt @ (hs[j] @ gs[i] - hs[i] @ gs[j]))
        assert abs(float(m[i, j]) - ref) <= 1e-10 * (1 + abs(ref))
        # the same as the library's bracket vector
        via_bracket = 0.09 * float(
            ib.dot(ib.grad(target, params), ib.lie_bracket(losses[1 + i], losses[1 + j], params))
        )
        assert abs(float(m[i, j]) - via_bracket) <= 1e-10 * (1 + abs(ref))
    assert torch.allclose(m, -m.T) and bool((m.diagonal() == 0).all())


def test_pairwise_gaps_agree_with_two_step_simulation_to_order_h2():
    _, losses = quadratic_tasks()
    target = quadratic_loss(*random_quadratic(D, 300))
    theta = torch.randn(D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    errors = []
    hs = [0.02, 0.01, 0.005]
    for h in hs:
        m = ib.bracket_matrix(losses, theta, target=target, time=h)
        err = 0.0
        for i, j in itertools.permutations(range(N), 2):
            sim = float(target(ib.sequential_steps([losses[i], losses[j]], theta, h)))
            sim -= float(target(ib.sequential_steps([losses[j], losses[i]], theta, h)))
            assert (sim > 0) == (float(m[i, j]) > 0)
            err = max(err, abs(sim - float(m[i, j])) / h**2)
        errors.append(err)
    # gap = h²⟨∇L_T, [∇L_i, ∇L_j]⟩ + O(h³): the error of (gap / h²) shrinks like h
    assert ib.fit_order(hs, errors) == pytest.approx(1.0, abs=0.1)


def test_sequence_score_predicts_the_order_of_whole_sequences():
    _, losses = quadratic_tasks(n=4)
    target = quadratic_loss(*random_quadratic(D, 301))
    theta = torch.randn(D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    h = 0.003
    m = ib.bracket_matrix(losses, theta, target=target, time=h)
    orders = list(itertools.permutations(range(4)))
    sim = torch.tensor([float(target(ib.sequential_steps(losses, theta, h, order=list(p)))) for p in orders])
    pred = torch.tensor([ib.sequence_score(m, p) for p in orders])
    # differences between orders match to O(h³) (relative error O(h))
    d_sim, d_pred = sim - sim.mean(), pred - pred.mean()
    assert float((d_sim - d_pred).abs().max()) < 0.05 * float(d_sim.abs().max())
    best = ib.rank_by_bracket(m)
    assert tuple(best) == orders[int(sim.argmin())]
    # beyond exact_up_to: ordering by row sums; consistent with the exact search here
    assert sorted(ib.rank_by_bracket(m, exact_up_to=1)) == [0, 1, 2, 3]


def test_argument_checks():
    _, losses = quadratic_tasks(n=2)
    theta = torch.zeros(D, dtype=torch.float64)
    with pytest.raises(ValueError):
        ib.bracket_matrix(losses, theta, target=losses[0], time=0.0)
    with pytest.raises(TypeError):
        ib.bracket_matrix(losses, theta, target=None)
    with pytest.raises(ValueError):
        ib.sequence_score(torch.zeros(3, 3), [0, 1])
    with pytest.raises(ValueError):
        ib.rank_by_bracket(torch.zeros(2, 3))
