"""Tasks to learn: closed-form quadratics and small real data sets that ship with packages.

No download ever happens: the digits come with scikit-learn (``load_digits``: 1,797 8×8
images of handwritten digits), MNIST-1D is made by the generator of the ``mnist1d`` package
(Greydanus 2020) on this machine and cached outside the repository, and every other task is
generated from a seed.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

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
    """scikit-learn's 8×8 digits, pixels scaled to [0, 1] then centred (mean training image removed).

    Inputs have 64 features, labels are 0…9. The split is stratified: within each class, a
    permutation drawn from a generator seeded with ``seed`` sends round(``test_fraction`` × the
    class size) images to the test set and the rest to the training set, so both sets have the
    class proportions of the whole set (to one image per class). Each set is then shuffled with
    the same generator (batches cut in order are not sorted by class).
    """
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float64) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    train_parts, test_parts = [], []
    for label in range(int(y.max()) + 1):
        members = (y == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = int(round(test_fraction * len(members)))
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    train, test = torch.cat(train_parts), torch.cat(test_parts)
    train = train[torch.randperm(len(train), generator=gen)]
    test = test[torch.randperm(len(test), generator=gen)]
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


def mnist1d(
    num_samples: int = 5000,
    *,
    seed: int = 42,
    train_fraction: float = 0.8,
    cache_dir: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Split:
    """MNIST-1D (Greydanus 2020): 1-D signals of length 40 made from 10 digit templates, 10 classes.

    The defaults give the standard set: 5,000 examples, the first 4,000 for training and the last
    1,000 for testing, exactly as ``mnist1d.data.make_dataset(get_dataset_args())`` makes them
    (generator seed 42). The data are generated on this machine by the ``mnist1d`` package, never
    downloaded. Other ``num_samples`` or ``seed`` give a larger set or a fresh draw from the same
    distribution (``num_samples`` is rounded down to a multiple of 10: the generator makes equally
    many examples of each class).

    Normalization: the generator's own (all signals together centred and scaled to standard
    deviation 1, before the split); labels are the generator's. The result is cached as a pickle
    in ``cache_dir`` (default ``$IBEA_CACHE`` or ``~/.cache/ibea``), keyed by the arguments, so
    later calls take milliseconds. The generator reseeds NumPy's global generator; its state is
    saved and restored, so the caller's NumPy (and Python) random state is unchanged.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 20:
        raise ValueError(f"num_samples must be an integer >= 20, got {num_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    folder = Path(cache_dir or os.environ.get("IBEA_CACHE") or Path.home() / ".cache" / "ibea")
    path = folder / f"mnist1d_n{num_samples}_s{seed}_f{train_fraction}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            raw = pickle.load(f)
    else:
        raw = _make_mnist1d(num_samples, seed, train_fraction)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(raw, f)
        os.replace(tmp, path)  # atomic: concurrent test workers never read a half-written file
    x, y, xt, yt = (torch.as_tensor(raw[k]) for k in ("x", "y", "x_test", "y_test"))
    return Split(x.to(dtype), y.long(), xt.to(dtype), yt.long()).to(device)


def _make_mnist1d(num_samples: int, seed: int, train_fraction: float) -> dict:
    """Run the ``mnist1d`` generator with the caller's NumPy and Python random states preserved."""
    import random

    import numpy as np

    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("ibea_lib.data.mnist1d needs the mnist1d package: pip install mnist1d") from e
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, train_fraction
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}
