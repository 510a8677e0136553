"""Figures: loss curves, the discriminator's health, and image comparison panels.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot``, so no
global figure registry and no GUI backend is needed - safe under Agg, in tests and on
servers), returns it, and writes it to ``path`` when one is given (PNG by default, parent
folders created). Every function takes ``note``: a line printed in red at the bottom of the
figure - used for :data:`upsampler.config.UNTRAINED_VGG_WARNING` (see :func:`note_for_config`
and :func:`note_for_run`) so that a figure of a run trained with an untrained VGG can never be
mistaken for a real SRGAN result.

Image panels are shown at one common display size. An image smaller than its panel is
enlarged with ``interpolation="nearest"`` (LR pixels stay visible blocks): matplotlib's own
smoothing is never used to enlarge an image, because the original study's "Bicubic" panel was
exactly that (defect #5); a real bicubic panel must come from
:func:`upsampler.data.images.bicubic_upscale`. Images larger than their panel are shrunk with
matplotlib's antialiasing.
"""

from __future__ import annotations

import json
import re
import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from upsampler.utils.argtypes import integer, number

DEFAULT_ZOOM = (1500, 1750)  # the original's zoomed window (epochs)
NOTE_COLOR = "crimson"
PANEL_DPI = 100
PANEL_MIN_INCHES = 2.0
PANEL_MAX_INCHES = 8.0

Panel = tuple[str, np.ndarray]


# ---- notes -------------------------------------------------------------------------------------

def note_for_config(config: Any) -> str | None:
    """The untrained-VGG warning when ``config`` used untrained features, else None.

    ``config`` is a :class:`upsampler.config.Config`, its ``to_dict()`` form (a loaded
    ``config.json``) or None.
    """
    from upsampler.config import UNTRAINED_VGG_WARNING, Config

    if config is None:
        return None
    if isinstance(config, dict):
        try:
            config = Config.from_dict(config)
        except (TypeError, ValueError):
            return None
    return UNTRAINED_VGG_WARNING if getattr(config, "uses_untrained_features", False) else None


def note_for_run(path: str | Path) -> str | None:
    """The untrained-VGG warning for a run: reads ``config.json`` in ``path`` (a run directory,
    or a file inside one) or its parent; None when there is none or it used ImageNet VGG."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "config.json", folder.parent / "config.json"):
        if candidate.is_file():
            try:
                return note_for_config(json.loads(candidate.read_text()))
            except (OSError, json.JSONDecodeError):
                return None
    return None


# ---- figure plumbing ---------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=PANEL_DPI, layout="constrained")


def _decorate(fig, title: str | None, note: str | None) -> None:
    if title:
        fig.suptitle(title)
    if note:
        width_chars = max(40, int(fig.get_figwidth() * 13))
        fig.supxlabel("\n".join(textwrap.wrap(note, width_chars)), color=NOTE_COLOR, fontsize=9)


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, PNG when none); creates parent folders."""
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    return path


def close(fig) -> None:
    """Release a figure's drawing resources (figures here are not registered with pyplot)."""
    fig.clear()


def figure_texts(fig) -> list[str]:
    """All text strings drawn in ``fig`` (titles, labels, notes, legends): for tests and checks."""
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


# ---- loss curves -------------------------------------------------------------------------------

def zoom_window(epochs: Sequence[int] | np.ndarray, zoom: tuple[int, int] | None) -> tuple[int, int] | None:
    """The epochs ``(first, last)`` of the zoomed panel.

    ``zoom`` is clipped to the logged epochs. When that leaves fewer than two epochs (a run
    shorter than the window's start), the window is the last ~25% of the run instead.
    None when ``zoom`` is None or there are fewer than two epochs.
    """
    epochs = np.asarray(epochs)
    if zoom is None or epochs.size < 2:
        return None
    start, end = int(min(zoom)), int(max(zoom))
    first, last = int(epochs.min()), int(epochs.max())
    lo, hi = max(start, first), min(end, last)
    if hi - lo >= 1:
        return lo, hi
    span = last - first
    return max(first, last - max(1, math.ceil(0.25 * span))), last


def _loss_series(frame, adversarial_weight: float):
    from upsampler.training.health import adversarial_rows, per_epoch

    rows = per_epoch(adversarial_rows(frame))
    epochs = rows["epoch"].to_numpy()
    series = []
    for column, label, color, factor in (
        ("g_loss", "perceptual (G total)", "tab:blue", 1.0),
        ("content_loss", "content", "tab:orange", 1.0),
        ("adversarial_loss", f"adversarial x {adversarial_weight:g}", "tab:green", adversarial_weight),
    ):
        if column in rows.columns and rows[column].notna().any():
            series.append((label, color, rows[column].to_numpy(float) * factor))
    return epochs, series


def _draw_losses(ax_full, ax_zoom, frame, *, adversarial_weight: float, zoom, logy: bool, label: str | None) -> None:
    epochs, series = _loss_series(frame, adversarial_weight)
    for label_text, color, values in series:
        ax_full.plot(epochs, values, color=color, linewidth=0.8, label=label_text)
    ax_full.set_xlabel("epoch")
    ax_full.set_ylabel("loss")
    ax_full.set_title(f"{label}: all epochs" if label else "all epochs")
    if logy:
        ax_full.set_yscale("log")
    if series:
        ax_full.legend(fontsize=8, loc="upper right")
    else:
        ax_full.text(0.5, 0.5, "no generator losses in this log", ha="center", va="center", transform=ax_full.transAxes)
    if ax_zoom is None:
        return
    window = zoom_window(epochs, zoom)
    if window is None:
        ax_zoom.text(0.5, 0.5, "too few epochs to zoom", ha="center", va="center", transform=ax_zoom.transAxes)
        ax_zoom.set_axis_off()
        return
    lo, hi = window
    inside = (epochs >= lo) & (epochs <= hi)
    ymin, ymax = math.inf, -math.inf
    for label_text, color, values in series:
        ax_zoom.plot(epochs[inside], values[inside], color=color, linewidth=0.8, label=label_text)
        finite = values[inside][np.isfinite(values[inside])]
        if finite.size:
            ymin, ymax = min(ymin, finite.min()), max(ymax, finite.max())
    ax_zoom.set_xlim(lo, hi)
    if math.isfinite(ymin) and ymax > ymin:
        pad = 0.05 * (ymax - ymin)
        ax_zoom.set_ylim(ymin - pad, ymax + pad)
    if logy:
        ax_zoom.set_yscale("log")
    ax_zoom.set_xlabel("epoch")
    ax_zoom.set_title(f"zoom: epochs {lo}-{hi}")
    # Mark the window on the full view.
    ax_full.axvspan(lo, hi, color="0.85", zorder=0)


def plot_losses(
    frame,
    *,
    title: str,
    adversarial_weight: float = 1e-3,
    zoom: tuple[int, int] | None = DEFAULT_ZOOM,
    path: str | Path | None = None,
    note: str | None = None,
    logy: bool = False,
):
    """The original's loss figure: perceptual (``g_loss``), content and adversarial x weight.

    Layout: two axes side by side - all epochs on the left (the zoom window shaded grey),
    the zoomed window on the right with its own y-range (the curves are flat at full scale
    late in training). ``zoom`` is clipped by :func:`zoom_window`; None gives one axes.
    Pre-training rows of a ``loss.csv`` are left out (adversarial phase only).

    Args:
        frame: a loss table (:func:`upsampler.study.losslog.read_loss_log` ``.frame`` or a loss.csv).
        title: figure title.
        adversarial_weight: the adversarial curve is multiplied by this (the study's 1e-3).
        zoom: ``(first, last)`` epochs of the zoomed panel, or None.
        path: where to save the figure (optional).
        note: red line at the bottom (e.g. the untrained-VGG warning).
        logy: logarithmic loss axes.
    """
    fig = _figure(12.0 if zoom is not None else 7.0, 4.2)
    if zoom is not None:
        ax_full, ax_zoom = fig.subplots(1, 2)
    else:
        ax_full, ax_zoom = fig.subplots(1, 1), None
    _draw_losses(ax_full, ax_zoom, frame, adversarial_weight=adversarial_weight, zoom=zoom, logy=logy, label=None)
    _decorate(fig, title, note)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_loss_logs(
    logs: Sequence[tuple[str, Any]],
    *,
    title: str | None = None,
    adversarial_weight: float = 1e-3,
    zoom: tuple[int, int] | None = DEFAULT_ZOOM,
    path: str | Path | None = None,
    note: str | None = None,
    logy: bool = False,
):
    """:func:`plot_losses` for several logs: one row per ``(label, frame)``, full | zoom."""
    if not logs:
        raise ValueError("plot_loss_logs needs at least one log")
    ncols = 2 if zoom is not None else 1
    fig = _figure(6.0 * ncols, 3.8 * len(logs))
    axes = np.asarray(fig.subplots(len(logs), ncols, squeeze=False))
    for row, (label, frame) in enumerate(logs):
        _draw_losses(axes[row, 0], axes[row, 1] if ncols == 2 else None, frame,
                     adversarial_weight=adversarial_weight, zoom=zoom, logy=logy, label=label)
    _decorate(fig, title, note)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_discriminator(
    frame,
    *,
    title: str,
    path: str | Path | None = None,
    note: str | None = None,
    patience: int = 3,
    threshold: float = 0.05,
):
    """``d_loss`` (top) and the mean D(real) / D(fake) probabilities (bottom) per epoch.

    Saturated stretches found by :func:`upsampler.training.health.detect_saturation` are shaded red
    on both axes and the verdict is printed under the title. For logs without probabilities
    (the original's) the bottom axes says so, and the top one shows the clipped-BCE ``d_loss``
    of a saturated D as a dashed reference line.
    """
    from upsampler.training.health import adversarial_rows, detect_saturation, per_epoch, saturated_bce_d_loss

    rows = per_epoch(adversarial_rows(frame))
    report = detect_saturation(frame, patience=patience, threshold=threshold)
    fig = _figure(10.0, 6.0)
    ax_loss, ax_prob = fig.subplots(2, 1, sharex=True)
    epochs = rows["epoch"].to_numpy() if len(rows) else np.array([])

    if "d_loss" in rows.columns and rows["d_loss"].notna().any():
        ax_loss.plot(epochs, rows["d_loss"].to_numpy(float), color="tab:purple", linewidth=0.8, label="d_loss")
    if report.method == "d_loss":
        ax_loss.axhline(saturated_bce_d_loss(), color="k", linestyle="--", linewidth=0.8,
                        label=f"saturated D, clipped BCE ({saturated_bce_d_loss():.3f})")
    ax_loss.set_ylabel("d_loss")
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend(fontsize=8, loc="upper right")

    has_probs = all(c in rows.columns and rows[c].notna().any() for c in ("d_real", "d_fake"))
    if has_probs:
        ax_prob.plot(epochs, rows["d_real"].to_numpy(float), color="tab:blue", linewidth=0.8, label="D(real)")
        ax_prob.plot(epochs, rows["d_fake"].to_numpy(float), color="tab:red", linewidth=0.8, label="D(fake)")
        ax_prob.set_ylim(-0.02, 1.02)
        ax_prob.legend(fontsize=8, loc="center right")
    else:
        ax_prob.text(0.5, 0.5, "no D(real)/D(fake) probabilities in this log", ha="center", va="center",
                     transform=ax_prob.transAxes)
    ax_prob.set_ylabel("mean probability")
    ax_prob.set_xlabel("epoch")

    for first, last in report.zones:
        for ax in (ax_loss, ax_prob):
            ax.axvspan(first - 0.5, last + 0.5, color="red", alpha=0.15, zorder=0)
    verdict = ("D SATURATED" if report.saturated else "D not saturated") + (
        f" (epochs {report.epochs[0]}-{report.epochs[1]})" if report.saturated and report.epochs else "")
    ax_loss.set_title(verdict + ("  [shaded: saturated]" if report.zones else ""),
                      color="red" if report.saturated else "black", fontsize=10)
    _decorate(fig, title, note)
    if path is not None:
        save_figure(fig, path)
    return fig


# ---- image panels ----------------------------------------------------------------------------

def _check_panel(label: str, image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"panel {label!r}: expected uint8 pixels, got {arr.dtype}")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3))):
        raise ValueError(f"panel {label!r}: expected (H, W) or (H, W, 3), got shape {arr.shape}")
    return arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr


def panel_inches(images: Sequence[np.ndarray]) -> float:
    """Side of one panel (inches): the largest image at 1:1 at :data:`PANEL_DPI`, within
    [:data:`PANEL_MIN_INCHES`, :data:`PANEL_MAX_INCHES`]."""
    largest = max(max(np.asarray(im).shape[:2]) for im in images)
    return float(min(PANEL_MAX_INCHES, max(PANEL_MIN_INCHES, largest / PANEL_DPI)))


def display_interpolation(image: np.ndarray, display_pixels: float) -> str:
    """``"nearest"`` for an image enlarged on screen (never smoothed), else ``"antialiased"``."""
    return "nearest" if max(np.asarray(image).shape[:2]) <= display_pixels else "antialiased"


def _draw_panel(ax, label: str, image: np.ndarray, display_pixels: float) -> None:
    h, w = image.shape[:2]
    interpolation = display_interpolation(image, display_pixels)
    kwargs = {"cmap": "gray", "vmin": 0, "vmax": 255} if image.ndim == 2 else {}
    # extent maps every image into the same unit square (centred, aspect kept), so all panels
    # have one display size.
    side = max(h, w)
    x0, y0 = (1 - w / side) / 2, (1 - h / side) / 2
    ax.imshow(image, interpolation=interpolation, extent=(x0, x0 + w / side, y0 + h / side, y0), **kwargs)
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(f"{label}\n{w}x{h}", fontsize=9)


def grid_figure(
    rows: Sequence[Sequence[Panel]],
    path: str | Path | None = None,
    title: str | None = None,
    note: str | None = None,
):
    """Several rows of labelled ``uint8`` images, every panel the same display size.

    Args:
        rows: each row a list of ``(label, image)``; images ``(H, W, 3)`` or ``(H, W)``
            uint8. Rows may differ in length (the grid has the longest row's width).
        path: where to save (optional); title, note: as elsewhere.
    """
    rows = [[(label, _check_panel(label, image)) for label, image in row] for row in rows]
    if not rows or not any(rows):
        raise ValueError("grid_figure needs at least one image")
    ncols = max(len(row) for row in rows)
    side = panel_inches([im for row in rows for _, im in row])
    fig = _figure(side * ncols, (side + 0.45) * len(rows) + (0.4 if title else 0) + (0.4 if note else 0))
    axes = np.asarray(fig.subplots(len(rows), ncols, squeeze=False))
    display_pixels = side * fig.dpi
    for r, row in enumerate(rows):
        for c in range(ncols):
            if c < len(row):
                _draw_panel(axes[r, c], row[c][0], row[c][1], display_pixels)
            else:
                axes[r, c].set_axis_off()
    _decorate(fig, title, note)
    if path is not None:
        save_figure(fig, path)
    return fig


def panel_figure(
    panels: Sequence[Panel],
    path: str | Path | None = None,
    title: str | None = None,
    note: str | None = None,
):
    """One row of labelled ``uint8`` images shown at the same display size (LR | ... | HR).

    Enlarged images (LR) are drawn with ``interpolation="nearest"`` - visibly blocky, never
    smoothed by matplotlib (see the module docstring).
    """
    return grid_figure([list(panels)], path=path, title=title, note=note)


# ---- command line: `upsampler losses` ----------------------------------------------------------------------------

def configure_losses_parser(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="loss logs: a run's loss.csv (or its run directory) or an original-format text log")
    p.add_argument("--out", required=True, metavar="FIG",
                   help="figure to write (PNG): one row per log, all epochs | zoomed window; "
                        "a discriminator figure per log is written beside it as FIG-stem_discriminator_<log>.png")
    p.add_argument("--zoom", nargs=2, type=integer(0), metavar=("START", "END"), default=(1500, 1750),
                   help="epochs of the zoomed panel (default 1500 1750, as the original; clipped to the run)")
    p.add_argument("--no-zoom", action="store_true", help="no zoomed panel")
    p.add_argument("--adversarial-weight", type=number(0, low_open=True), default=1e-3,
                   help="weight the adversarial curve is multiplied by (default 1e-3, the study's)")
    p.add_argument("--patience", type=integer(1), default=3, help="consecutive saturated epochs for the verdict (default 3)")
    p.add_argument("--threshold", type=number(0, 0.5, low_open=True), default=0.05,
                   help="probability margin for a saturated D: both >= 1-t or both <= t (default 0.05)")


def run_losses(args) -> int:
    from upsampler.study.losslog import _unique_labels, find_copied_records, read_loss_log
    from upsampler.training.health import detect_saturation

    logs = [read_loss_log(p) for p in args.paths]
    labels = _unique_labels(logs)
    zoom = None if args.no_zoom else tuple(args.zoom)
    note = note_for_logs(logs)
    out = Path(args.out)
    if out.suffix == "":
        out = out.with_suffix(".png")
    for label, log in zip(labels, logs):
        for line in log.summary_lines():
            print(line)
        report = detect_saturation(log.frame, patience=args.patience, threshold=args.threshold)
        print(f"  discriminator: {report}")
        disc_path = out.with_name(f"{out.stem}_discriminator_{_slug(Path(label).stem)}{out.suffix}")
        fig = plot_discriminator(log.frame, title=f"{label}: discriminator", path=disc_path, note=note,
                                       patience=args.patience, threshold=args.threshold)
        close(fig)
        print(f"  wrote {disc_path}")
    if len(logs) > 1:
        for line in find_copied_records(logs).summary_lines():
            print(line)
    fig = plot_loss_logs(
        [(label, log.frame) for label, log in zip(labels, logs)],
        adversarial_weight=args.adversarial_weight, zoom=zoom, path=out, note=note,
    )
    close(fig)
    print(f"wrote {out}")
    if note:
        print(note)
    return 0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "log"


def note_for_logs(logs) -> str | None:
    """The untrained-VGG note when a log's run directory has a config.json that used it."""
    for log in logs:
        note = note_for_run(log.path.parent)
        if note:
            return note
    return None
