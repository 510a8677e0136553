"""The study's evaluation: Bicubic vs Model A vs Model B on a test split.

:func:`evaluate_study` reads a processed split folder (``hr/`` and ``lr/`` PNGs with the same
file names, as written by ``upsampler preprocess``), upscales every LR image with each method,
and scores each method against the HR set:

* FID (with a bootstrap interval over images) and KID ± std, all with the same extractor,
  N and feature dimension, which the table records with the extractor's label;
* mean PSNR (dB) and SSIM on Y with ``scale`` pixels shaved, with 95% t-intervals over images.

"Bicubic" is Pillow's bicubic upscaling of the LR image, the same resampling that made the
LR images (:func:`upsampler.images.bicubic_upscale`). It writes
``per_image_metrics.csv``, ``metrics.csv``, ``metrics.md``, ``fid_bar_chart.png`` and
``comparison_grid.png`` into ``out_dir`` (and the SR images with ``save_sr=True``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .fid import activations, distribution_metrics, format_value
from .sr import sr_metrics, to_uint8
from ..images import bicubic_upscale
from .srbench import list_images, read_image

__all__ = [
    "StudyResults",
    "evaluate_study",
    "load_split",
    "run_generator",
    "mean_interval",
    "fid_bar_chart",
    "comparison_grid",
    "metrics_markdown",
]

BICUBIC = "Bicubic"


@dataclass
class StudyResults:
    """What :func:`evaluate_study` computed and wrote.

    ``table``: one row per method (columns in :data:`TABLE_COLUMNS`); ``per_image``: one row
    per (method, image) with PSNR (dB) and SSIM; the paths of every file written.
    """

    table: Any  # pandas.DataFrame
    per_image: Any  # pandas.DataFrame
    out_dir: Path
    metrics_csv: Path
    per_image_csv: Path
    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)
    sr_dirs: dict[str, Path] = field(default_factory=dict)
    extractor: str = ""
    extractor_label: str = ""
    untrained_features: bool = False


TABLE_COLUMNS = [
    "method", "fid", "fid_low", "fid_high", "kid", "kid_std",
    "psnr", "psnr_low", "psnr_high", "ssim", "ssim_low", "ssim_high",
    "n_images", "n_reference", "feature_dim", "extractor", "extractor_label", "comparable_with_published",
]


# ---- inputs -------------------------------------------------------------------------------------

def load_split(test_dir: str | Path) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """(file names, HR uint8 (N, H, W, 3), LR uint8 (N, h, w, 3), scale) of a processed split."""
    test_dir = Path(test_dir)
    hr_dir, lr_dir = test_dir / "hr", test_dir / "lr"
    for d in (hr_dir, lr_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such folder (expected a split folder with hr/ and lr/)")
    hr_files = list_images(hr_dir)
    lr_names = {p.name for p in list_images(lr_dir)}
    names = [p.name for p in hr_files]
    missing = [n for n in names if n not in lr_names]
    if missing or len(lr_names) != len(names):
        extra = sorted(lr_names - set(names))
        raise ValueError(f"{test_dir}: hr/ and lr/ hold different files (missing in lr/: {missing[:5]}, "
                         f"only in lr/: {extra[:5]})")
    hr_list = [read_image(hr_dir / n, mode="RGB") for n in names]
    lr_list = [read_image(lr_dir / n, mode="RGB") for n in names]
    for kind, imgs in (("hr", hr_list), ("lr", lr_list)):
        shapes = {im.shape for im in imgs}
        if len(shapes) != 1:
            raise ValueError(f"{test_dir / kind}: images differ in size {sorted(shapes)[:4]}")
    hr, lr = np.stack(hr_list), np.stack(lr_list)
    scale = hr.shape[1] // lr.shape[1]
    if scale < 1 or hr.shape[1] != lr.shape[1] * scale or hr.shape[2] != lr.shape[2] * scale:
        raise ValueError(f"{test_dir}: HR {hr.shape[1:3]} is not an integer multiple of LR {lr.shape[1:3]}")
    return names, hr, lr, scale


def run_generator(model: Any, lr: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """SR images uint8 (N, H, W, 3) from a Keras generator mapping [-1, 1] LR to [-1, 1] SR."""
    out = []
    for start in range(0, lr.shape[0], batch_size):
        x = lr[start:start + batch_size].astype(np.float32) / 127.5 - 1.0
        y = np.asarray(model.predict_on_batch(x), dtype=np.float64)
        out.append(to_uint8((y + 1.0) * 127.5))
    return np.concatenate(out, axis=0)


def mean_interval(values: Sequence[float], ci: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean over images (NaN bounds for n < 2)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf(0.5 + ci / 2, v.size - 1)) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "method"


# ---- the study ---------------------------------------------------------------------------------

def evaluate_study(
    test_dir: str | Path,
    models: Mapping[str, Any],
    out_dir: str | Path,
    *,
    extractor: Any = "fid-inception",
    n_boot: int = 200,
    kid_subsets: int = 100,
    seed: int = 0,
    grid_images: int = 4,
    batch_size: int = 16,
    input_size: int | None = None,
    save_sr: bool = False,
    ci: float = 0.95,
    progress: bool = False,
) -> StudyResults:
    """Evaluate Bicubic and each model on ``test_dir`` and write the results into ``out_dir``.

    ``models``: display name -> saved generator path (``.keras``) or a Keras model.
    ``extractor``: a name for :func:`~upsampler.metrics.extractors.get_extractor`
    (``input_size`` is passed on; tests only) or a FeatureExtractor. ``n_boot``: bootstrap
    resamples for the FID interval (0: none); ``kid_subsets``: KID subsets (0: no KID);
    ``grid_images``: rows of the comparison figure (0: none); ``save_sr``: also write each
    method's SR images to ``out_dir/sr/<method>/``.
    """
    import pandas as pd

    from .extractors import get_extractor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, hr, lr, scale = load_split(test_dir)
    fe = get_extractor(extractor, input_size=input_size) if isinstance(extractor, str) else extractor

    outputs: dict[str, np.ndarray] = {BICUBIC: bicubic_upscale(lr, scale)}
    for method, model in models.items():
        if method == BICUBIC:
            raise ValueError(f"model name {BICUBIC!r} is reserved for the baseline")
        from ..models import load_generator

        net = load_generator(model) if isinstance(model, (str, Path)) else model
        sr = run_generator(net, lr, batch_size=batch_size)
        if sr.shape != hr.shape:
            raise ValueError(f"{method}: generator output {sr.shape[1:]} does not match HR {hr.shape[1:]}")
        outputs[method] = sr

    hr_feats = activations(hr, fe, batch_size=batch_size, progress=progress)
    rows, per_image_rows = [], []
    sr_dirs: dict[str, Path] = {}
    for method, sr in outputs.items():
        scores = [sr_metrics(s, h, scale) for s, h in zip(sr, hr)]
        for name, (p, s) in zip(names, scores):
            per_image_rows.append({"method": method, "image": name, "psnr": p, "ssim": s})
        psnr_m, psnr_lo, psnr_hi = mean_interval([p for p, _ in scores], ci)
        ssim_m, ssim_lo, ssim_hi = mean_interval([s for _, s in scores], ci)
        feats = activations(sr, fe, batch_size=batch_size, progress=progress)
        dm = distribution_metrics(feats, hr_feats, fe, n_boot=n_boot, kid_subsets=kid_subsets, seed=seed, ci=ci)
        rows.append({
            "method": method, "fid": dm.fid, "fid_low": dm.fid_low, "fid_high": dm.fid_high,
            "kid": dm.kid, "kid_std": dm.kid_std,
            "psnr": psnr_m, "psnr_low": psnr_lo, "psnr_high": psnr_hi,
            "ssim": ssim_m, "ssim_low": ssim_lo, "ssim_high": ssim_hi,
            "n_images": dm.n_a, "n_reference": dm.n_b, "feature_dim": dm.feature_dim,
            "extractor": dm.extractor, "extractor_label": dm.extractor_label,
            "comparable_with_published": dm.comparable_with_published,
        })
        if save_sr:
            sr_dirs[method] = _save_images(out_dir / "sr" / _slug(method), names, sr)

    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    per_image = pd.DataFrame(per_image_rows, columns=["method", "image", "psnr", "ssim"])
    metrics_csv, per_image_csv, markdown = out_dir / "metrics.csv", out_dir / "per_image_metrics.csv", out_dir / "metrics.md"
    table.to_csv(metrics_csv, index=False)
    per_image.to_csv(per_image_csv, index=False)
    untrained = getattr(fe, "name", "") == "inception-untrained"
    notes = [f"Test set: {Path(test_dir)} ({len(names)} images, x{scale}: {lr.shape[2]}x{lr.shape[1]} -> "
             f"{hr.shape[2]}x{hr.shape[1]}). Bicubic: Pillow bicubic upscaling of the LR images.",
             f"FID interval: {ci:.0%} bootstrap over images (normal approximation, {n_boot} resamples); "
             f"KID: mean ± std over {kid_subsets} subsets. PSNR/SSIM: Y channel, {scale}-px border shaved, "
             f"{ci:.0%} t-interval over images."]
    markdown.write_text(metrics_markdown(table, notes=notes, untrained=untrained))

    figures: dict[str, Path] = {}
    figures["fid_bar_chart"] = out_dir / "fid_bar_chart.png"
    fid_bar_chart(table, figures["fid_bar_chart"])
    if grid_images > 0:
        k = min(grid_images, len(names))
        columns = ["LR", *outputs.keys(), "HR"]
        panels = [{"LR": lr[i], **{m: outputs[m][i] for m in outputs}, "HR": hr[i]} for i in range(k)]
        figures["comparison_grid"] = out_dir / "comparison_grid.png"
        comparison_grid(panels, columns, figures["comparison_grid"], row_labels=names[:k])
    return StudyResults(table, per_image, out_dir, metrics_csv, per_image_csv, markdown, figures, sr_dirs,
                        getattr(fe, "name", str(extractor)), getattr(fe, "label", ""), untrained)


def _save_images(folder: Path, names: Sequence[str], images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, images):
        Image.fromarray(img).save(folder / (Path(name).stem + ".png"))
    return folder


# ---- reporting ---------------------------------------------------------------------------------

def _fmt_interval(value: float, low: float, high: float, digits: int) -> str:
    if not math.isfinite(value):
        return "n/a"
    text = format_value(value, digits)
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{format_value(low, digits)}, {format_value(high, digits)}]"
    return text


def metrics_markdown(table: Any, *, notes: Sequence[str] = (), untrained: bool | None = None) -> str:
    """A Markdown summary: one row per method, with the extractor label column.

    When the features are untrained (``untrained`` or any row's extractor is
    ``inception-untrained``) a bold warning line comes first.
    """
    from .extractors import UNTRAINED_LABEL

    if untrained is None:
        untrained = bool((table["extractor"] == "inception-untrained").any())
    lines = ["# Evaluation: Bicubic vs models", ""]
    if untrained:
        lines += [f"> **WARNING: {UNTRAINED_LABEL}.** The 'FID' and 'KID' columns below come from a randomly "
                  "initialised InceptionV3 (offline fallback). They are not FID/KID values and cannot be compared "
                  "with any published number.", ""]
    elif not bool(table["comparable_with_published"].all()):
        lines += ["> Note: features are not the reference TF-GAN FID Inception; FID values are not comparable "
                  "with published FID.", ""]
    lines += [f"- {n}" for n in notes]
    if notes:
        lines.append("")
    lines.append("| Method | FID [95% CI] | KID ×10³ ± std | PSNR (dB) [95% CI] | SSIM [95% CI] | N | dim | extractor |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for _, r in table.iterrows():
        kid = "n/a" if not math.isfinite(r["kid"]) else f"{format_value(1e3 * r['kid'], 3)} ± {format_value(1e3 * r['kid_std'], 3)}"
        lines.append(
            f"| {r['method']} | {_fmt_interval(r['fid'], r['fid_low'], r['fid_high'], 2)} | {kid} | "
            f"{_fmt_interval(r['psnr'], r['psnr_low'], r['psnr_high'], 2)} | "
            f"{_fmt_interval(r['ssim'], r['ssim_low'], r['ssim_high'], 4)} | {r['n_images']} vs {r['n_reference']} | "
            f"{r['feature_dim']} | {r['extractor_label']} |")
    return "\n".join(lines) + "\n"


def _error_bars(values, lows, highs) -> np.ndarray | None:
    values, lows, highs = (np.asarray(a, dtype=np.float64) for a in (values, lows, highs))
    if not (np.all(np.isfinite(lows)) and np.all(np.isfinite(highs))):
        return None
    return np.vstack([np.maximum(values - lows, 0), np.maximum(highs - values, 0)])


def fid_bar_chart(table: Any, path: str | Path | None = None):
    """Bar charts of FID (with its interval) and PSNR (with its interval) per method.

    ``table``: a DataFrame with the columns of :func:`evaluate_study`'s table (at least
    method, fid, fid_low, fid_high, extractor, extractor_label; PSNR panel when psnr columns
    exist). Returns a ``matplotlib.figure.Figure``; saved as PNG when ``path`` is given.
    """
    from matplotlib.figure import Figure

    from .extractors import UNTRAINED_LABEL

    has_psnr = "psnr" in table.columns
    fig = Figure(figsize=(10 if has_psnr else 5.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if has_psnr else 1, squeeze=False)[0]
    methods = list(table["method"])
    x = np.arange(len(methods))
    colors = [f"C{i}" for i in range(len(methods))]
    untrained = bool((table["extractor"] == "inception-untrained").any())
    ax = axes[0]
    ax.bar(x, table["fid"], yerr=_error_bars(table["fid"], table["fid_low"], table["fid_high"]), capsize=6,
           color=colors)
    ax.set_xticks(x, methods)
    ax.set_ylabel("FID-like distance (untrained features)" if untrained else "FID (lower is better)")
    ax.set_title("FID with 95% interval")
    for xi, v in zip(x, table["fid"]):
        ax.annotate(format_value(v, 2), (xi, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=9)
    if has_psnr:
        ax = axes[1]
        ax.bar(x, table["psnr"], yerr=_error_bars(table["psnr"], table["psnr_low"], table["psnr_high"]), capsize=6,
               color=colors)
        ax.set_xticks(x, methods)
        ax.set_ylabel("PSNR on Y (dB, higher is better)")
        ax.set_title("PSNR with 95% interval")
        low = float(np.nanmin(table["psnr_low"] if np.all(np.isfinite(table["psnr_low"])) else table["psnr"]))
        ax.set_ylim(max(0.0, low - 2.0), None)
    label = str(table["extractor_label"].iloc[0]) if len(table) else ""
    if untrained:
        fig.suptitle(f"WARNING: {UNTRAINED_LABEL}", color="red", fontweight="bold")
    else:
        fig.suptitle(f"features: {label}", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=120)
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

    Each panel maps a column name to a uint8 image. Drawn by :func:`upsampler.plots.grid_figure`:
    every panel the same display size, enlarged images (the LR input) blocky
    (``interpolation="nearest"``), so the "Bicubic" column shows exactly the bicubic upscale it
    was given. Returns a Figure; saved as PNG when ``path`` is given.
    """
    from ..plots import grid_figure

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

