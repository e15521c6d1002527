"""Tests of ibea_lib.book.stats against known values and simulations."""

import math

import pytest
import torch

from ibea_lib.book import stats


def test_t_quantile_and_interval_known_values():
    assert stats.t_quantile(0.95, 2) == pytest.approx(4.3027, abs=1e-4)
    assert stats.t_quantile(0.95, 9) == pytest.approx(2.2622, abs=1e-4)
    out = stats.t_interval([1.0, 2.0, 3.0])
    assert out["mean"] == 2.0 and out["df"] == 2
    assert out["se"] == pytest.approx(1 / math.sqrt(3))
    assert out["hi"] - out["mean"] == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)


def test_paired_difference_counts_wins():
    out = stats.paired_difference([1.0, 2.0, 3.0, 4.0], [0.5, 2.0, 2.0, 5.0])
    assert out["mean"] == pytest.approx((0.5 + 0 + 1 - 1) / 4)
    assert out["wins"] == 2.5
    with pytest.raises(ValueError):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_t_interval_coverage_by_simulation():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=gen, dtype=torch.float64)
    covered = sum(stats.t_interval(row)["lo"] < 0 < stats.t_interval(row)["hi"] for row in x)
    assert 0.93 < covered / len(x) < 0.97  # n = 3: the t factor with 2 df gives 95%


def test_wilson_interval_known_values():
    lo, hi = stats.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = stats.wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)
    with pytest.raises(ValueError):
        stats.wilson_interval(1, 0)


def test_correlations():
    assert stats.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ZeroDivisionError):
        stats.pearson([1, 2, 3], [1, 1, 1])
    # integer weights act like repeated observations
    x, y = [1.0, 2.0, 3.0, 5.0], [2.0, 1.0, 4.0, 3.0]
    rep_x, rep_y = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0], [2.0, 1.0, 1.0, 4.0, 3.0, 3.0, 3.0]
    assert stats.pearson(x, y, [1, 2, 1, 3]) == pytest.approx(stats.pearson(rep_x, rep_y))


def test_partial_correlation_removes_a_common_cause():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2000, generator=gen, dtype=torch.float64)
    x = z + 0.3 * torch.randn(2000, generator=gen, dtype=torch.float64)
    y = z + 0.3 * torch.randn(2000, generator=gen, dtype=torch.float64)
    assert stats.pearson(x, y) > 0.8
    assert abs(stats.partial_correlation(x, y, [z], ranks=False)) < 0.06
    w = y + 0.5 * x  # x carries information beyond z
    assert stats.partial_correlation(x, w, [z], ranks=False) > 0.3


def test_cluster_ols_recovers_coefficients_and_widens_with_clusters():
    gen = torch.Generator().manual_seed(2)
    n_c, per = 8, 50
    clusters = torch.arange(n_c).repeat_interleave(per)
    x = torch.randn(n_c * per, generator=gen, dtype=torch.float64)
    shock = torch.randn(n_c, generator=gen, dtype=torch.float64)[clusters]  # shared within a cluster
    y = 1.0 + 2.0 * x + shock + 0.1 * torch.randn(n_c * per, generator=gen, dtype=torch.float64)
    fit = stats.cluster_ols(x[:, None], y, clusters, names=["x"])
    assert fit["x"]["lo"] < 2.0 < fit["x"]["hi"]
    assert fit["fit"]["df"] == n_c - 1
    # the intercept carries the cluster shocks: its clustered se is far above the naive sd/√n
    assert fit["const"]["se"] > 3 * float(shock.std()) / math.sqrt(n_c * per)


def test_cluster_bootstrap_of_a_mean():
    values = torch.tensor([1.0, 1.2, 3.0, 3.1, 5.0, 5.2], dtype=torch.float64)
    clusters = [0, 0, 1, 1, 2, 2]
    out = stats.cluster_bootstrap(lambda w: stats.weighted_mean(values, w), clusters, n_boot=500)
    assert out["estimate"] == pytest.approx(float(values.mean()))
    assert out["lo"] < out["estimate"] < out["hi"] and out["clusters"] == 3
    assert out["lo"] >= 1.0 and out["hi"] <= 5.2


def test_dyadic_bootstrap_is_wider_than_independent_pairs_when_classes_matter():
    # the value of a pair is the sum of two class effects: pairs sharing a class are dependent
    gen = torch.Generator().manual_seed(3)
    effects = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    a, b, g, v = [], [], [], []
    for seed in range(2):
        for i in range(10):
            for j in range(i + 1, 10):
                a.append(i), b.append(j), g.append(seed), v.append(float(effects[seed, i] + effects[seed, j]))
    out = stats.dyadic_bootstrap(v, a, b, g, n_boot=400)
    w = stats.dyadic_weights(a, b, g, n_boot=400)
    assert w.shape == (400, len(v)) and stats.dyadic_bootstrap(v, weights=w)["lo"] == pytest.approx(out["lo"])
    naive_half = 1.96 * float(torch.tensor(v).std()) / math.sqrt(len(v))
    assert out["lo"] < out["estimate"] < out["hi"]
    assert (out["hi"] - out["lo"]) / 2 > 1.5 * naive_half
    assert out["estimate"] == pytest.approx(sum(v) / len(v))


def test_bad_inputs():
    with pytest.raises(ValueError):
        stats.t_interval([1.0])
    with pytest.raises(ValueError):
        stats.t_quantile(1.5, 3)
    with pytest.raises(ValueError):
        stats.cluster_ols([[1.0], [2.0], [3.0]], [1.0, 2.0, 3.0], [0, 0, 0])
    with pytest.raises(ValueError):
        stats.t_interval([1.0, float("nan")])


def test_t_pvalue_matches_the_t_distribution():
    from ibea_lib.book import stats

    x = [0.1, 0.5, -0.2, 0.9, 0.4]
    sd = float(torch.tensor(x, dtype=torch.float64).std())
    t = (sum(x) / 5) / (sd / 5**0.5)
    # the t distribution with 4 df has the closed-form CDF 1/2 + t (t² + 6) / (2 (t² + 4)^{3/2})
    cdf = 0.5 + t * (t * t + 6) / (2 * (t * t + 4) ** 1.5)
    assert abs(stats.t_pvalue(x) - 2 * (1 - cdf)) < 1e-12


def test_holm_step_down():
    from ibea_lib.book import stats

    # sorted: 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: stop
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert stats.holm([0.2]) == [False]
    with pytest.raises(ValueError):
        stats.holm([])
    ivs = stats.holm_intervals([[1.0, 1.1, 0.9, 1.2], [0.1, -0.3, 0.2, 0.0]])
    assert ivs[0]["reject"] and not ivs[1]["reject"]
    assert ivs[0]["level"] == pytest.approx(1 - 0.05 / 2) and ivs[1]["level"] == pytest.approx(0.95)
