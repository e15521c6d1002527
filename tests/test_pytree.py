"""The pytree helpers (a tensor or a dict of tensors) and edge cases of losses with H = 0."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ibea_refs import F64, same_structure

import ibea_lib as ib
from ibea_lib import pytree as pt

seeds = st.integers(min_value=0, max_value=2**31 - 1)
reals = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False, allow_infinity=False)


def random_tree(seed: int, kind: str):
    gen = torch.Generator().manual_seed(seed)
    if kind == "tensor":
        return torch.randn(2, 3, generator=gen, dtype=F64)
    return {"w": torch.randn(2, 3, generator=gen, dtype=F64), "b": torch.randn(4, generator=gen, dtype=F64)}


def as_vec(tree) -> torch.Tensor:
    """Flatten by hand (independently of ib.flatten)."""
    if isinstance(tree, torch.Tensor):
        return tree.reshape(-1)
    return torch.cat([tree[k].reshape(-1) for k in tree])


@settings(max_examples=25, deadline=None)
@given(seed=seeds, kind=st.sampled_from(["tensor", "dict"]), a=reals, c=reals)
def test_linear_algebra_matches_flat_vectors(seed, kind, a, c):
    x, y = random_tree(seed, kind), random_tree(seed + 1, kind)
    vx, vy = as_vec(x), as_vec(y)
    for result, expected in [
        (ib.add(x, y), vx + vy),
        (ib.sub(x, y), vx - vy),
        (ib.scale(x, a), a * vx),
        (ib.add(y, x, alpha=c), c * vx + vy),
        (ib.zeros_like(x), torch.zeros_like(vx)),
        (ib.clone(x), vx),
    ]:
        same_structure(result, x)
        assert torch.allclose(as_vec(result), expected, rtol=1e-14, atol=1e-14)
    assert float(ib.dot(x, y)) == pytest.approx(float(vx @ vy), rel=1e-12, abs=1e-12)
    assert float(ib.norm(x)) == pytest.approx(float(vx.norm()), rel=1e-12)
    assert torch.equal(ib.flatten(x), vx)
    back = ib.unflatten(ib.flatten(x), x)
    same_structure(back, x)
    assert torch.equal(as_vec(back), vx)


def test_clone_is_detached_and_independent():
    x = {"w": torch.ones(2, dtype=F64, requires_grad=True)}
    c = ib.clone(x)
    assert not c["w"].requires_grad
    c["w"].add_(1.0)
    assert torch.equal(x["w"].detach(), torch.ones(2, dtype=F64))


def test_dict_order_is_kept():
    x = {"z": torch.zeros(1, dtype=F64), "a": torch.ones(2, dtype=F64)}
    assert list(ib.add(x, x)) == ["z", "a"]
    assert torch.equal(ib.flatten(x), torch.tensor([0.0, 1.0, 1.0], dtype=F64))


def test_unflatten_rejects_a_wrong_length():
    with pytest.raises(ValueError, match="expected a 1-D tensor of 10 entries"):
        ib.unflatten(torch.zeros(9), random_tree(0, "dict"))
    with pytest.raises(ValueError, match="1-D"):
        ib.unflatten(torch.zeros(2, 5), random_tree(0, "dict"))


def test_structure_mismatch_in_add():
    with pytest.raises(ValueError, match="missing"):
        ib.add(random_tree(0, "dict"), {"w": torch.zeros(2, 3, dtype=F64)})
    with pytest.raises(ValueError, match="same structure"):
        ib.add(random_tree(0, "dict"), random_tree(0, "tensor"))
    with pytest.raises(ValueError, match=r"a\['w'\] has shape"):
        ib.dot(random_tree(0, "dict"), {"w": torch.zeros(3, 2, dtype=F64), "b": torch.zeros(4, dtype=F64)})


def test_check_lr():
    assert pt.check_lr(1) == 1.0 and isinstance(pt.check_lr(1), float)
    assert pt.check_lr(torch.tensor([0.5])) == 0.5
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be"):
            pt.check_lr(bad)
    with pytest.raises(TypeError, match="real number, got NoneType"):
        pt.check_lr(None)


# ----- losses whose Hessian vanishes ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["tensor", "dict"])
def test_linear_loss_has_zero_hessian_terms(kind):
    """For a linear loss every Hessian term is 0 (and must not raise)."""
    p = random_tree(0, kind)
    c = random_tree(1, kind)
    f = lambda q: ib.dot(q, c)
    g = lambda q: 2.0 * ib.dot(q, c) + 1.0
    zero = ib.zeros_like(p)
    v = random_tree(2, kind)
    for out in (ib.hvp(f, p, v), ib.lie_bracket(f, g, p)):
        same_structure(out, p)
        assert torch.equal(as_vec(out), as_vec(zero))
    # the fields reduce to −Σ∇L_i
    minus_c = ib.scale(c, -1.0)
    assert torch.allclose(as_vec(ib.gd_field(f, p, 0.1)), as_vec(minus_c), rtol=0, atol=1e-15)
    seq = ib.sequential_field([f, f], p, 0.1)
    assert torch.allclose(as_vec(seq), 2 * as_vec(minus_c), rtol=0, atol=1e-15)


def test_hvp_of_a_loss_linear_in_a_subset_of_params():
    """Only the bias enters linearly: the bias block of H v vanishes, the rest does not."""
    p = {"w": torch.tensor([1.0, 2.0], dtype=F64), "b": torch.tensor([0.5], dtype=F64)}
    f = lambda q: (q["w"] ** 3).sum() + 3.0 * q["b"].sum()
    hv = ib.hvp(f, p, {"w": torch.ones(2, dtype=F64), "b": torch.ones(1, dtype=F64)})
    assert torch.equal(hv["b"], torch.zeros(1, dtype=F64))
    assert torch.allclose(hv["w"], 6 * p["w"])
    # only the bias as params: the Hessian with respect to it is 0
    only_b = lambda q: 3.0 * q["b"].sum() + (p["w"] ** 3).sum()
    hv_b = ib.hvp(only_b, {"b": p["b"]}, {"b": torch.ones(1, dtype=F64)})
    assert torch.equal(hv_b["b"], torch.zeros(1, dtype=F64))
