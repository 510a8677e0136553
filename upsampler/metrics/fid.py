"""Fréchet Inception Distance, and FID + KID bundled, in pytorch-fidelity's composable style.

Pipeline: images -> :func:`~upsampler.metrics.features.activations` (an extractor from
:mod:`.extractors`) -> either
:func:`~upsampler.metrics.features.activation_statistics` + :func:`frechet_distance`, or the
feature-level functions :func:`fid_from_features`, :func:`fid_bootstrap`,
:func:`~upsampler.metrics.kid.kernel_inception_distance` (:mod:`.kid`) and
:func:`distribution_metrics`, which bundles all of them with the extractor's name into a
:class:`DistributionMetrics`.

Units: features are the extractor's activations (dimensionless, float64). FID is in squared
feature units; KID in the units of the cubic polynomial kernel. Both are biased by the
number of images N in a way that depends on N (FID strongly, KID not at all in expectation):
compare methods only at equal N and with the same extractor, which every result records.

NumPy/SciPy only; TensorFlow is imported by the extractors when they run.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from upsampler.metrics.features import _check_features, activation_statistics
from upsampler.metrics.kid import kernel_inception_distance

__all__ = [
    "DistributionMetrics",
    "FrechetTerms",
    "frechet_distance",
    "frechet_terms",
    "fid_from_features",
    "fid_bootstrap",
    "distribution_metrics",
    "save_statistics",
    "load_statistics",
]

# A clipped negative eigenvalue mass above this fraction of the trace triggers a warning.
CLIP_WARN_FRACTION = 1e-6


# ---- Fréchet distance -------------------------------------------------------------------------

@dataclass(frozen=True)
class FrechetTerms:
    """The parts of a Fréchet distance (all in squared feature units).

    ``value = mean_term + trace1 + trace2 - 2 * trace_sqrt``. ``clipped`` is the total magnitude
    of the negative eigenvalues set to zero on the way (round-off for valid covariances),
    ``clipped_fraction`` that magnitude relative to ``trace1 + trace2``.
    """

    value: float
    mean_term: float
    trace1: float
    trace2: float
    trace_sqrt: float
    clipped: float
    clipped_fraction: float


def _check_stats(mu1, sigma1, mu2, sigma2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}), got {sigma1.shape} and {sigma2.shape}")
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or Inf")
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        asym = np.max(np.abs(s - s.T))
        if asym > 1e-6 * max(np.max(np.abs(s)), 1e-300):
            raise ValueError(f"{name} is not symmetric (max |S - S^T| = {asym:.3g})")
    return mu1, (sigma1 + sigma1.T) / 2, mu2, (sigma2 + sigma2.T) / 2


def _clip_eigenvalues(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Zero the eigenvalues at round-off level (|w| <= D * eps * max|w|) and the negative ones.

    Returns the clipped eigenvalues and the total magnitude of the negative eigenvalues that
    lay *beyond* round-off (0.0 for a valid covariance).
    """
    tol = w.size * np.finfo(np.float64).eps * max(float(np.max(np.abs(w))), 0.0)
    beyond = w < -tol
    return np.where(w > tol, w, 0.0), float(-w[beyond].sum())


def _psd_factor(s: np.ndarray) -> np.ndarray | None:
    """F (D, r) with F F^T = s by pivoted Cholesky (LAPACK ``pstrf``), r the numerical rank.

    Returns None when ``s`` is not positive semi-definite beyond round-off (the residual
    s - F F^T is then larger than the factorisation's tolerance allows).
    """
    from scipy.linalg import lapack

    d = s.shape[0]
    max_diag = float(np.max(np.diag(s))) if d else 0.0
    if max_diag <= 0.0:
        return np.zeros((d, 0)) if np.all(s == 0) else None
    c, piv, rank, info = lapack.dpstrf(s, lower=1, tol=-1.0)  # tol: D * eps * max(diag)
    if info < 0:
        raise ValueError(f"pstrf: illegal argument {-info}")
    factor = np.zeros((d, rank))
    factor[piv - 1] = np.tril(c)[:, :rank]
    residual = s - factor @ factor.T
    if np.max(np.abs(residual)) > 10.0 * (d + rank) * np.finfo(np.float64).eps * max_diag:
        return None
    return factor


def _trace_sqrt_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> tuple[float, float]:
    """tr((S1^(1/2) S2 S1^(1/2))^(1/2)) with two symmetric eigendecompositions; (value, clipped)."""
    from scipy.linalg import eigh

    w1, v1 = eigh(sigma1, driver="evr")
    w1, clipped1 = _clip_eigenvalues(w1)
    sqrt1 = (v1 * np.sqrt(w1)) @ v1.T
    middle = sqrt1 @ sigma2 @ sqrt1
    wm, clipped_m = _clip_eigenvalues(eigh((middle + middle.T) / 2, eigvals_only=True, driver="evr"))
    return float(np.sum(np.sqrt(wm))), clipped1 + clipped_m


def _trace_sqrt_cholesky(sigma1: np.ndarray, sigma2: np.ndarray) -> tuple[float, float] | None:
    """The same trace from a pivoted-Cholesky factor F of the lower-rank covariance:
    tr((F^T S_other F)^(1/2)), an r x r problem (r = N - 1 for N < D images). None if either
    covariance is not PSD."""
    from scipy.linalg import eigh

    f1, f2 = _psd_factor(sigma1), _psd_factor(sigma2)
    if f1 is None or f2 is None:
        return None
    factor, other = (f1, sigma2) if f1.shape[1] <= f2.shape[1] else (f2, sigma1)
    if factor.shape[1] == 0:
        return 0.0, 0.0
    middle = factor.T @ other @ factor
    wm, clipped = _clip_eigenvalues(eigh((middle + middle.T) / 2, eigvals_only=True, driver="evr"))
    return float(np.sum(np.sqrt(wm))), clipped


def frechet_terms(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, method: str = "auto",
) -> FrechetTerms:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), with its parts.

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    The trace of the matrix square root is computed in a symmetric form with the same
    eigenvalues as S1 S2, so it stays real and stable for rank-deficient covariances
    (N images < D features):

    * ``method="eigh"``: tr((S1^(1/2) S2 S1^(1/2))^(1/2)), S1^(1/2) from a symmetric
      eigendecomposition (two D x D eigenproblems);
    * ``method="cholesky"``: tr((F^T S2 F)^(1/2)) with F F^T = S1 from a pivoted Cholesky
      factorisation of the lower-rank covariance (an r x r eigenproblem, r = numerical rank;
      much faster when N < D); requires both covariances to be PSD;
    * ``method="auto"`` (default): cholesky, or eigh when a covariance is not PSD.

    Eigenvalues at round-off level (|w| <= D eps max|w|) are set to 0, as a numerical rank
    would, and negative ones clipped to 0; the magnitude of negative eigenvalues beyond
    round-off is reported in ``clipped``, with a ``RuntimeWarning`` when it exceeds
    ``CLIP_WARN_FRACTION`` of tr(S1) + tr(S2) (the inputs were not valid covariances).
    Raises ``ValueError`` on NaN/Inf, asymmetric covariances or mismatched shapes.
    """
    if method not in ("auto", "eigh", "cholesky"):
        raise ValueError(f"method must be 'auto', 'eigh' or 'cholesky', got {method!r}")
    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    result = None if method == "eigh" else _trace_sqrt_cholesky(sigma1, sigma2)
    if result is None:
        if method == "cholesky":
            raise ValueError("a covariance is not positive semi-definite; use method='eigh'")
        result = _trace_sqrt_eigh(sigma1, sigma2)
    trace_sqrt, clipped = result
    diff = mu1 - mu2
    mean_term = float(diff @ diff)
    tr1, tr2 = float(np.trace(sigma1)), float(np.trace(sigma2))
    scale = tr1 + tr2
    fraction = clipped / scale if scale > 0 else 0.0
    if fraction > CLIP_WARN_FRACTION:
        warnings.warn(
            f"frechet_distance: clipped negative eigenvalues of total magnitude {clipped:.3g} "
            f"({fraction:.2e} of tr(S1) + tr(S2)); the covariances are not positive semi-definite",
            RuntimeWarning, stacklevel=3)
    value = mean_term + tr1 + tr2 - 2.0 * trace_sqrt
    return FrechetTerms(value, mean_term, tr1, tr2, trace_sqrt, clipped, fraction)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, method: str = "auto",
) -> float:
    """Fréchet distance (FID when the statistics are Inception features), in squared feature units.

    See :func:`frechet_terms` for the method and failure behaviour. A result within round-off
    below zero (identical statistics) is returned as 0.0.
    """
    terms = frechet_terms(mu1, sigma1, mu2, sigma2, method=method)
    value = terms.value
    if value < 0:
        scale = terms.trace1 + terms.trace2 + terms.mean_term
        if value < -1e-9 * scale:
            warnings.warn(f"frechet_distance: negative value {value:.3g} set to 0", RuntimeWarning, stacklevel=2)
        value = 0.0
    return float(value)


def _centered_scaled(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = feats.mean(axis=0)
    return mu, (feats - mu) / math.sqrt(feats.shape[0] - 1)


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID between two feature sets (N1, D) and (N2, D), float64.

    When the sets are smaller than the feature dimension it works in sample space, exactly:
    with S1 = A^T A and S2 = B^T B (A, B the centred features / sqrt(N - 1)),
    tr((S1 S2)^(1/2)) is the nuclear norm of A B^T (N1 x N2), so no D x D matrix is formed.
    Otherwise it uses :func:`frechet_distance` on the covariances.
    """
    f1, f2 = _check_features(feats1, "feats1"), _check_features(feats2, "feats2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")
    n1, n2, d = f1.shape[0], f2.shape[0], f1.shape[1]
    if max(n1, n2) >= d:
        return frechet_distance(*activation_statistics(f1), *activation_statistics(f2))
    mu1, a = _centered_scaled(f1)
    mu2, b = _centered_scaled(f2)
    singular = np.linalg.svd(a @ b.T, compute_uv=False)
    diff = mu1 - mu2
    value = float(diff @ diff + np.sum(a * a) + np.sum(b * b) - 2.0 * np.sum(singular))
    return max(value, 0.0)


def fid_bootstrap(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    method: str = "normal",
) -> tuple[float, float, float]:
    """FID of the full sets and a bootstrap interval: (value, low, high), squared feature units.

    Images of each set are resampled with replacement, independently, ``n_boot`` times
    (``numpy.random.default_rng(seed)``). ``method="normal"`` (default): value ± z * (bootstrap
    standard deviation), low end clipped at 0, which always contains the value. ``method="percentile"``: the
    bootstrap percentiles; beware that resampling duplicates images, which *raises* FID's
    small-sample bias, so that interval sits above the value and may not contain it.
    The interval measures sampling variability of the test set only; FID's bias at N images
    is not in it (compare at equal N).
    """
    f1, f2 = _check_features(feats_a, "feats_a"), _check_features(feats_b, "feats_b")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if method not in ("normal", "percentile"):
        raise ValueError(f"method must be 'normal' or 'percentile', got {method!r}")
    value = fid_from_features(f1, f2)
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for i in range(n_boot):
        ia = rng.integers(0, f1.shape[0], f1.shape[0])
        ib = rng.integers(0, f2.shape[0], f2.shape[0])
        reps[i] = fid_from_features(f1[ia], f2[ib])
    alpha = 1.0 - ci
    if method == "percentile":
        low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    else:
        from scipy.stats import norm

        half = float(norm.ppf(1 - alpha / 2)) * float(np.std(reps, ddof=1))
        low, high = max(value - half, 0.0), value + half
    return float(value), float(low), float(high)


def format_value(value: float, decimals: int = 2) -> str:
    """Fixed ``decimals`` for ordinary magnitudes, 3 significant digits for tiny ones (untrained features)."""
    if not math.isfinite(value):
        return "n/a"
    if value != 0 and abs(value) < 10.0 ** (1 - decimals):
        return f"{value:.3g}"
    return f"{value:.{decimals}f}"


# ---- bundled result ------------------------------------------------------------------------------

@dataclass
class DistributionMetrics:
    """FID (with interval) and KID (± std) of one image set against another, with provenance.

    ``fid``, ``fid_low``, ``fid_high``: squared feature units (interval at ``ci``; NaN when not
    computed, e.g. from cached statistics without features). ``kid``, ``kid_std``: kernel units
    (NaN when not computed). ``n_a``, ``n_b``: images per set; ``feature_dim``: D;
    ``extractor``: its name; ``extractor_label``: what to print beside the numbers.
    """

    fid: float
    fid_low: float
    fid_high: float
    kid: float
    kid_std: float
    n_a: int
    n_b: int
    feature_dim: int
    extractor: str
    comparable_with_published: bool
    extractor_label: str = ""
    ci: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def untrained(self) -> bool:
        return self.extractor == "inception-untrained"

    def summary_lines(self) -> list[str]:
        """Human-readable lines, with the untrained warning first when it applies."""
        from upsampler.metrics.extractors import UNTRAINED_LABEL

        lines = []
        if self.untrained:
            lines.append(f"WARNING: {UNTRAINED_LABEL}")
        name = "FID" if not self.untrained else "FID-like distance (untrained features)"
        fid = f"{name}: {format_value(self.fid, 4)}"
        if math.isfinite(self.fid_low):
            fid += f"  [{self.ci:.0%} CI {format_value(self.fid_low, 4)}, {format_value(self.fid_high, 4)}]"
        lines.append(fid)
        if math.isfinite(self.kid):
            lines.append(f"KID: {format_value(self.kid, 6)} ± {format_value(self.kid_std, 6)}")
        else:
            lines.append("KID: not computed (needs features, not only statistics)")
        lines.append(f"N: {self.n_a} vs {self.n_b} images; feature dim {self.feature_dim}")
        lines.append(f"extractor: {self.extractor} — {self.extractor_label}")
        lines.append(f"comparable with published FID: {'yes' if self.comparable_with_published else 'no'}")
        return lines


def distribution_metrics(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    extractor: Any,
    *,
    n_boot: int = 200,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    seed: int = 0,
    ci: float = 0.95,
) -> DistributionMetrics:
    """FID + bootstrap interval + KID of two feature sets, labelled with ``extractor``.

    ``extractor``: a FeatureExtractor, or its name (a str). ``n_boot=0`` skips the interval,
    ``kid_subsets=0`` skips KID (NaN in the result).
    """
    from upsampler.metrics.extractors import extractor_info

    if isinstance(extractor, str):
        name = extractor
        label, comparable, _ = extractor_info(name)
    else:
        name, label, comparable = extractor.name, extractor.label, extractor.comparable_with_published
    f1, f2 = _check_features(feats_a, "feats_a"), _check_features(feats_b, "feats_b")
    if n_boot:
        fid, low, high = fid_bootstrap(f1, f2, n_boot=n_boot, seed=seed, ci=ci)
    else:
        fid, low, high = fid_from_features(f1, f2), float("nan"), float("nan")
    if kid_subsets:
        kid, kid_std = kernel_inception_distance(f1, f2, num_subsets=kid_subsets, subset_size=kid_subset_size,
                                                 seed=seed)
    else:
        kid, kid_std = float("nan"), float("nan")
    return DistributionMetrics(fid, low, high, kid, kid_std, f1.shape[0], f2.shape[0], f1.shape[1], name,
                               bool(comparable), label, ci)


# ---- cached statistics --------------------------------------------------------------------------------

def save_statistics(
    path: str | Path,
    mu: np.ndarray,
    sigma: np.ndarray,
    n: int,
    extractor: Any,
    *,
    features: np.ndarray | None = None,
) -> Path:
    """Write feature statistics to a ``.npz``: mu (D,), sigma (D, D), n, extractor name/label.

    ``extractor``: a FeatureExtractor or a name. ``features`` (N, D), optional, are stored too
    so that KID and the FID interval can be computed from the cache. Returns the path.
    """
    from upsampler.metrics.extractors import extractor_info

    if isinstance(extractor, str):
        name, (label, comparable, _) = extractor, extractor_info(extractor)
        input_size = 299
    else:
        name, label, comparable = extractor.name, extractor.label, extractor.comparable_with_published
        input_size = getattr(extractor, "input_size", 299)
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"sigma shape {sigma.shape} does not match mu {mu.shape}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if features is None else {"features": np.asarray(features, np.float64)}
    np.savez(path, mu=mu, sigma=sigma, n=np.int64(n), extractor=np.str_(name), extractor_label=np.str_(label),
             comparable_with_published=np.bool_(comparable), input_size=np.int64(input_size), **extra)
    return path


def load_statistics(path: str | Path) -> dict[str, Any]:
    """Read a ``.npz`` written by :func:`save_statistics`.

    Returns a dict with ``mu``, ``sigma``, ``n``, ``extractor``, ``extractor_label``,
    ``comparable_with_published``, ``input_size`` and ``features`` (None if not stored).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such statistics file")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"mu", "sigma", "n", "extractor"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: not an upsampler statistics file (missing {sorted(missing)})")
            return {
                "mu": z["mu"],
                "sigma": z["sigma"],
                "n": int(z["n"]),
                "extractor": str(z["extractor"]),
                "extractor_label": str(z["extractor_label"]) if "extractor_label" in z.files else "",
                "comparable_with_published": bool(z["comparable_with_published"])
                if "comparable_with_published" in z.files else False,
                "input_size": int(z["input_size"]) if "input_size" in z.files else 299,
                "features": z["features"] if "features" in z.files else None,
            }
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read statistics ({exc})") from exc
