"""Tests of ibea_lib.book.landscapes against closed forms."""

import math

import pytest
import torch

import ibea_lib as ib
from ibea_lib.book import landscapes as ls

DT = torch.float64


def test_quadratic_gd_trajectory_closed_form():
    loss = ls.quadratic_2d(1.0, 10.0)
    theta0 = torch.tensor([1.0, 1.0], dtype=DT)
    h, n = 0.05, 7
    traj = ls.gd_trajectory(loss, theta0, h, n)
    expected = torch.tensor([(1 - h) ** n, (1 - 10 * h) ** n], dtype=DT)
    assert traj.shape == (n + 1, 2)
    assert torch.allclose(traj[-1], expected, rtol=1e-12)


def test_quadratic_flow_sampling_closed_form():
    # the chapters sample a flow at the times 0, h, ..., nh as ib.flow_path(...)[::substeps]
    loss = ls.quadratic_2d(2.0, 5.0)
    theta0 = torch.tensor([1.0, -1.0], dtype=DT)
    traj = ib.flow_path(lambda p: -ib.grad(loss, p), theta0, 5 * 0.1, steps=5 * 20)[::20]
    assert traj.shape == (6, 2)
    times = torch.arange(6, dtype=DT)[:, None] * 0.1
    expected = torch.exp(-torch.tensor([2.0, 5.0], dtype=DT) * times) * theta0
    assert torch.allclose(traj, expected, rtol=1e-9)
    assert torch.allclose(traj[-1], torch.tensor([math.exp(-1.0), -math.exp(-2.5)], dtype=DT), rtol=1e-9)


def test_two_parameter_model_minima_and_sharpness():
    loss = ls.two_parameter_model(xi=2.0, eta=3.0)
    theta = torch.tensor([1.5, 1.0], dtype=DT)  # a*b*x = 3 = y
    assert float(loss(theta)) == 0.0
    exact = torch.linalg.eigvalsh(ls.hessian(loss, theta))[-1]
    assert torch.allclose(exact, ls.two_parameter_sharpness(theta, xi=2.0))
    assert torch.allclose(ib.sharpness(loss, theta, iters=100), exact, rtol=1e-6)
    assert float(ls.two_parameter_sharpness(theta, xi=2.0)) == pytest.approx(4 * (1.5**2 + 1.0))


def test_rosenbrock_minimum():
    loss = ls.rosenbrock(a=1.5, b=3.0)
    theta = torch.tensor([1.5, 2.25], dtype=DT)
    assert float(loss(theta)) == 0.0
    assert float(ib.grad(loss, theta).norm()) == 0.0


def test_second_order_field_matches_quadratic_log():
    # For a quadratic the exact modified field is h⁻¹ log(I − hA) θ; its h² term is −(1/3) A³ θ.
    A = torch.diag(torch.tensor([1.0, 3.0], dtype=DT))
    loss = ls.quadratic_2d(1.0, 3.0)
    theta = torch.tensor([0.7, -0.4], dtype=DT)
    h = 0.01
    f = ls.gd_field_second_order(loss, theta, h)
    expected = -(A @ theta) - h / 2 * A @ A @ theta - h**2 / 3 * A @ A @ A @ theta
    assert torch.allclose(f, expected, rtol=1e-12)


def test_second_order_field_local_error_order_four():
    loss = ls.rosenbrock()
    theta = torch.tensor([-0.5, 1.2], dtype=DT)
    lrs = ib.geometric_lrs(0.004, 4)
    errs = ib.local_errors(
        lambda p, h: ib.gd_step(loss, p, h), lambda p, h: ls.gd_field_second_order(loss, p, h), theta, lrs
    )
    assert 3.7 < ib.fit_order(lrs, errs) < 4.3


def test_global_errors_first_order():
    loss = ls.rosenbrock()
    theta = torch.tensor([-0.5, 1.2], dtype=DT)
    lrs = [0.004, 0.002, 0.001]
    errors = ls.global_errors(loss, theta, lrs, 0.2, substeps=4)
    assert isinstance(errors, torch.Tensor) and errors.shape == (3,)
    assert 0.9 < ib.fit_order(lrs, errors) < 1.1
    d = ls.max_distance(torch.zeros(3, 2), torch.ones(3, 2))
    assert d.dim() == 0 and float(d) == pytest.approx(math.sqrt(2))


def test_bad_inputs():
    with pytest.raises(ValueError):
        ls.quadratic_2d(-1.0)
    with pytest.raises(ValueError):
        ls.quadratic_2d()(torch.zeros(3, dtype=DT))
    with pytest.raises(TypeError):
        ls.gd_trajectory(ls.quadratic_2d(), [0.0, 1.0], 0.1, 3)
    with pytest.raises(ValueError):
        ls.global_errors(ls.quadratic_2d(), torch.ones(2, dtype=DT), [0.3], 1.0)
    with pytest.raises(ValueError):
        ls.max_distance(torch.zeros(3, 2), torch.zeros(4, 2))


def test_grid_values():
    X, Y, Z = ls.grid_values(ls.quadratic_2d(1.0, 10.0), (-1, 1), (-2, 2), n=5)
    assert Z.shape == (5, 5)
    assert Z[0, 0] == pytest.approx(0.5 * (1 + 10 * 4))


def test_rosenbrock_hessian_closed_form_matches_autograd():
    gen = torch.Generator().manual_seed(0)
    for b in (3.0, 10.0):
        loss = ls.rosenbrock(a=0.7, b=b)
        for _ in range(3):
            theta = torch.randn(2, generator=gen, dtype=DT)
            assert torch.allclose(ls.rosenbrock_hessian(theta, b=b), ls.hessian(loss, theta), rtol=1e-12)
    # the start point of chapter 01: λ_max ≈ 131.5
    lam = torch.linalg.eigvalsh(ls.rosenbrock_hessian(torch.tensor([-1.2, 1.6], dtype=DT)))[-1]
    assert float(lam) == pytest.approx(65.4 + math.sqrt(45.4**2 + 48**2), rel=1e-9)


def test_modified_2d_matches_core_and_vmaps():
    loss = ls.two_parameter_model(xi=1.5, eta=0.5)
    mod = ls.modified_2d(loss, 0.2)
    points = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    values = torch.func.vmap(mod)(points)
    for p, v in zip(points, values):
        assert torch.allclose(v, ib.modified_loss(loss, p, 0.2), rtol=1e-12)
    X, Y, Z = ls.grid_values(mod, (-1, 1), (-1, 1), n=4)
    assert Z.shape == (4, 4)
