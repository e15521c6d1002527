"""Real modules: BatchNorm, Dropout, LayerNorm and attention, grad modes, meta and inference tensors.

A loss made by ``ib.model_loss`` is a deterministic function of the parameters and never changes
the module: after every public call the buffers (running statistics, counters), the train/eval
flags, the parameters and torch's global RNG state are bit-identical. Derivatives on these models
are checked against explicit float64 Hessians (``torch.autograd.functional``), computed with the
math attention kernel, independently of the library.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from ibea_refs import F64, flat, flat_loss, rel_err
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import ibea_lib as ib

LR = 0.1


def mse(out, target):
    return ((out - target) ** 2).mean()


class Net(nn.Module):
    """Linear → norm → tanh → dropout → linear, on inputs of shape (n, 3)."""

    def __init__(self, norm: str = "batch", p: float = 0.0):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4) if norm == "batch" else nn.LayerNorm(4)
        self.drop = nn.Dropout(p)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.drop(torch.tanh(self.norm(self.a(x)))))


class Attention(nn.Module):
    """A TransformerEncoderLayer (or a bare MultiheadAttention) and a linear read-out."""

    def __init__(self, kind: str = "encoder", dropout: float = 0.0):
        super().__init__()
        if kind == "encoder":
            self.body = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=dropout, batch_first=True)
        else:
            self.body = nn.MultiheadAttention(4, 2, dropout=dropout, batch_first=True)
        self.kind = kind
        self.out = nn.Linear(4, 1)

    def forward(self, x):
        z = self.body(x) if self.kind == "encoder" else self.body(x, x, x, need_weights=False)[0]
        return self.out(z).mean(1)


def build(make, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().to(F64)


def data(shape, out=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64), torch.randn(shape[0], out, generator=gen, dtype=F64)


def module_state(model):
    """Everything a call could change: parameters, buffers, modes, global RNGs."""
    return {
        "params": {k: (v.detach().clone(), v._version) for k, v in model.named_parameters()},
        "buffers": {k: (v.clone(), v._version) for k, v in model.named_buffers()},
        "modes": [m.training for m in model.modules()],
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state()[1].copy(),
    }


def assert_same_state(model, before):
    after = module_state(model)
    for kind in ("params", "buffers"):
        assert before[kind].keys() == after[kind].keys()
        for k, (value, version) in before[kind].items():
            assert torch.equal(after[kind][k][0], value), f"{kind} {k} changed"
            assert after[kind][k][1] == version, f"{kind} {k} was written in place"
    assert before["modes"] == after["modes"], "a module's train/eval mode changed"
    assert torch.equal(before["torch_rng"], after["torch_rng"]), "torch's global RNG advanced"
    assert before["python_rng"] == after["python_rng"]
    assert np.array_equal(before["numpy_rng"], after["numpy_rng"])


def autograd_grad(f):
    """θ ↦ ∇f(θ) by plain torch.autograd (one backward pass)."""

    def g(theta):
        theta = theta.detach().requires_grad_(True)
        return torch.autograd.grad(f(theta), theta)[0]

    return g


def every_call(Ls, p):
    """Every public call that evaluates losses, on two losses Ls and params p."""
    v = ib.pytree.tree_map(torch.ones_like, p)
    return {
        "grad": lambda: ib.grad(Ls[0], p),
        "value_and_grad": lambda: ib.value_and_grad(Ls[0], p),
        "hvp": lambda: ib.hvp(Ls[0], p, v),
        "sharpness": lambda: ib.sharpness(Ls[0], p, iters=2),
        "lie_bracket": lambda: ib.lie_bracket(Ls[0], Ls[1], p),
        "alignment": lambda: ib.alignment(Ls[0], Ls[1], p),
        "cosine": lambda: ib.cosine(Ls[0], Ls[1], p),
        "modified_loss": lambda: ib.modified_loss(Ls[0], p, LR),
        "multitask_terms": lambda: ib.multitask_terms(Ls, p, LR),
        "multitask_field": lambda: ib.multitask_field(Ls, p, LR),
        "gd_field": lambda: ib.gd_field(Ls[0], p, LR),
        "sequential_field": lambda: ib.sequential_field(Ls, p, LR),
        "order_averaged_field": lambda: ib.order_averaged_field(Ls, p, LR),
        "bracket_sum": lambda: ib.bracket_sum(Ls, p),
        "conflict_free_loss": lambda: ib.conflict_free_loss(Ls, p, LR),
        "sgd_modified_loss": lambda: ib.sgd_modified_loss(Ls, p, LR),
        "bracket_correction": lambda: ib.bracket_correction(Ls, p, LR),
        "bracket_corrected_steps": lambda: ib.bracket_corrected_steps(Ls, p, LR),
        "gd_step": lambda: ib.gd_step(Ls[0], p, LR),
        "sequential_steps": lambda: ib.sequential_steps(Ls, p, LR),
        "order_gap": lambda: ib.order_gap(Ls[0], Ls[1], p, LR),
        "flow": lambda: ib.flow(lambda q: ib.gd_field(Ls[0], q, LR), p, LR, steps=1),
        "task_metrics": lambda: ib.book.multitask.task_metrics(Ls, p),
    }


CALL_NAMES = sorted(every_call([None, None], {"w": torch.zeros(1)}))


def two_losses(model, shape, out=2, seed=None):
    (x1, y1), (x2, y2) = data(shape, out, seed=1), data(shape, out, seed=2)
    return [ib.model_loss(model, mse, x1, y1, seed=seed), ib.model_loss(model, mse, x2, y2, seed=seed)]


MODELS = {
    "batchnorm-train": (lambda: Net("batch"), "train", (6, 3), 2),
    "batchnorm-eval": (lambda: Net("batch"), "eval", (6, 3), 2),
    "layernorm-train": (lambda: Net("layer"), "train", (6, 3), 2),
    "dropout-train-seeded": (lambda: Net("batch", p=0.3), "train", (6, 3), 2),
    "encoder-eval": (lambda: Attention("encoder"), "eval", (3, 5, 4), 1),
    "encoder-train-seeded": (lambda: Attention("encoder", dropout=0.2), "train", (3, 5, 4), 1),
    "mha-eval": (lambda: Attention("mha"), "eval", (3, 5, 4), 1),
    "mha-train-seeded": (lambda: Attention("mha", dropout=0.2), "train", (3, 5, 4), 1),
}


def problem(name):
    make, mode, shape, out = MODELS[name]
    model = build(make)
    model.train(mode == "train")
    # run a few forward passes first so that BatchNorm's running statistics are not trivial
    if mode == "train" and any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
        with torch.no_grad():
            model.eval()
            for k in range(3):
                model.train()
                model(data(shape, out, seed=10 + k)[0])
    seed = 7 if "seeded" in name else None
    return model, two_losses(model, shape, out, seed=seed)


# the models whose state a call could change: BatchNorm buffers, Dropout masks (module and attention)
STATEFUL = ["batchnorm-train", "dropout-train-seeded", "encoder-train-seeded"]


@pytest.mark.parametrize("model_name", STATEFUL)
@pytest.mark.parametrize("call", CALL_NAMES)
def test_calls_leave_the_module_and_the_rngs_unchanged(model_name, call):
    model, Ls = problem(model_name)
    for p in (ib.params_of(model), dict(model.named_parameters())):
        before = module_state(model)
        result = every_call(Ls, p)[call]()
        if p is not None and any(t.requires_grad for t in p.values()):
            model.zero_grad(set_to_none=True)  # differentiable results hold graphs; nothing was accumulated
        assert all(t.grad is None for t in model.parameters())
        assert_same_state(model, before)
        del result


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_losses_are_deterministic_and_match_explicit_hessians(model_name):
    model, Ls = problem(model_name)
    p = ib.params_of(model)
    assert torch.equal(Ls[0](p), Ls[0](p))
    assert ib.norm(ib.lie_bracket(Ls[0], Ls[0], p)) == 0  # exactly, for the same loss object
    twin = ib.model_loss(model, Ls[0].criterion, Ls[0].inputs, Ls[0].targets, seed=Ls[0].seed)
    size = ib.norm(ib.hvp(Ls[0], p, ib.grad(Ls[0], p)))  # ‖H g‖, the scale of each half
    assert ib.norm(ib.lie_bracket(Ls[0], twin, p)) < 1e-14 * size  # an equal loss: zero to round-off
    # References by another autodiff mode than the library's reverse-over-reverse: forward over
    # reverse (torch.func.jvp of torch.func.grad of the flat loss). PyTorch has no forward AD for
    # CPU attention kernels (and torch.func draws attention dropout differently), so for attention
    # models H·u is a central difference of plain torch.autograd gradients.
    theta = flat(p)
    attention = "encoder" in model_name or "mha" in model_name
    fg = [(autograd_grad if attention else torch.func.grad)(flat_loss(f, p)) for f in Ls]
    tol = 1e-7 if attention else 1e-10

    def H(k, u):
        if attention:
            eps = 1e-5 / float(u.norm())
            return (fg[k](theta + eps * u) - fg[k](theta - eps * u)) / (2 * eps)
        return torch.func.jvp(fg[k], (theta,), (u,))[1]

    g = [f(theta) for f in fg]
    v = torch.linspace(-1, 1, theta.numel(), dtype=F64)
    assert rel_err(ib.grad(Ls[0], p), g[0]) < 1e-12
    assert rel_err(ib.hvp(Ls[0], p, ib.unflatten(v, p)), H(0, v)) < tol
    assert rel_err(ib.lie_bracket(Ls[0], Ls[1], p), H(1, g[0]) - H(0, g[1])) < tol
    expected = -(g[0] + g[1]) - (LR / 2) * (H(0, g[0]) + H(1, g[1])) + (LR / 2) * (H(1, g[0]) - H(0, g[1]))
    assert rel_err(ib.sequential_field(Ls, p, LR), expected) < tol


def test_batchnorm_in_train_mode_uses_batch_statistics():
    model, Ls = problem("batchnorm-train")
    p = ib.params_of(model)
    x, y = Ls[0].inputs, Ls[0].targets
    by_hand = model.b(
        torch.tanh(
            nn.functional.batch_norm(
                model.a(x), None, None, model.norm.weight, model.norm.bias, training=True
            )
        )
    )
    assert torch.allclose(Ls[0](p), mse(by_hand, y), rtol=1e-14, atol=0)
    model.eval()  # eval mode: the running statistics, also taken from the module
    by_hand = model.b(torch.tanh(model.norm(model.a(x))))
    assert torch.allclose(Ls[0](p), mse(by_hand, y), rtol=1e-14, atol=0)


def test_dropout_in_train_mode_needs_a_seed():
    model = build(lambda: Net("layer", p=0.5))
    x, y = data((6, 3))
    loss = ib.model_loss(model, mse, x, y)
    before = torch.get_rng_state()
    with pytest.raises(RuntimeError, match=r"random numbers.*model\.eval\(\).*seed="):
        ib.grad(loss, ib.params_of(model))
    assert torch.equal(before, torch.get_rng_state())
    model.eval()  # in eval mode, Dropout draws nothing: no seed needed
    ib.grad(loss, ib.params_of(model))
    model.train()
    seeded = ib.model_loss(model, mse, x, y, seed=3)
    other = ib.model_loss(model, mse, x, y, seed=4)
    p = ib.params_of(model)
    assert torch.equal(seeded(p), seeded(p)) and not torch.equal(seeded(p), other(p))
    with torch.random.fork_rng(devices=[]):  # the seeded mask is the mask torch.manual_seed(3) draws
        torch.manual_seed(3)
        assert torch.equal(seeded(p), mse(model(x), y))


@pytest.mark.parametrize("kind", ["encoder", "mha"])
def test_attention_dropout_in_train_mode_needs_a_seed(kind):
    model = build(lambda: Attention(kind, dropout=0.3))
    x, y = data((3, 5, 4), 1)
    with pytest.raises(RuntimeError, match="random numbers"):
        ib.hvp(ib.model_loss(model, mse, x, y), ib.params_of(model), ib.params_of(model))


@pytest.mark.parametrize(
    "backend", [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
)
def test_the_callers_attention_kernel_setting_is_restored(backend):
    model, Ls = problem("encoder-eval")
    with sdpa_kernel([backend, SDPBackend.MATH]):
        flags = (
            torch.backends.cuda.flash_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled(),
            torch.backends.cuda.math_sdp_enabled(),
        )
        ib.lie_bracket(Ls[0], Ls[1], ib.params_of(model))
        ib.modified_loss(Ls[0], dict(model.named_parameters()), LR).backward()
        assert flags == (
            torch.backends.cuda.flash_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled(),
            torch.backends.cuda.math_sdp_enabled(),
        )


# ----- grad modes, meta and inference tensors, and what to pass ------------------------------


@pytest.mark.parametrize("call", CALL_NAMES)
def test_every_call_works_under_no_grad(call):
    model, Ls = problem("batchnorm-train")
    p = ib.params_of(model)
    reference = every_call(Ls, p)[call]()
    with torch.no_grad():
        result = every_call(Ls, p)[call]()
    assert type(result) is type(reference)
    if isinstance(result, torch.Tensor):
        assert torch.equal(result, reference) and not result.requires_grad
    elif isinstance(result, dict) and all(isinstance(t, torch.Tensor) for t in result.values()):
        assert all(torch.equal(result[k], reference[k]) for k in reference)


@pytest.mark.parametrize("call", CALL_NAMES)
def test_every_call_under_inference_mode_says_what_to_do(call):
    model, Ls = problem("batchnorm-eval")
    p = ib.params_of(model)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inference_mode.*torch\.no_grad"):
        every_call(Ls, p)[call]()


def test_inference_tensors_as_params_say_what_to_do():
    model, Ls = problem("batchnorm-eval")
    with torch.inference_mode():
        p = ib.params_of(model)
    with pytest.raises(RuntimeError, match=r"inference tensor.*clone"):
        ib.grad(Ls[0], p)
    ib.grad(Ls[0], {k: t.clone() for k, t in p.items()})  # the advice works


def test_meta_tensors_get_a_clear_error():
    with torch.device("meta"):
        model = nn.Linear(3, 2)
    loss = ib.model_loss(model, lambda out, y: out.sum(), torch.zeros(1, 3, device="meta"), None)
    with pytest.raises(ValueError, match="meta tensor.*to_empty"):
        ib.grad(loss, dict(model.named_parameters()))
    with pytest.raises(ValueError, match="meta tensor"):
        ib.hvp(lambda p: (p**2).sum(), torch.zeros(3, device="meta"), torch.zeros(3, device="meta"))


@pytest.mark.parametrize(
    "bad", ["parameters", "named_parameters", "module", "list"], ids=lambda s: f"params={s}"
)
def test_passing_the_wrong_thing_for_params_says_what_to_pass(bad):
    model, Ls = problem("layernorm-train")
    params = {
        "parameters": model.parameters(),
        "named_parameters": model.named_parameters(),
        "module": model,
        "list": list(model.parameters()),
    }[bad]
    hint = r"dict\(model\.named_parameters\(\)\).*ib\.params_of\(model\)"
    for fn in (
        lambda: ib.grad(Ls[0], params),
        lambda: ib.modified_loss(Ls[0], params, LR),
        lambda: ib.lie_bracket(Ls[0], Ls[1], params),
        lambda: ib.conflict_free_loss(Ls, params, LR),
        lambda: ib.flow(lambda q: q, params, 1.0),
    ):
        with pytest.raises(TypeError, match=hint):
            fn()


def test_params_of_and_load_params_take_only_modules():
    model, _ = problem("layernorm-train")
    with pytest.raises(TypeError, match="torch.nn.Module.*not model.parameters"):
        ib.params_of(model.parameters())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ib.load_params(dict(model.named_parameters()), ib.params_of(model))
    with pytest.raises(TypeError, match="named_parameters"):
        ib.load_params(model, model.parameters())


def test_load_params_writes_nothing_when_a_key_or_shape_is_wrong():
    model, _ = problem("layernorm-train")
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    good = {k: v + 1 for k, v in before.items()}
    for bad in ({**good, "nope": torch.zeros(1)}, {**good, "b.bias": torch.zeros(3, dtype=F64)}):
        with pytest.raises(ValueError, match="not parameters of the model|has shape"):
            ib.load_params(model, bad)
        assert all(torch.equal(v, before[k]) for k, v in model.named_parameters())
    ib.load_params(model, good)
    assert all(torch.equal(v, good[k]) for k, v in model.named_parameters())


def test_model_loss_is_a_small_callable_object():
    model, Ls = problem("layernorm-train")
    loss = Ls[0]
    assert isinstance(loss, ib.ModelLoss) and loss.model is model and loss.seed is None
    assert "ModelLoss" in repr(loss) and "tensor(" not in repr(loss)
    with pytest.raises(TypeError, match="dict"):
        loss(torch.zeros(3))
    with pytest.raises(ValueError, match="not parameters of the model"):
        loss({"nope": torch.zeros(1)})
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ib.model_loss(lambda x: x, mse, None, None)
    with pytest.raises(TypeError, match="seed must be an int"):
        ib.model_loss(model, mse, None, None, seed=1.5)


def test_models_do_not_touch_the_global_rng():
    before = torch.get_rng_state()
    a = ib.models.mlp([3, 5, 2], seed=4)
    heads = ib.models.MultiHeadMLP([3, 5], [2, 3], seed=4)
    assert torch.equal(before, torch.get_rng_state())
    b = ib.models.mlp([3, 5, 2], seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    with torch.random.fork_rng(devices=[]):  # the same weights as torch.manual_seed(seed) then build
        torch.manual_seed(4)
        ref = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
        torch.manual_seed(4)
        trunk, head0 = nn.Linear(3, 5), nn.Linear(5, 2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), ref.parameters()))
    assert torch.equal(heads.trunk[0][0].weight, trunk.weight)
    assert torch.equal(heads.heads[0].weight, head0.weight)
