"""Training loops: the explicit regularizers with an ``nn.Module`` and ``torch.optim`` optimizers.

Each objective's ``.backward()`` on ``dict(model.named_parameters())`` must fill ``.grad`` with the
gradient of its formula (checked against gradients and HVPs at a detached copy), one optimizer
step must equal the functional update, and the runnable example of ``book/api.md`` must run.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import torch
from ibea_refs import F64, rel_err
from torch import nn

import ibea_lib as ib

H = 0.1
ROOT = pathlib.Path(__file__).resolve().parents[1]


def mse(out, target):
    return ((out - target) ** 2).mean()


def setup(n_tasks=3, norm=False):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers = [nn.Linear(3, 5), nn.LayerNorm(5) if norm else nn.Identity(), nn.Tanh(), nn.Linear(5, 2)]
        model = nn.Sequential(*layers).to(F64)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(n_tasks):
        x, y = torch.randn(8, 3, generator=gen, dtype=F64), torch.randn(8, 2, generator=gen, dtype=F64)
        losses.append(ib.model_loss(model, mse, x, y))
    return model, losses


def grads_of(model):
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_modified_loss_backward_is_the_gradient_of_the_modified_loss():
    model, Ls = setup(norm=True)
    theta = ib.params_of(model)
    g = ib.grad(Ls[0], theta)
    expected = ib.add(g, ib.hvp(Ls[0], theta, g), alpha=H / 2)  # ∇(L + (h/4)‖∇L‖²) = g + (h/2) H g
    ib.modified_loss(Ls[0], dict(model.named_parameters()), lr=H).backward()
    assert rel_err(grads_of(model), expected) < 1e-12


def test_conflict_free_and_sgd_regularizers_backward():
    model, Ls = setup()
    theta = ib.params_of(model)
    gs = [ib.grad(f, theta) for f in Ls]
    # ∇ Σ_{i<j} ⟨g_i, g_j⟩ = Σ_i H_i Σ_{j≠i} g_j
    total = ib.pytree.sum_trees(gs)
    conflict = ib.pytree.sum_trees([ib.hvp(f, theta, ib.sub(total, g)) for f, g in zip(Ls, gs)])
    ib.conflict_free_loss(Ls, dict(model.named_parameters()), lr=H).backward()
    assert rel_err(grads_of(model), ib.add(total, conflict, alpha=-H / 2)) < 1e-12
    model.zero_grad()
    m = len(Ls)
    flat = ib.pytree.sum_trees([ib.hvp(f, theta, g) for f, g in zip(Ls, gs)])
    ib.sgd_modified_loss(Ls, dict(model.named_parameters()), lr=H).backward()
    expected = ib.add(ib.scale(total, 1 / m), flat, alpha=H / (2 * m))
    assert rel_err(grads_of(model), expected) < 1e-12


@pytest.mark.parametrize("optimizer", ["SGD", "Adam", "AdamW"])
def test_one_optimizer_step_on_an_objective(optimizer):
    """With any optimizer, the step is the optimizer's step on the objective's gradient."""
    model, Ls = setup()
    twin, _ = setup()
    opt = getattr(torch.optim, optimizer)(model.parameters(), lr=0.01)
    opt_twin = getattr(torch.optim, optimizer)(twin.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        ib.conflict_free_loss(Ls, dict(model.named_parameters()), lr=H).backward()
        opt.step()
        # the twin: the same gradient, computed functionally and written in by hand
        g = ib.grad(lambda p: ib.conflict_free_loss(Ls, p, H), ib.params_of(twin))
        opt_twin.zero_grad()
        for k, p in twin.named_parameters():
            p.grad = g[k].clone()
        opt_twin.step()
    assert rel_err(ib.params_of(model), ib.params_of(twin)) < 1e-12


def test_bracket_corrected_sweep_with_an_optimizer_equals_the_functional_update():
    model, Ls = setup()
    theta0 = ib.params_of(model)
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=H)
    for loss in Ls:  # one step per task
        opt.zero_grad()
        loss(params).backward()
        opt.step()
    opt.zero_grad()
    ib.accumulate_grad(params, ib.bracket_correction(Ls, params, lr=H))
    opt.step()
    expected = ib.bracket_corrected_steps(Ls, theta0, H, at="end")
    assert rel_err(ib.params_of(model), expected) < 1e-13
    # the correction is (h/2) Σ_{i<j}[∇L_i, ∇L_j]
    brackets = ib.pytree.sum_trees(
        [ib.lie_bracket(Ls[i], Ls[j], theta0) for i in range(3) for j in range(i + 1, 3)]
    )
    assert rel_err(ib.bracket_correction(Ls, theta0, H), ib.scale(brackets, H / 2)) < 1e-12


def test_accumulate_grad_adds_like_backward_and_checks_its_inputs():
    model, Ls = setup()
    params = dict(model.named_parameters())
    d = ib.grad(Ls[0], ib.params_of(model))
    ib.accumulate_grad(params, d)  # creates .grad
    Ls[0](params).backward()  # adds to it
    assert rel_err(grads_of(model), ib.scale(d, 2.0)) < 1e-14
    with pytest.raises(ValueError, match="leaf that requires grad"):
        ib.accumulate_grad(ib.params_of(model), d)
    with pytest.raises(ValueError, match="keys"):
        ib.accumulate_grad(params, {"x": torch.zeros(1)})
    with pytest.raises(TypeError, match=r"dict\(model\.named_parameters\(\)\)"):
        ib.accumulate_grad(model.parameters(), d)


def test_objectives_on_the_models_tensors_leave_no_grad_behind_unless_backward():
    model, Ls = setup()
    params = dict(model.named_parameters())
    for objective in (
        ib.modified_loss(Ls[0], params, H),
        ib.conflict_free_loss(Ls, params, H),
        ib.sgd_modified_loss(Ls, params, H),
        ib.multitask_terms(Ls, params, H)["modified"],
    ):
        assert objective.requires_grad and objective.dim() == 0
    assert all(p.grad is None for p in model.parameters())


def test_the_api_page_example_runs():
    """Every ```python block of book/api.md, in order, in one namespace (they assert what they claim)."""
    text = (ROOT / "book" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "book/api.md has no runnable example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "book/api.md", "exec"), namespace)


def test_implicit_penalty_and_conflict_term_in_an_adam_loop():
    import torch.nn.functional as F
    model = ib.models.mlp([4, 6, 3], seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (20,), generator=gen)
    loss = ib.model_loss(model, F.cross_entropy, x, y)
    tasks = [ib.model_loss(model, F.cross_entropy, x[:10], y[:10]),
             ib.model_loss(model, F.cross_entropy, x[10:], y[10:])]
    p = ib.params_of(model)
    h = 0.3
    g = ib.grad(loss, p)
    assert torch.allclose(ib.implicit_penalty(loss, p, h), (h / 4) * ib.dot(g, g), rtol=1e-13)
    terms = ib.multitask_terms(tasks, p, h)
    assert torch.allclose(ib.implicit_penalty(tasks, p, h), terms["flatness"] + terms["conflict"], rtol=1e-13)
    assert torch.allclose(ib.conflict_term(tasks, p, h), terms["conflict"], rtol=1e-13)
    with pytest.raises(ValueError, match="two task losses"):
        ib.conflict_term([loss], p, h)
    with pytest.raises(ValueError, match="not an optimizer's learning rate"):
        ib.implicit_penalty(loss, p, -1e-3)
    own = dict(model.named_parameters())
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    adam.zero_grad()
    (loss(own) + ib.implicit_penalty(loss, own, lr=h)).backward()
    got = {k: t.grad.clone() for k, t in own.items()}
    field = ib.gd_field(loss, p, h)  # −∇(L + (h/4)‖∇L‖²)
    assert float(ib.norm(ib.add(got, field)) / ib.norm(field)) < 1e-12
    adam.step()


def test_batchnorm_buffers_are_never_updated_through_ib_losses_and_update_buffers_does():
    import torch.nn.functional as F
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(),
                                torch.nn.Linear(6, 3)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    loss = ib.model_loss(model, F.cross_entropy, x, y)
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: b.clone() for k, b in model.named_buffers()}
    for _ in range(3):
        opt.zero_grad()
        ib.modified_loss(loss, params, lr=0.1).backward()
        opt.step()
    assert all(torch.equal(b, before[k]) for k, b in model.named_buffers())  # by design
    model.eval()
    ib.update_buffers(model, x)
    assert not model.training and not model[1].training  # the mode is restored
    assert int(model[1].num_batches_tracked) == 1
    assert not torch.equal(model[1].running_mean, before["1.running_mean"])
    with pytest.raises(TypeError, match="nn.Module"):
        ib.update_buffers(dict(model.named_parameters()), x)
