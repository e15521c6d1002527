"""Tasks to learn: closed-form quadratics and small real data sets that ship with packages.

No download ever happens: the digits come with scikit-learn (``load_digits``: 1,797 8×8
images of handwritten digits), and every other task is generated from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .autodiff import Loss


def quadratic_loss(A: Tensor, b: Tensor, c: float = 0.0) -> Loss:
    """The loss θ ↦ ½ θᵀAθ + bᵀθ + c for a single tensor θ (∇L = Aθ + b, ∇²L = A)."""
    if A.dim() != 2 or A.shape[0] != A.shape[1] or b.shape != (A.shape[0],):
        raise ValueError(f"A must be d×d and b of length d; got {tuple(A.shape)} and {tuple(b.shape)}")

    def loss(theta: Tensor) -> Tensor:
        return 0.5 * theta @ (A @ theta) + b @ theta + c

    return loss


def random_quadratic(
    d: int, seed: int, *, dtype: torch.dtype = torch.float64, spread: float = 1.0
) -> tuple[Tensor, Tensor]:
    """(A, b) of a random quadratic task: A symmetric positive definite, b Gaussian."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    eigs = 0.5 + spread * torch.rand(d, generator=gen, dtype=torch.float64)
    A = (q * eigs) @ q.T
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    return A.to(dtype), b.to(dtype)


@dataclass
class Split:
    """A train/test split of inputs ``x_*`` (N×features) and integer labels ``y_*``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def to(self, device: torch.device | str) -> Split:
        return Split(*(t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test)))

    def map_inputs(self, fn) -> Split:
        """The same split with ``fn`` applied to the inputs (a shifted task)."""
        return Split(fn(self.x_train), self.y_train, fn(self.x_test), self.y_test)

    def map_labels(self, fn) -> Split:
        """The same split with ``fn`` applied to the labels (another labeling)."""
        return Split(self.x_train, fn(self.y_train), self.x_test, fn(self.y_test))


def digits(
    test_fraction: float = 0.3,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Split:
    """scikit-learn's 8×8 digits, pixels scaled to [0, 1] then centred (mean image removed).

    Inputs have 64 features, labels are 0…9. The split is stratified-by-shuffle with ``seed``.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float64) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    mean = x[train].mean(0)
    x = (x - mean).to(dtype)
    return Split(x[train], y[train], x[test], y[test]).to(device)


def pixel_permutation(fraction: float, seed: int, n_pixels: int = 64) -> Tensor:
    """A permutation of ``n_pixels`` that moves about ``fraction`` of them (0 = identity, 1 = full)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n_pixels, generator=gen)[: int(round(fraction * n_pixels))]
    perm = torch.arange(n_pixels)
    perm[chosen] = chosen[torch.randperm(len(chosen), generator=gen)]
    return perm


def permute_pixels(x: Tensor, perm: Tensor) -> Tensor:
    """Inputs with their pixels reordered by ``perm`` (the permuted-digits task shift)."""
    return x[:, perm.to(x.device)]


def rotate_images(x: Tensor, degrees: float, side: int = 8) -> Tensor:
    """Inputs (N×side²) rotated by ``degrees`` about the image centre (bilinear, zero padding)."""
    angle = torch.tensor(degrees * torch.pi / 180.0, dtype=torch.float64)
    c, s = float(torch.cos(angle)), float(torch.sin(angle))
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
    images = x.reshape(-1, 1, side, side)
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False).reshape(len(x), side * side)
