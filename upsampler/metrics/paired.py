"""Paired bootstrap statistics: is method A better than method B on the *same* test images?

Every method is scored on the same images, so differences are paired. One set of resampled
image indices (``bootstrap_indices``) serves every metric and every pair:

* per-image metrics (PSNR, SSIM, VGG16-HED feature distance, identity distance, PIQE): the mean
  of the per-image differences, with the percentile interval of that mean over the resamples;
* set metrics (KID, Fréchet distance): the metric of each method against the reference on the
  resampled images, the difference computed on the *same* resample for both methods.

For one method alone, a set metric's interval is a *bootstrap spread at N* (how much the value
moves when the N test images are resampled), not a confidence interval for the population
value: KID and FD at N = 520 are biased estimates (FD strongly), and the spread says nothing of
that bias. The paired differences are what answer the study's question.

When the test images come in groups (several photos of each person), images of one group are
not independent draws: ``grouped_bootstrap_indices`` resamples groups (identities), then images
within each drawn group, and its index matrix goes wherever ``bootstrap_indices``' does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from upsampler.metrics.kid import _poly_kernel

LOWER_IS_BETTER = {"featdist_hed", "identity_distance", "kid_face", "kid_hed", "fd_hed", "fid", "kid", "piqe"}
PAIRED_COLUMNS = ["metric", "method_a", "method_b", "difference", "ci_low", "ci_high", "n", "better",
                  "resampling_unit", "n_units", "n_seeds", "image_ci_low", "image_ci_high"]
GROUPED_NOTE = "intervals resample identities, then faces within them"


def _check_n_boot(n_boot: int) -> None:
    if n_boot < 0:
        raise ValueError(f"the number of bootstrap resamples must be >= 0, got {n_boot}")


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement from ``default_rng(seed)``."""
    _check_n_boot(n_boot)
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 images, got {n}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def grouped_bootstrap_indices(groups: Sequence[str], n_boot: int, seed: int = 0, *, within: bool = True) -> np.ndarray:
    """(n_boot, n) indices of a two-stage bootstrap: groups drawn with replacement, then, for each
    drawn group, as many of its images as it holds, drawn with replacement within it.

    ``groups[i]`` is image i's group (identity). Each row draws groups until it holds n images;
    with equal group sizes (faces_2600's test split: 40 identities x 13) that is exactly G
    groups, each contributing its size. With unequal sizes the last drawn group is cut short so
    that every row holds n indices and every consumer of ``bootstrap_indices`` works unchanged.
    Reproducible: ``default_rng(seed)``, groups in sorted order.

    Resampling at both stages counts the within-group spread twice (once through the drawn groups'
    means, once through the second stage): when groups hardly differ, intervals come out up to
    ~sqrt(2) wider than the image bootstrap's, conservative. ``within=False`` keeps each drawn
    group's images as they are (the one-stage cluster bootstrap), which has no such inflation.
    """
    _check_n_boot(n_boot)
    labels = np.asarray([str(g) for g in groups])
    n = labels.size
    names, inverse = np.unique(labels, return_inverse=True)
    if names.size < 2:
        raise ValueError(f"a grouped bootstrap needs at least 2 groups, got {names.size}")
    sizes = np.bincount(inverse)
    members = np.zeros((names.size, int(sizes.max())), np.int64)
    for g in range(names.size):
        members[g, :sizes[g]] = np.flatnonzero(inverse == g)
    rng = np.random.default_rng(seed)
    # Enough group draws per row to reach n images even if only the smallest group comes up.
    k = -(-n // int(sizes.min()))
    drawn = rng.integers(0, names.size, size=(n_boot, k))
    ends = np.cumsum(sizes[drawn], axis=1)  # (n_boot, k): where each drawn group's images end in the row
    # Which draw each of the row's n positions falls in: one searchsorted over all rows, kept apart by offsets.
    offset = (np.arange(n_boot) * (int(ends[:, -1].max()) + 1))[:, None] if n_boot else np.zeros((0, 1), np.int64)
    draw = np.searchsorted((ends + offset).ravel(), (np.arange(n) + offset).ravel(), side="right")
    draw = draw.reshape(n_boot, n) - (np.arange(n_boot) * k)[:, None]
    group = np.take_along_axis(drawn, draw, axis=1)
    if within:
        slot = np.floor(rng.random((n_boot, n)) * sizes[group]).astype(np.int64)
    else:  # the drawn group's images in order
        starts = np.take_along_axis(ends, draw, axis=1) - sizes[group]
        slot = np.arange(n)[None, :] - starts
    return members[group, slot]


def percentile_interval(samples: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    return float(np.quantile(samples, alpha)), float(np.quantile(samples, 1.0 - alpha))


def mean_with_interval(values: np.ndarray, indices: np.ndarray, ci: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-image ``values`` and its bootstrap percentile interval."""
    values = np.asarray(values, np.float64)
    low, high = percentile_interval(values[indices].mean(axis=1), ci)
    return float(values.mean()), low, high


def paired_difference(a: np.ndarray, b: np.ndarray, indices: np.ndarray, ci: float = 0.95) -> tuple[float, float, float]:
    """mean(a - b) over images with its paired bootstrap percentile interval."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    return mean_with_interval(a - b, indices, ci)


# ---- set metrics on resamples ------------------------------------------------------------------

class KernelMMD:
    """Unbiased MMD^2 (KID's, cubic polynomial kernel) between a reference and a candidate set of
    *paired* features, on the full sets or on resampled indices.

    On a resample, pairs of positions that drew the same image are left out of the within-set
    sums (they are the same sample, whose k(x, x) would bias the estimate upward); the cross
    term averages every pair of positions (HR and output are different samples). With distinct
    indices this is exactly ``mmd2_unbiased``.
    """

    def __init__(self, reference: np.ndarray, candidate: np.ndarray):
        x, y = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        if x.shape != y.shape:
            raise ValueError(f"paired feature sets differ in shape: {x.shape} vs {y.shape}")
        self.kxx, self.kyy, self.kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)

    def value(self, idx: np.ndarray | None = None) -> float:
        n = self.kxx.shape[0]
        idx = np.arange(n) if idx is None else np.asarray(idx)
        distinct = idx[:, None] != idx[None, :]
        count = distinct.sum()
        kxx = self.kxx[np.ix_(idx, idx)]
        kyy = self.kyy[np.ix_(idx, idx)]
        kxy = self.kxy[np.ix_(idx, idx)]
        return float((kxx[distinct].sum() + kyy[distinct].sum()) / count - 2.0 * kxy.mean())


def frechet_on(reference: np.ndarray, candidate: np.ndarray, idx: np.ndarray | None = None) -> float:
    from upsampler.metrics.fid import fid_from_features

    if idx is None:
        return fid_from_features(reference, candidate)
    return fid_from_features(reference[idx], candidate[idx])


@dataclass
class SetMetric:
    """A distance between a reference feature set and a method's, on full or resampled indices."""

    name: str
    reference: np.ndarray
    candidates: Mapping[str, np.ndarray]
    kind: str = "kid"  # "kid" or "fd"

    def __post_init__(self):
        self._kernels = {m: KernelMMD(self.reference, f) for m, f in self.candidates.items()} if self.kind == "kid" else {}

    def value(self, method: str, idx: np.ndarray | None = None) -> float:
        if self.kind == "kid":
            return self._kernels[method].value(idx)
        return frechet_on(self.reference, self.candidates[method], idx)


def set_metric_boots(metric: SetMetric, indices: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
    """Per method: (value on the full set, (n_boot,) values on the resamples ``indices``)."""
    return {m: (metric.value(m), np.array([metric.value(m, idx) for idx in indices], np.float64))
            for m in metric.candidates}


def set_metric_table(metric: SetMetric, indices: np.ndarray, pairs: Sequence[tuple[str, str]], ci: float = 0.95,
                     boots: Mapping[str, tuple[float, np.ndarray]] | None = None):
    """Per-method (value, spread_low, spread_high) and per-pair (difference, low, high), all from
    the same resamples (``boots``: :func:`set_metric_boots` of ``indices``, computed if not given)."""
    computed = set_metric_boots(metric, indices) if boots is None else boots
    boots = {m: b for m, (_, b) in computed.items()}
    per_method = {m: (computed[m][0], *percentile_interval(boots[m], ci)) for m in computed}
    per_pair = {}
    for a, b in pairs:
        low, high = percentile_interval(boots[a] - boots[b], ci)
        per_pair[(a, b)] = (per_method[a][0] - per_method[b][0], low, high)
    return per_method, per_pair


def default_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """Every later method against every earlier one, latest first: for [Bicubic, A, B] that is
    (B, A), (B, Bicubic), (A, Bicubic)."""
    pairs = []
    for j in range(len(methods) - 1, 0, -1):
        for i in range(j - 1, -1, -1):
            pairs.append((methods[j], methods[i]))
    return pairs


def better_of(metric: str, a: str, b: str, low: float, high: float) -> str:
    """Which method the interval favours, or that it does not exclude 0."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval"
    if low <= 0.0 <= high:
        return "neither (interval includes 0)"
    a_larger = low > 0.0
    lower_better = metric in LOWER_IS_BETTER
    return a if a_larger != lower_better else b


def paired_rows(
    per_image: Mapping[str, Mapping[str, np.ndarray]],
    set_metrics: Sequence[SetMetric],
    pairs: Sequence[tuple[str, str]],
    indices: np.ndarray,
    ci: float = 0.95,
    set_indices: np.ndarray | None = None,
    *,
    resampling_unit: str = "image",
    n_units: int | None = None,
    n_seeds: int = 1,
    set_boots: Mapping[str, Mapping[str, tuple[float, np.ndarray]]] | None = None,
    image_indices: np.ndarray | None = None,
) -> tuple[list[dict], dict[str, dict[str, tuple[float, float, float]]]]:
    """Rows of ``paired.csv`` and, per set metric, each method's (value, spread_low, spread_high).

    ``per_image``: metric -> method -> (N,) values. ``set_indices``: resamples for the set
    metrics (default ``indices``; FD needs fewer, its square roots are costly). Every row also
    records what was resampled (``resampling_unit``: "image" or "identity"), how many of those
    units there are (``n_units``, default N) and over how many training seeds the methods' results
    were pooled (``n_seeds``). ``set_boots``: the set metrics' :func:`set_metric_boots`, by name,
    when already computed. ``image_indices``: image-level resamples; when given (the main intervals
    resample identities), per-image metrics also get the interval an image-level bootstrap would
    report (``image_ci_low``, ``image_ci_high``), to show how much the grouping widens it.
    """
    n = indices.shape[1]
    extra = {"resampling_unit": resampling_unit, "n_units": n if n_units is None else n_units, "n_seeds": n_seeds}
    rows = []
    for metric, by_method in per_image.items():
        for a, b in pairs:
            if a not in by_method or b not in by_method:
                continue
            diff, low, high = paired_difference(by_method[a], by_method[b], indices, ci)
            image_level = (paired_difference(by_method[a], by_method[b], image_indices, ci)[1:]
                           if image_indices is not None else (math.nan, math.nan))
            rows.append({"metric": metric, "method_a": a, "method_b": b, "difference": diff,
                         "ci_low": low, "ci_high": high, "n": n, "better": better_of(metric, a, b, low, high),
                         **extra, "image_ci_low": image_level[0], "image_ci_high": image_level[1]})
    spreads = {}
    for metric in set_metrics:
        per_method, per_pair = set_metric_table(metric, indices if set_indices is None else set_indices, pairs, ci,
                                                (set_boots or {}).get(metric.name))
        spreads[metric.name] = per_method
        for (a, b), (diff, low, high) in per_pair.items():
            rows.append({"metric": metric.name, "method_a": a, "method_b": b, "difference": diff,
                         "ci_low": low, "ci_high": high, "n": n, "better": better_of(metric.name, a, b, low, high),
                         **extra, "image_ci_low": math.nan, "image_ci_high": math.nan})
    return rows, spreads


def grouping_widening(paired) -> tuple[float, float, float] | None:
    """(median, min, max) over the rows of a ``paired`` table that have both of the ratio of the
    identity-level interval's width to the image-level one's; None when no row has both."""
    frame = paired.dropna(subset=["ci_low", "ci_high", "image_ci_low", "image_ci_high"])
    image_width = frame["image_ci_high"] - frame["image_ci_low"]
    ratio = ((frame["ci_high"] - frame["ci_low"]) / image_width)[image_width > 0]
    if ratio.empty:
        return None
    return float(ratio.median()), float(ratio.min()), float(ratio.max())
