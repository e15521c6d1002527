"""Statistics for the experiments of Part IV: intervals that respect how the numbers were made.

* :func:`t_interval` — mean of n independent runs (seeds) with a Student-t interval on n − 1
  degrees of freedom (with n = 3 the 95% factor is 4.30, not 1.96 or "3 standard errors");
* :func:`paired_difference` — the same for differences of runs that share a seed (initialization);
* :func:`wilson_interval` — a binomial proportion (independent trials only);
* :func:`holm` — Holm's step-down correction of a family of intervals or p-values (familywise level);
* :func:`cluster_bootstrap` — percentile bootstrap that resamples whole clusters (seeds);
* :func:`dyadic_bootstrap` — for statistics over *pairs* of units (pairs of classes within a seed):
  resamples seeds and, within each seed, the units, so that pairs sharing a class stay dependent;
* :func:`rank`, :func:`pearson`, :func:`spearman`, :func:`partial_correlation`;
* :func:`cluster_ols` — least squares with cluster-robust (CR1) standard errors and t intervals on
  G − 1 degrees of freedom, G the number of clusters (seeds).

Numbers are returned as Python floats (dicts of floats): these are summaries for printing and
asserting, not tensors to differentiate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "cluster_bootstrap",
    "cluster_ols",
    "dyadic_bootstrap",
    "dyadic_weights",
    "holm",
    "holm_intervals",
    "t_pvalue",
    "paired_difference",
    "partial_correlation",
    "pearson",
    "rank",
    "spearman",
    "t_interval",
    "t_quantile",
    "weighted_mean",
    "wilson_interval",
]


def _vector(values, name: str, min_len: int = 1) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() < min_len:
        raise ValueError(f"{name} needs at least {min_len} values, got {t.numel()}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values")
    return t


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")
    return float(level)


# --------------------------------------------------------------------------- seeds (independent runs)


def t_quantile(level: float, df: int) -> float:
    """The two-sided Student-t factor: P(|T_df| ≤ q) = level (q = 4.303 for level 0.95, df = 2)."""
    from scipy.stats import t as student_t

    _check_level(level)
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be a positive integer, got {df!r}")
    return float(student_t.ppf(0.5 + level / 2, df))


def mean_and_stderr(values) -> tuple[float, float]:
    """Mean and standard error (sd/√n, n − 1 sd) of a list of numbers, e.g. one per seed; NaN for n = 1."""
    t = torch.as_tensor(values, dtype=torch.float64)
    if t.numel() < 2:
        return float(t.mean()), float("nan")
    return float(t.mean()), float(t.std(unbiased=True) / t.numel() ** 0.5)


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of independent values with a Student-t interval on n − 1 degrees of freedom.

    Returns ``mean``, ``se`` (standard error, sd/√n with the n − 1 sd), ``lo``, ``hi``, ``n`` and
    ``df``. Needs n ≥ 2.
    """
    x = _vector(values, "values", 2)
    n = x.numel()
    mean, se = float(x.mean()), float(x.std(unbiased=True)) / math.sqrt(n)
    q = t_quantile(level, n - 1)
    return {"mean": mean, "se": se, "lo": mean - q * se, "hi": mean + q * se, "n": n, "df": n - 1}


def format_interval(iv, scale: float = 1.0, digits: int = 1) -> str:
    """``mean [lo, hi]`` of a :func:`t_interval`, the numbers multiplied by ``scale``."""
    m, lo, hi = (float(iv[k]) * scale for k in ("mean", "lo", "hi"))
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of a_i − b_i over pairs that share a seed, with a t interval (n − 1 df).

    Also returns ``wins`` = number of pairs with a_i > b_i (ties count half).
    """
    x, y = _vector(a, "a", 2), _vector(b, "b", 2)
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same length, got {x.numel()} and {y.numel()}")
    d = x - y
    out = t_interval(d, level)
    out["wins"] = float((d > 0).sum()) + 0.5 * float((d == 0).sum())
    return out


def t_pvalue(values: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t test of mean 0 (n − 1 df). Needs n ≥ 2."""
    x = _vector(values, "values", 2)
    n = x.numel()
    sd = float(x.std(unbiased=True))
    mean = float(x.mean())
    if sd == 0.0:
        return 0.0 if mean != 0.0 else 1.0
    t = abs(mean) / (sd / math.sqrt(n))
    return float(2.0 * _t_sf(t, n - 1))


def _t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with df degrees of freedom (t ≥ 0), via the regularized incomplete beta."""
    x = df / (df + t * t)
    return 0.5 * _betainc(df / 2.0, 0.5, x)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Numerical Recipes' betacf)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c if abs(1.0 + num / c) > tiny else tiny
        h *= d * c
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c if abs(1.0 + num / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return front * h / a


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down procedure: which of m hypotheses are rejected at familywise level ``alpha``.

    Sort the p-values p_(1) ≤ … ≤ p_(m); reject while p_(k) ≤ alpha / (m − k + 1), stop at the first
    that is not. Controls the probability of any false rejection at ``alpha`` for any dependence.
    """
    p = [float(v) for v in pvalues]
    if not p:
        raise ValueError("holm needs at least one p-value")
    if any(not 0.0 <= v <= 1.0 for v in p):
        raise ValueError(f"p-values must lie in [0, 1], got {p}")
    m = len(p)
    reject = [False] * m
    for k, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        if p[i] > alpha / (m - k):
            break
        reject[i] = True
    return reject


def holm_intervals(samples: Sequence[Sequence[float]], alpha: float = 0.05) -> list[dict[str, float]]:
    """t intervals for a family of m means, each widened to the level of its Holm step.

    Each entry is a :func:`t_interval` at level 1 − alpha / (m − k + 1) (k its rank by p-value), with
    ``p`` (the raw two-sided p-value) and ``reject`` (Holm's decision at familywise ``alpha``). Reading
    "the interval excludes 0" then agrees with Holm for every hypothesis that is tested before the first
    acceptance; for simplicity use ``reject`` when asserting.
    """
    groups = [list(s) for s in samples]
    if not groups:
        raise ValueError("holm_intervals needs at least one sample")
    ps = [t_pvalue(g) for g in groups]
    reject = holm(ps, alpha)
    m = len(groups)
    order = sorted(range(m), key=lambda j: ps[j])
    out: list[dict[str, float]] = [{} for _ in groups]
    for k, i in enumerate(order):
        iv = t_interval(groups[i], 1.0 - alpha / (m - k))
        iv.update(p=ps[i], reject=reject[i], level=1.0 - alpha / (m - k))
        out[i] = iv
    return out


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96); independent trials only.

    (p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n), with p̂ = successes / trials.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    if isinstance(successes, bool) or not isinstance(successes, int) or not 0 <= successes <= trials:
        raise ValueError(f"successes must be an integer in [0, {trials}], got {successes!r}")
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z}")
    n, p = trials, successes / trials
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    return max(0.0, (centre - half) / denom), min(1.0, (centre + half) / denom)


# --------------------------------------------------------------------------- bootstrap


def weighted_mean(values: Tensor, weights: Tensor) -> float:
    """Σ w v / Σ w (the default statistic of the bootstraps)."""
    return float((weights * values).sum() / weights.sum())


def _percentile(samples: Tensor, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    q = torch.quantile(samples, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return float(q[0]), float(q[1])


def cluster_bootstrap(
    statistic: Callable[[Tensor], float],
    clusters: Sequence[int],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap of ``statistic(weights)`` resampling whole clusters (e.g. seeds).

    ``statistic`` receives one weight per observation (how often its cluster was drawn; the
    original data have all weights 1) and returns a number, e.g.
    ``lambda w: weighted_spearman(...)``. Returns ``estimate`` (all weights 1), ``lo``, ``hi`` and
    ``clusters`` (G). With few clusters (G < 10) the interval is too narrow rather than too wide:
    report G next to it.
    """
    _check_level(level)
    c = torch.as_tensor(clusters).flatten()
    ids, inverse = torch.unique(c, return_inverse=True)
    g = len(ids)
    if g < 2:
        raise ValueError("cluster_bootstrap needs at least two clusters")
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n_boot):
        counts = torch.bincount(torch.randint(g, (g,), generator=gen), minlength=g).double()
        w = counts[inverse]
        if float(w.sum()) == 0:
            continue
        samples.append(statistic(w))
    s = torch.tensor(samples, dtype=torch.float64)
    s = s[torch.isfinite(s)]
    lo, hi = _percentile(s, level)
    return {
        "estimate": float(statistic(torch.ones(len(c), dtype=torch.float64))),
        "lo": lo,
        "hi": hi,
        "clusters": g,
    }


def dyadic_weights(
    unit_a: Sequence[int],
    unit_b: Sequence[int],
    group: Sequence[int],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> Tensor:
    """Bootstrap weights (n_boot × n pairs) for statistics over pairs of units within groups.

    Two pairs that share a class (or a seed) are not independent. Each replicate draws the groups
    with replacement and, within each drawn group, its units with replacement; a pair (a, b) of a
    group gets weight (times the group was drawn) × (times a was drawn) × (times b was drawn).
    Compute the weights once and reuse them for every statistic of the same pairs (then the
    intervals of two statistics are paired, and differences of statistics are bootstrapped too).
    """
    a, b, g = (torch.as_tensor(x).long().flatten() for x in (unit_a, unit_b, group))
    if not (len(a) == len(b) == len(g)):
        raise ValueError("unit_a, unit_b and group must have the same length")
    groups, g_idx = torch.unique(g, return_inverse=True)
    units = torch.unique(torch.cat([a, b]))
    n_units = int(units.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    n_g, n_u = len(groups), len(units)
    slot_group = torch.randint(n_g, (n_boot, n_g), generator=gen)  # which group fills each slot
    draws = units[torch.randint(n_u, (n_boot, n_g, n_u), generator=gen)]  # fresh units per slot
    unit_counts = torch.zeros(n_boot, n_g, n_units, dtype=torch.float64)
    unit_counts.scatter_add_(2, draws, torch.ones_like(draws, dtype=torch.float64))
    w = torch.zeros(n_boot, len(a), dtype=torch.float64)
    for j in range(n_g):
        in_slot = (slot_group[:, j : j + 1] == g_idx[None, :]).double()
        w += in_slot * unit_counts[:, j, a] * unit_counts[:, j, b]
    return w


def dyadic_bootstrap(
    values: Sequence[float],
    unit_a: Sequence[int] | None = None,
    unit_b: Sequence[int] | None = None,
    group: Sequence[int] | None = None,
    *,
    weights: Tensor | None = None,
    statistic: Callable[[Tensor, Tensor], Tensor] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap interval for a statistic over pairs of units (see :func:`dyadic_weights`).

    Pass the pairs' ``unit_a``, ``unit_b``, ``group``, or ``weights`` made by
    :func:`dyadic_weights`. ``statistic(values, weights)`` takes values (n,) and weights (B × n)
    and returns B numbers; the default is the weighted mean (a fraction of correct signs when
    ``values`` are 0/1). Returns ``estimate`` (all weights 1), ``lo``, ``hi`` and ``n``.
    """
    _check_level(level)
    v = _vector(values, "values", 2)
    if weights is None:
        if unit_a is None or unit_b is None or group is None:
            raise ValueError("pass unit_a, unit_b and group, or weights")
        weights = dyadic_weights(unit_a, unit_b, group, n_boot=n_boot, seed=seed)
    if weights.shape[-1] != len(v):
        raise ValueError(f"weights have {weights.shape[-1]} columns for {len(v)} values")
    if statistic is None:

        def statistic(x, w):
            return (w * x).sum(-1) / w.sum(-1)

    s = statistic(v, weights)
    s = s[torch.isfinite(s)]
    lo, hi = _percentile(s, level)
    est = float(statistic(v, torch.ones(1, len(v), dtype=torch.float64))[0])
    return {"estimate": est, "lo": lo, "hi": hi, "n": len(v)}


# --------------------------------------------------------------------------- correlations


def rank(values: Sequence[float]) -> Tensor:
    """Ranks 0…n−1 of ``values`` (ties broken by position), as float64."""
    t = torch.as_tensor(values, dtype=torch.float64)
    r = torch.empty_like(t)
    r[torch.argsort(t, stable=True)] = torch.arange(len(t), dtype=torch.float64)
    return r


def pearson(x: Sequence[float], y: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """(Weighted) Pearson correlation of two equally long sequences (at least 3 entries)."""
    a, b = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1 or len(a) < 3:
        raise ValueError("pearson needs two equally long 1-D sequences with at least 3 entries")
    w = torch.ones_like(a) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    a, b = a - (w * a).sum(), b - (w * b).sum()
    den = float(torch.sqrt((w * a * a).sum() * (w * b * b).sum()))
    if den == 0:
        raise ZeroDivisionError("a correlation with a constant sequence is undefined")
    return float((w * a * b).sum()) / den


def spearman(x: Sequence[float], y: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks; weights act on the Pearson step)."""
    return pearson(rank(x), rank(y), weights)


def _residualize(y: Tensor, controls: Tensor, w: Tensor) -> Tensor:
    design = torch.cat([torch.ones(len(y), 1, dtype=torch.float64), controls], dim=1)
    sw = w.sqrt()[:, None]
    coef = torch.linalg.lstsq(design * sw, y[:, None] * sw).solution
    return y - (design @ coef).flatten()


def partial_correlation(
    x: Sequence[float],
    y: Sequence[float],
    controls: Sequence[Sequence[float]],
    *,
    ranks: bool = True,
    weights: Sequence[float] | None = None,
) -> float:
    """Correlation of x and y after removing what the controls explain linearly from both.

    With ``ranks=True`` (default) everything is replaced by ranks first (a partial Spearman
    correlation). ``controls`` is a list of sequences, each as long as x.
    """
    tf = rank if ranks else (lambda v: torch.as_tensor(v, dtype=torch.float64))
    a, b = tf(x), tf(y)
    c = torch.stack([tf(v) for v in controls], dim=1) if len(controls) else torch.zeros(len(a), 0)
    w = torch.ones_like(a) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    return pearson(_residualize(a, c.double(), w), _residualize(b, c.double(), w), w)


def cluster_ols(
    X: Sequence[Sequence[float]],
    y: Sequence[float],
    clusters: Sequence[int],
    *,
    names: Sequence[str] | None = None,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Least squares y ≈ c + Xβ with cluster-robust (CR1) standard errors, t on G − 1 df.

    ``X`` has one row per observation (n × p). Returns, for the intercept (``"const"``) and each
    column (named by ``names``, default ``x0, x1, …``): ``coef``, ``se``, ``lo``, ``hi``; and
    ``"fit"`` with ``r2``, ``n``, ``clusters`` and ``df``.
    """
    _check_level(level)
    Xt = torch.as_tensor(X, dtype=torch.float64)
    if Xt.dim() == 1:
        Xt = Xt[:, None]
    yt = _vector(y, "y", 3)
    c = torch.as_tensor(clusters).flatten()
    n, p = Xt.shape
    if len(yt) != n or len(c) != n:
        raise ValueError("X, y and clusters must have the same number of rows")
    names = list(names) if names is not None else [f"x{i}" for i in range(p)]
    if len(names) != p:
        raise ValueError(f"names must have {p} entries, got {len(names)}")
    D = torch.cat([torch.ones(n, 1, dtype=torch.float64), Xt], dim=1)
    k = p + 1
    bread = torch.linalg.inv(D.T @ D)
    beta = bread @ D.T @ yt
    resid = yt - D @ beta
    ids = torch.unique(c)
    g = len(ids)
    if g < 2:
        raise ValueError("cluster_ols needs at least two clusters")
    meat = torch.zeros(k, k, dtype=torch.float64)
    for i in ids:
        s = D[c == i].T @ resid[c == i]
        meat += torch.outer(s, s)
    factor = g / (g - 1) * (n - 1) / max(n - k, 1)
    cov = factor * bread @ meat @ bread
    q = t_quantile(level, g - 1)
    out = {}
    for j, name in enumerate(["const", *names]):
        se = float(cov[j, j].clamp_min(0).sqrt())
        out[name] = {
            "coef": float(beta[j]),
            "se": se,
            "lo": float(beta[j]) - q * se,
            "hi": float(beta[j]) + q * se,
        }
    ss_tot = float(((yt - yt.mean()) ** 2).sum())
    out["fit"] = {
        "r2": 1 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan"),
        "n": n,
        "clusters": g,
        "df": g - 1,
    }
    return out
