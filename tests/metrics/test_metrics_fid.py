"""FID, KID, bootstrap and cached statistics: NumPy only, no TensorFlow."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg

from upsampler.metrics import (
    DistributionMetrics,
    UNTRAINED_LABEL,
    activation_statistics,
    distribution_metrics,
    fid_bootstrap,
    fid_from_features,
    frechet_distance,
    frechet_terms,
    kernel_inception_distance,
    load_statistics,
    mmd2_unbiased,
    save_statistics,
)


def classic_fid(mu1, s1, mu2, s2):
    """The textbook formula with scipy.linalg.sqrtm (independent reference)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_stats(rng, d, n=None):
    n = n or 4 * d
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + rng.normal(size=d)
    return activation_statistics(x)


def test_activation_statistics_float64_ddof1():
    x = np.arange(12, dtype=np.float32).reshape(4, 3) ** 1.5
    mu, sigma = activation_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False, ddof=1))
    with pytest.raises(ValueError, match="at least 2"):
        activation_statistics(x[:1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_matches_scipy_sqrtm_reference(seed):
    rng = np.random.default_rng(seed)
    mu1, s1 = random_stats(rng, 40)
    mu2, s2 = random_stats(rng, 40)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = classic_fid(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert ours > 0


def test_frechet_self_is_zero_and_equal_cov_is_mean_distance():
    rng = np.random.default_rng(3)
    mu, s = random_stats(rng, 50)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-6
    shift = rng.normal(size=50)
    assert frechet_distance(mu, s, mu + shift, s) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_rank_deficient_2048d_is_finite_real_and_sensible():
    rng = np.random.default_rng(4)
    d, n = 2048, 500
    mix = rng.normal(size=(64, d)) / 8.0  # features with low-dimensional structure, like CNN activations
    sample = lambda shift=0.0: np.abs(rng.normal(size=(n, 64)) @ mix) + shift  # noqa: E731
    a, b, c = sample(), sample(), sample(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no clipping beyond round-off, no negative value
        terms = frechet_terms(*activation_statistics(a), *activation_statistics(b))
    same = terms.value
    assert np.isfinite(same) and same > 0 and terms.clipped == 0.0
    # the sample-space formula used for bootstraps is exact, not an approximation
    assert fid_from_features(a, b) == pytest.approx(same, rel=1e-7)
    # small-sample FID is strongly biased, but a shifted distribution is still far larger
    assert fid_from_features(a, c) > 3 * same


@pytest.mark.parametrize("n", [60, 400])  # rank-deficient (n < d) and full-rank
def test_frechet_eigh_and_pivoted_cholesky_methods_agree(n):
    rng = np.random.default_rng(12)
    d = 150
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / 10
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / 10 + 0.1
    stats = (*activation_statistics(a), *activation_statistics(b))
    by_eigh = frechet_distance(*stats, method="eigh")
    by_chol = frechet_distance(*stats, method="cholesky")
    assert by_chol == pytest.approx(by_eigh, rel=1e-8)
    assert by_chol == pytest.approx(fid_from_features(a, b), rel=1e-8)


def test_frechet_self_rank_deficient_is_near_zero():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 200))
    mu, s = activation_statistics(x)
    assert frechet_distance(mu, s, mu, s) < 1e-6 * np.trace(s)
    assert fid_from_features(x, x) < 1e-9 * np.trace(s)


def test_frechet_rejects_bad_input_and_warns_on_non_psd():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="NaN or Inf"):
        frechet_distance(mu, s, np.array([0, np.nan, 0]), s)
    with pytest.raises(ValueError, match="NaN or Inf"):
        frechet_distance(mu, np.where(s > 0, np.inf, 0.0), mu, s)
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(mu, s, mu, np.eye(4))
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, s)
    not_psd = np.diag([1.0, 1.0, -0.5])
    with pytest.warns(RuntimeWarning, match="negative eigenvalues"):
        frechet_distance(mu, not_psd, mu, s)  # auto: falls back from Cholesky to eigh, and says so
    with pytest.warns(RuntimeWarning, match="negative eigenvalues"):
        frechet_distance(mu, s, mu, not_psd)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(mu, not_psd, mu, s, method="cholesky")


def test_fid_from_features_covariance_path_when_n_large():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(100, 8)), rng.normal(size=(90, 8)) + 0.5
    assert fid_from_features(a, b) == pytest.approx(
        classic_fid(*activation_statistics(a), *activation_statistics(b)), rel=1e-6)


def test_bootstrap_interval_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(60, 16)), rng.normal(size=(60, 16)) + 0.3
    value, low, high = fid_bootstrap(a, b, n_boot=50, seed=1)
    assert low < value < high
    assert value == pytest.approx(fid_from_features(a, b))
    assert fid_bootstrap(a, b, n_boot=50, seed=1) == (value, low, high)
    # percentile bootstrap: the FID bias grows with duplicated images, so the interval lies higher
    _, plow, phigh = fid_bootstrap(a, b, n_boot=50, seed=1, method="percentile")
    assert plow < phigh and phigh > value
    with pytest.raises(ValueError):
        fid_bootstrap(a, b, n_boot=1)


def naive_mmd2(x, y):
    d = x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_unbiased_matches_double_loop():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(7, 4)) + 0.2
    assert mmd2_unbiased(x, y) == pytest.approx(naive_mmd2(x, y), rel=1e-10)


def test_kid_same_distribution_near_zero_shifted_positive():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(200, 32)), rng.normal(size=(200, 32))
    mean, std = kernel_inception_distance(a, b, num_subsets=50, seed=0)
    assert std > 0
    assert abs(mean) < 3 * std
    c = rng.normal(size=(200, 32)) + 0.5
    mean_s, std_s = kernel_inception_distance(a, c, num_subsets=50, seed=0)
    assert mean_s > 10 * std_s and mean_s > 10 * abs(mean)
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(a, b, subset_size=500)


def test_distribution_metrics_records_provenance():
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(40, 12)), rng.normal(size=(30, 12)) + 0.2
    r = distribution_metrics(a, b, "inception-untrained", n_boot=20, kid_subsets=10)
    d = r.to_dict()
    assert (d["n_a"], d["n_b"], d["feature_dim"]) == (40, 30, 12)
    assert d["extractor"] == "inception-untrained" and d["extractor_label"] == UNTRAINED_LABEL
    assert d["comparable_with_published"] is False
    assert r.fid_low < r.fid < r.fid_high and np.isfinite(r.kid)
    text = "\n".join(r.summary_lines())
    assert text.startswith("WARNING: " + UNTRAINED_LABEL)
    published = DistributionMetrics(**{**d, "extractor": "fid-inception", "comparable_with_published": True})
    assert "WARNING" not in "\n".join(published.summary_lines())


def test_statistics_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    feats = rng.normal(size=(10, 6))
    mu, sigma = activation_statistics(feats)
    path = save_statistics(tmp_path / "stats", mu, sigma, 10, "inception-untrained", features=feats)
    assert path.suffix == ".npz"
    loaded = load_statistics(path)
    np.testing.assert_array_equal(loaded["mu"], mu)
    np.testing.assert_array_equal(loaded["sigma"], sigma)
    np.testing.assert_array_equal(loaded["features"], feats)
    assert loaded["n"] == 10 and loaded["extractor"] == "inception-untrained"
    assert loaded["extractor_label"] == UNTRAINED_LABEL and loaded["input_size"] == 299
    no_feats = load_statistics(save_statistics(tmp_path / "b.npz", mu, sigma, 10, "fid-inception"))
    assert no_feats["features"] is None and no_feats["comparable_with_published"] is True
    with pytest.raises(FileNotFoundError):
        load_statistics(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not an upsampler statistics file"):
        load_statistics(tmp_path / "other.npz")
