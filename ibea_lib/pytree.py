"""Parameters as small pytrees: a single tensor, or a dict of named tensors.

Every function in :mod:`ibea_lib` takes ``params`` in one of these two forms and returns
vectors of the same form (same keys, shapes, dtypes and device). The helpers here do the
linear algebra on such vectors, so that formulas read like the math:
``add(g, scale(hv, lr / 2))`` is ``g + (h/2) H g``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

Params = Tensor | Mapping[str, Tensor]
"""A single tensor or a dict ``{name: tensor}`` (for instance a model's named parameters)."""


def tensors(params: Params) -> list[Tensor]:
    """The tensors of ``params`` in a fixed order (dict order for dicts)."""
    if isinstance(params, Tensor):
        return [params]
    if isinstance(params, Mapping):
        return list(params.values())
    raise TypeError(not_params_message("params", params))


def not_params_message(name: str, value: object) -> str:
    """The error message for a ``params`` that is neither a tensor nor a dict of tensors."""
    got = type(value).__name__
    if isinstance(value, torch.nn.Module):
        got = "a torch.nn.Module"
    elif isinstance(value, Iterator):
        got = f"an iterator ({got}, e.g. model.parameters())"
    return (
        f"{name} must be a torch.Tensor or a dict of tensors, got {got}; for a model pass "
        "dict(model.named_parameters()) (to train it) or ib.params_of(model) (a detached copy)"
    )


def rebuild(like: Params, values: list[Tensor]) -> Params:
    """Put ``values`` (ordered as :func:`tensors` orders them) back into the structure of ``like``."""
    if isinstance(like, Tensor):
        return values[0]
    return dict(zip(like.keys(), values))


def tree_map(fn: Callable[..., Tensor], first: Params, *rest: Params) -> Params:
    """Apply ``fn`` leaf by leaf to pytrees of the same structure."""
    for other in rest:
        check_same_structure(first, other)
    columns = zip(tensors(first), *(tensors(r) for r in rest))
    return rebuild(first, [fn(*leaves) for leaves in columns])


def check_params(params: Params, name: str = "params") -> None:
    """Raise unless ``params`` is a tensor or a non-empty dict of floating-point tensors with data.

    Cheap (attributes only, no pass over the entries). Meta tensors (no data) and inference
    tensors (made under ``torch.inference_mode()``, which autograd cannot record) are refused
    with a message that says what to do.
    """
    if isinstance(params, Tensor):
        items = (("", params),)
    elif isinstance(params, Mapping):
        if len(params) == 0:
            raise ValueError(f"{name} is an empty dict; it needs at least one tensor")
        items = params.items()
    else:
        raise TypeError(not_params_message(name, params))
    for key, value in items:
        if not isinstance(value, Tensor):
            where = f"{name}[{key!r}]" if key else name
            raise TypeError(f"{where} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point() or value.is_meta or value.is_inference():
            _refuse_tensor(f"{name}[{key!r}]" if key else name, value)


def _refuse_tensor(where: str, value: Tensor) -> None:
    if not value.is_floating_point():
        raise TypeError(
            f"{where} has dtype {value.dtype}; derivatives need a floating-point dtype (float32 or float64)"
        )
    if value.is_meta:
        raise ValueError(
            f"{where} is a meta tensor (a shape without data); materialize the model first, e.g. "
            "model.to_empty(device='cpu') and then initialize or load its parameters"
        )
    raise RuntimeError(
        f"{where} is an inference tensor (made under torch.inference_mode()), which autograd "
        "cannot differentiate; make it outside inference mode, or copy it there with .clone()"
    )


def all_finite(values: Sequence[Tensor]) -> bool:
    """Whether every entry of every tensor is finite: one cheap pass, an exact check only on doubt.

    The fast path sums each tensor (a NaN or an infinity makes a sum non-finite); only when a
    sum is not finite, which a huge but finite tensor can also cause, is every entry examined.
    """
    if all(v.device.type == "cpu" for v in values):  # no device sync to save: Python floats are cheapest
        if math.isfinite(sum(float(v.detach().sum()) for v in values)):  # a NaN/inf makes the sum non-finite
            return True
        return all(bool(torch.isfinite(v).all()) for v in values)
    sums = [v.sum() for v in values]
    first = sums[0]
    if all(t.device == first.device and t.dtype == first.dtype for t in sums):
        if bool(torch.isfinite(torch.stack(sums).sum() if len(sums) > 1 else first)):
            return True
    elif all(bool(torch.isfinite(t)) for t in sums):  # mixed devices or dtypes: one sync each
        return True
    return all(bool(torch.isfinite(v).all()) for v in values)


def check_same_structure(a: Params, b: Params, names: tuple[str, str] = ("params", "v")) -> None:
    """Raise if ``a`` and ``b`` differ in kind, keys, shapes, dtypes or devices."""
    name_a, name_b = names
    if isinstance(a, Tensor) != isinstance(b, Tensor):
        raise ValueError(
            f"{name_a} is a {type(a).__name__} but {name_b} is a {type(b).__name__}; "
            "they must have the same structure"
        )
    if isinstance(a, Mapping):
        if not isinstance(b, Mapping):
            raise TypeError(f"{name_b} must be a dict of tensors like {name_a}")
        if list(a.keys()) != list(b.keys()):
            missing = [k for k in a if k not in b]
            extra = [k for k in b if k not in a]
            raise ValueError(
                f"{name_b} does not have the keys of {name_a}: missing {missing}, extra {extra}"
                + ("" if missing or extra else " (same keys, different order)")
            )
        pairs = [(f"[{k!r}]", a[k], b[k]) for k in a]
    else:
        pairs = [("", a, b)]
    for where, x, y in pairs:
        if not isinstance(y, Tensor):
            raise TypeError(f"{name_b}{where} must be a torch.Tensor, got {type(y).__name__}")
        if x.shape != y.shape:
            raise ValueError(
                f"{name_b}{where} has shape {tuple(y.shape)} but {name_a}{where} has shape {tuple(x.shape)}"
            )
        if x.dtype != y.dtype:
            raise ValueError(f"{name_b}{where} has dtype {y.dtype} but {name_a}{where} has dtype {x.dtype}")
        if x.device != y.device:
            raise ValueError(f"{name_b}{where} is on {y.device} but {name_a}{where} is on {x.device}")


def add(a: Params, b: Params, *, alpha: float = 1.0) -> Params:
    """a + alpha · b (the convention of ``torch.add``; every integrator's update)."""
    if alpha == 1.0:
        return tree_map(torch.add, a, b)
    return tree_map(lambda x, y: torch.add(x, y, alpha=alpha), a, b)


def sub(a: Params, b: Params) -> Params:
    """a - b."""
    return tree_map(torch.sub, a, b)


def scale(a: Params, c: float) -> Params:
    """c · a."""
    return tree_map(lambda x: x * c, a)


def sum_trees(trees: Sequence[Params]) -> Params:
    """Σ_k trees[k] (pytrees of the same structure; at least one)."""
    out = trees[0]
    for t in trees[1:]:
        out = tree_map(torch.add, out, t)
    return out


def dot(a: Params, b: Params) -> Tensor:
    """⟨a, b⟩ = Σ over all entries of a ⊙ b, as a 0-dim tensor."""
    check_same_structure(a, b, ("a", "b"))
    return sum((x * y).sum() for x, y in zip(tensors(a), tensors(b)))


def norm(a: Params) -> Tensor:
    """‖a‖, the Euclidean norm over all entries."""
    return torch.sqrt(dot(a, a))


def zeros_like(a: Params) -> Params:
    """A pytree of zeros shaped like ``a``."""
    return tree_map(torch.zeros_like, a)


def clone(a: Params) -> Params:
    """A detached copy of ``a`` (safe to modify)."""
    return tree_map(lambda x: x.detach().clone(), a)


def flatten(a: Params) -> Tensor:
    """All entries of ``a`` in one 1-D tensor (dict order, row-major)."""
    return torch.cat([x.reshape(-1) for x in tensors(a)])


def unflatten(vector: Tensor, like: Params) -> Params:
    """Inverse of :func:`flatten`: cut ``vector`` into the shapes of ``like``."""
    sizes = [x.numel() for x in tensors(like)]
    if vector.dim() != 1 or vector.numel() != sum(sizes):
        raise ValueError(
            f"vector has shape {tuple(vector.shape)}; expected a 1-D tensor of {sum(sizes)} entries"
        )
    pieces = torch.split(vector, sizes)
    return rebuild(like, [p.reshape(x.shape) for p, x in zip(pieces, tensors(like))])


def check_positive_int(value: int, name: str) -> int:
    """Return ``value``; raise unless it is an integer ≥ 1 (a bool is not accepted)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_lr(lr: float, name: str = "lr") -> float:
    """Return ``lr`` as a float; raise unless it is a finite number > 0."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"{name} must be a number, got a tensor of shape {tuple(lr.shape)}")
        lr = lr.item()
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(lr).__name__}")
    lr = float(lr)
    if not math.isfinite(lr):
        raise ValueError(f"{name} must be finite, got {lr}")
    if lr <= 0:
        raise ValueError(
            f"{name} must be > 0, got {lr} ({name} is the step h of the gradient-descent update in the "
            "formula, not an optimizer's learning rate)"
        )
    return lr
