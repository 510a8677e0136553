"""The readable side of the study's evaluation: metric names, notes, ``metrics.md`` and figures.

What each metric is and how it is rounded (:data:`METRIC_LABELS`, :data:`TABLE_COLUMNS`), the notes
written into every ``metrics.md`` (intervals, the HR faces' own references), the Markdown tables
(:func:`metrics_markdown`) and the figures (:func:`paired_figure`, :func:`comparison_grid`) that
:func:`upsampler.metrics.evaluate.evaluate_study` writes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from upsampler.metrics.fid import format_value
from upsampler.metrics.paired import GROUPED_NOTE
from upsampler.metrics.perceptual import FEATDIST_LABEL, SHARED_LAYER_NOTE
from upsampler.metrics.seeds import RUN_PAIRS_HEADING, difference_table

__all__ = [
    "METRIC_LABELS",
    "TABLE_COLUMNS",
    "metric_title",
    "metrics_markdown",
    "paired_figure",
    "model_pairs",
    "comparison_grid",
]

# Per-image metrics and set metrics, with what each one is (shown wherever the numbers are).
METRIC_LABELS = {
    "psnr": "PSNR (dB), Y channel, border shaved",
    "ssim": "SSIM, Y channel, Gaussian 11x11",
    "featdist_hed": FEATDIST_LABEL,
    "identity_distance": "identity distance: dlib face embedding, HR vs output",
    "identity_top1": "identity top-1: output matched to the nearest other HR photo of the test identities",
    "piqe": "PIQE (no-reference; lower is better)",
    "kid_face": "KID on dlib face embeddings (128-d)",
    "kid_hed": "KID on VGG16-HED pooled block5_conv3 (512-d, RMS-normalised)",
    "fd_hed": "Fréchet distance on VGG16-HED pooled block5_conv3 (512-d), not an FID",
    "fid": "FID (reference Inception)",
    "kid": "KID (reference Inception)",
}
# The VGG16-HED metrics are not independent of training: written once in every metrics.md.
HED_NOTE = (f"VGG16-HED metrics: {SHARED_LAYER_NOTE} (featdist_hed averages it with four earlier layers; "
            "kid_hed and fd_hed pool it).")
PER_IMAGE_METRICS = ("psnr", "ssim", "featdist_hed", "identity_distance", "identity_top1", "piqe")
SET_METRICS = ("kid_face", "kid_hed", "fd_hed", "fid", "kid")
TABLE_COLUMNS = ["method", "n", *[c for m in (*PER_IMAGE_METRICS, *SET_METRICS) for c in (m, f"{m}_low", f"{m}_high")],
                 "split", "test_set", "resampling_unit", "n_units"]


# ---- notes -------------------------------------------------------------------------------------

def _intervals_note(ci: float, n: int, n_boot: int, n_boot_fd: int, n_identities: int | None) -> str:
    if n_boot == 0:
        return "Intervals: none (0 bootstrap resamples)."
    if n_identities is None:
        how = f"{ci:.0%} bootstrap percentile intervals over images ("
    else:
        how = (f"{ci:.0%} two-stage bootstrap percentile intervals: {GROUPED_NOTE} "
               f"({n_identities} identities, {n} faces; ")
    return (f"Intervals: {how}{n_boot} resamples; {n_boot_fd} for Fréchet distances). For set metrics (KID, FD) a "
            f"method's interval is the bootstrap spread at N={n}, not a confidence interval; paired differences use "
            "the same resamples for both methods.")


def _face_reference_notes(ref: Mapping[str, Any]) -> list[str]:
    """The HR images' own identity top-1 and the split-half KID_face, as readable notes."""
    if not ref:
        return []
    value, low, high = ref["hr_top1_interval"]
    scale = _SCALED["kid_face"]
    return [
        f"identity_top1 reference, the HR images themselves (each HR photo matched against the other HR photos of "
        f"the {ref['n_identities']} test identities): {_fmt_interval(value, low, high, 3)}; chance (a random other "
        f"photo) is {ref['chance']:.3f}.",
        f"KID_face reference: KID on face embeddings between two halves of the HR test faces (split by identity, "
        f"seeded) is {format_value(ref['split_kid'] * scale, 3)} x10^3, beside each method's KID_face. On these "
        f"128-d dlib embeddings the cubic kernel is nearly linear, so KID is close to a mean-embedding shift "
        f"(3/d |mean difference|^2, unbiased: {format_value(ref['split_shift'] * scale, 3)} x10^3 for the same "
        "halves): KID_face says how far the average face moved, not whether individual faces kept their identity.",
    ]


# ---- reporting ---------------------------------------------------------------------------------

def _fmt_interval(value: float, low: float, high: float, digits: int) -> str:
    if not math.isfinite(value):
        return "n/a"
    text = format_value(value, digits)
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{format_value(low, digits)}, {format_value(high, digits)}]"
    return text


# Rounding per metric in the readable tables (the CSVs keep 6 significant digits).
_DIGITS = {"psnr": 2, "ssim": 4, "featdist_hed": 4, "identity_distance": 4, "identity_top1": 3, "piqe": 2}
_SCALED = {"kid_face": 1e3, "kid_hed": 1e3, "kid": 1e3}  # shown x 1e3


def _cell(metric: str, value: float, low: float, high: float) -> str:
    factor = _SCALED.get(metric, 1.0)
    digits = _DIGITS.get(metric, 3)
    return _fmt_interval(value * factor, low * factor, high * factor, digits)


def metric_title(metric: str) -> str:
    label = METRIC_LABELS.get(metric, metric)
    return f"{label} x10^3" if metric in _SCALED else label


def metrics_markdown(table: Any, paired: Any = None, *, notes: Sequence[str] = (), grouped: bool = False) -> str:
    """The readable evaluation: per-method values with intervals, then the paired differences.
    ``grouped``: the intervals came from the identity-level bootstrap (said in each heading)."""
    metrics = [m for m in (*PER_IMAGE_METRICS, *SET_METRICS) if m in table.columns]
    how = f"; {GROUPED_NOTE}" if grouped else ""
    nan = math.nan
    lines = ["# Evaluation: Bicubic vs models", ""]
    lines += [f"- {n}" for n in notes]
    lines += ["", f"## Per method (value [95% interval]{how})", ""]
    lines.append("| Method | N | " + " | ".join(metric_title(m) for m in metrics) + " |")
    lines.append("|---|---|" + "---|" * len(metrics))
    for _, r in table.iterrows():
        cells = [_cell(m, r[m], r.get(f"{m}_low", nan), r.get(f"{m}_high", nan)) for m in metrics]
        lines.append(f"| {r['method']} | {r['n']} | " + " | ".join(cells) + " |")
    if paired is not None and len(paired):
        lines += difference_table(
            f"{RUN_PAIRS_HEADING} [95% paired bootstrap interval]{how})",
            [(r["metric"], r["method_a"], r["method_b"], r["difference"], r["ci_low"], r["ci_high"], r["better"])
             for _, r in paired.iterrows()], _cell, metric_title)
    return "\n".join(lines) + "\n"


def model_pairs(paired: Any, pooled_paired: Any = None) -> Any:
    """The pairs a reader compares: between models over their training seeds (``pooled_paired``,
    with ``method_a`` / ``method_b`` columns like ``paired``) when there are several seeds, else
    the run pairs of ``paired``. Every run pair stays in ``paired.csv``."""
    if pooled_paired is None or not len(pooled_paired):
        return paired
    return pooled_paired.rename(columns={"model_a": "method_a", "model_b": "method_b"})


def paired_figure(paired: Any, path: str | Path | None = None):
    """One panel per metric: each pair's difference (A - B) with its 95% paired interval; the
    side of zero that is better is shaded. ``paired`` holds run pairs or model pairs over seeds
    (:func:`model_pairs`). Returns a Figure (saved as PNG with ``path``)."""
    from matplotlib.figure import Figure

    from upsampler.metrics.paired import LOWER_IS_BETTER

    metrics = list(dict.fromkeys(paired["metric"]))
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4.6 * cols, 0.5 + 0.55 * paired.groupby("metric").size().max() * rows + 1.0 * rows),
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        part = paired[paired["metric"] == metric].reset_index(drop=True)
        factor = _SCALED.get(metric, 1.0)
        y = np.arange(len(part))[::-1]
        d = part["difference"].to_numpy() * factor
        lo, hi = part["ci_low"].to_numpy() * factor, part["ci_high"].to_numpy() * factor
        ax.errorbar(d, y, xerr=np.vstack([np.maximum(d - lo, 0), np.maximum(hi - d, 0)]), fmt="o", color="black",
                    capsize=3)
        ax.axvline(0.0, color="grey", lw=1)
        left, right = ax.get_xlim()
        good = (left, 0.0) if metric in LOWER_IS_BETTER else (0.0, right)
        ax.axvspan(*good, color="tab:green", alpha=0.08, lw=0)
        ax.set_xlim(left, right)
        ax.set_yticks(y, [f"{a} - {b}" for a, b in zip(part["method_a"], part["method_b"])], fontsize=8)
        ax.set_title(metric_title(metric), fontsize=9)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    grouped = "resampling_unit" in paired.columns and paired["resampling_unit"].astype(str).str.contains("identity").any()
    over_seeds = "n_seeds_a" in paired.columns
    fig.suptitle("Paired differences, 95% bootstrap intervals (green side: A better)"
                 + ("\nmodels over their training seeds: intervals resample seeds as well (every run pair: paired.csv)"
                    if over_seeds else "") + (f"\n{GROUPED_NOTE}" if grouped else ""), fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def comparison_grid(
    panels: Sequence[Mapping[str, np.ndarray]],
    columns: Sequence[str],
    path: str | Path | None = None,
    *,
    row_labels: Sequence[str] | None = None,
    note: str | None = None,
):
    """A grid of images, one row per ``panels`` entry and one column per name in ``columns``.

    Each panel maps a column name to a uint8 image. Drawn by :func:`upsampler.study.plots.grid_figure`:
    every panel the same display size, enlarged images (the LR input) blocky
    (``interpolation="nearest"``), so the "Bicubic" column shows exactly the bicubic upscale it
    was given. Returns a Figure; saved as PNG when ``path`` is given.
    """
    from upsampler.study.plots import grid_figure

    if not panels or not columns:
        raise ValueError("comparison_grid needs at least one panel and one column")
    rows = []
    for r, panel in enumerate(panels):
        missing = [c for c in columns if c not in panel]
        if missing:
            raise ValueError(f"panel {r} has no image for columns {missing}")
        label = (lambda c: f"{c} ({row_labels[r]})" if row_labels is not None and c == columns[0] else c)
        rows.append([(label(c), np.asarray(panel[c])) for c in columns])
    return grid_figure(rows, path=path, note=note)

