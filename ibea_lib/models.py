"""Small networks used by the chapters, initialized from a seed without touching the global RNG.

Each constructor draws its initial weights inside ``torch.random.fork_rng`` after
``torch.manual_seed(seed)``: the same seed gives the same weights, and torch's global generator
is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "softplus": nn.Softplus}


def mlp(
    sizes: Sequence[int],
    activation: str = "tanh",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> nn.Sequential:
    """A fully connected network ``sizes[0] → … → sizes[-1]``, seeded (no activation at the end).

    Smooth activations (tanh, softplus, gelu) keep Hessians and brackets well defined.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_check_seed(seed))
        return _mlp(sizes, activation).to(dtype=dtype, device=device)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return seed


def _mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """The layers of :func:`mlp`, drawn from the current global RNG (callers fork it)."""
    if len(sizes) < 2:
        raise ValueError(f"sizes needs an input and an output size, got {list(sizes)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MultiHeadMLP(nn.Module):
    """A shared trunk with one linear head per task; ``forward`` returns a tuple of logits."""

    def __init__(
        self,
        trunk_sizes: Sequence[int],
        head_sizes: Sequence[int],
        activation: str = "tanh",
        *,
        seed: int = 0,
    ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_check_seed(seed))  # the trunk's draws, then the heads': as in mlp
            self.trunk = nn.Sequential(_mlp(trunk_sizes, activation), ACTIVATIONS[activation]())
            self.heads = nn.ModuleList(nn.Linear(trunk_sizes[-1], n) for n in head_sizes)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        z = self.trunk(x)
        return tuple(head(z) for head in self.heads)


def count_params(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
