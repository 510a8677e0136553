"""Is the discriminator healthy? Saturation and collapse, read from a loss table.

**Saturation (defect #1 of the original study).** :func:`detect_saturation` flags a
discriminator that stayed saturated for ``patience`` consecutive epochs, judged

* from the probabilities when the log has them: D(real) and D(fake) both >= 1 - threshold,
  or both <= threshold (D can no longer tell real from fake and, through a clipped or
  saturated sigmoid, passes almost no gradient);
* otherwise from ``d_loss``: a D that outputs 1.0 for every image under Keras' clipped
  binary cross-entropy has a *known, constant* loss (:func:`saturated_bce_d_loss`, 7.971 with
  the study's noisy labels), so a ``d_loss`` pinned within ``d_loss_tolerance`` of it epoch
  after epoch is the signature. The original's logs sit there for all 2500 epochs.

**Collapse.** :func:`detect_collapse` flags D(real) and D(fake) both stuck near 0.5. The
trainer checks both after every adversarial epoch (``upsampler.training.train``); the loss
plots shade what they find (:mod:`upsampler.study.plots`). Tables come from
:func:`upsampler.study.losslog.read_loss_log` or a run's ``loss.csv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

KERAS_EPSILON = 1e-7  # Keras' backend epsilon: probabilities are clipped to [eps, 1 - eps] before the log


# ---- saturation ------------------------------------------------------------------------------

def saturated_bce_d_loss(
    real_label_mean: float = 0.9, fake_label_mean: float = 0.1, epsilon: float = KERAS_EPSILON
) -> float:
    """``d_loss`` of a discriminator that outputs 1.0 for every image, under Keras' clipped BCE.

    Keras (2.x, TensorFlow backend) clips probabilities to ``[eps, 1 - eps]`` in float32 and
    turns them back into logits, so a probability of 1.0 becomes the logit
    ``z = log((1 - eps) / eps)``; with ``eps = 1e-7`` in float32 (``1 - eps`` rounds to
    ``1 - 2**-23``) ``z = log(2**23 - 1) = 15.942``. The BCE of that logit against a label
    ``y`` is ``z * (1 - y)``, and D's loss is the mean of its real (labels ~ 0.9) and fake
    (labels ~ 0.1) halves: ``z * (1 - (0.9 + 0.1) / 2) = 7.971``. (A D that outputs 0.0
    everywhere gives ``z * (0.9 + 0.1) / 2``, the same 7.971 with these symmetric labels.)
    The generator's adversarial loss in the same state is ``z * (1 - 0.9) = 1.594``, also what
    the original logged.

    With batches of 32 and label std 0.05 the last-batch ``d_loss`` scatters around this by
    ``z * 0.05 / 8 = 0.10`` (std), matching the original logs.

    Returns:
        the expected ``d_loss`` (nats per image).
    """
    one_minus = float(np.float32(1.0 - epsilon))
    z = math.log(one_minus / float(np.float32(1.0) - np.float32(one_minus)))
    return z * (1.0 - (real_label_mean + fake_label_mean) / 2.0)


@dataclass(frozen=True)
class SaturationReport:
    """The verdict of :func:`detect_saturation`.

    Attributes:
        saturated: True when D was saturated for at least ``patience`` consecutive epochs.
        evidence: one line quoting the numbers behind the verdict.
        method: ``"probabilities"``, ``"d_loss"`` or ``"none"`` (nothing to judge).
        epochs: ``(first, last)`` epoch of the longest saturated stretch, or None.
        zones: every saturated stretch of ``>= patience`` epochs, as ``(first, last)``.
        ongoing: the last logged epoch is inside a saturated stretch of ``>= patience`` epochs.
        fraction: fraction of the judged epochs that look saturated (0..1).
    """

    saturated: bool
    evidence: str
    method: str
    epochs: tuple[int, int] | None = None
    zones: tuple[tuple[int, int], ...] = ()
    ongoing: bool = False
    fraction: float = 0.0

    def __str__(self) -> str:
        return ("SATURATED: " if self.saturated else "not saturated: ") + self.evidence


def adversarial_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The adversarial-phase rows of a loss table (all rows when it has no ``phase`` column).

    Pre-training rows (``phase == "pretrain"``) have no discriminator and are left out; if a
    log has *only* pre-training rows they are returned as they are.
    """
    if "phase" not in frame.columns:
        return frame
    adv = frame[frame["phase"].astype(str) != "pretrain"]
    return adv if len(adv) else frame


def per_epoch(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch (the last record of an epoch wins), sorted by epoch."""
    if frame.empty:
        return frame
    out = frame.drop_duplicates(subset=["epoch"], keep="last").sort_values("epoch", kind="stable")
    return out.reset_index(drop=True)


def detect_saturation(
    frame: pd.DataFrame,
    *,
    patience: int = 3,
    threshold: float = 0.05,
    d_loss_tolerance: float = 0.5,
    real_label_mean: float = 0.9,
    fake_label_mean: float = 0.1,
) -> SaturationReport:
    """Flag a discriminator that stayed saturated for ``patience`` consecutive epochs.

    Works on any prefix of a run (the trainer calls it every epoch): with fewer than
    ``patience`` judged epochs the verdict is "not saturated".

    Args:
        frame: a loss table as in :func:`upsampler.study.losslog.read_loss_log` (columns ``epoch``, ``d_loss`` and,
            when available, ``d_real``/``d_fake``). Pre-training rows are ignored.
        patience: consecutive saturated epochs needed for the verdict (>= 1).
        threshold: probability margin: an epoch is saturated when D(real) and D(fake) are
            both >= 1 - threshold or both <= threshold (in [0, 0.5)).
        d_loss_tolerance: without probabilities, an epoch is saturated when ``|d_loss -
            saturated_bce_d_loss(...)|`` is at most this (nats). The default 0.5 is five
            standard deviations of the batch-to-batch scatter of a saturated D's loss.
        real_label_mean, fake_label_mean: the label means used in training (for the
            expected saturated ``d_loss``).
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    if not 0.0 <= threshold < 0.5:
        raise ValueError(f"threshold must be in [0, 0.5), got {threshold}")
    rows = per_epoch(adversarial_rows(frame))
    has = lambda c: c in rows.columns and rows[c].notna().any()  # noqa: E731
    if has("d_real") and has("d_fake"):
        judged = rows[rows["d_real"].notna() & rows["d_fake"].notna()]
        r, f = judged["d_real"].to_numpy(float), judged["d_fake"].to_numpy(float)
        high = (r >= 1 - threshold) & (f >= 1 - threshold)
        low = (r <= threshold) & (f <= threshold)
        mask = high | low
        epochs = judged["epoch"].to_numpy(int)
        stats = (
            f"D(real) mean {r.mean():.3f} (min {r.min():.3f}, max {r.max():.3f}), "
            f"D(fake) mean {f.mean():.3f} (min {f.min():.3f}, max {f.max():.3f}) over {len(r)} epochs; "
            f"{mask.mean():.0%} of epochs have both >= {1 - threshold:g} or both <= {threshold:g}"
            f" ({int(high.sum())} high, {int(low.sum())} low)"
        )
        return _verdict(epochs, mask, patience, "probabilities", stats)
    if has("d_loss"):
        judged = rows[rows["d_loss"].notna()]
        d = judged["d_loss"].to_numpy(float)
        expected = saturated_bce_d_loss(real_label_mean, fake_label_mean)
        mask = np.abs(d - expected) <= d_loss_tolerance
        epochs = judged["epoch"].to_numpy(int)
        stats = (
            f"d_loss mean {d.mean():.3f}, std {d.std():.3f}, min {d.min():.3f}, max {d.max():.3f} over {len(d)} epochs; "
            f"{mask.mean():.1%} within {d_loss_tolerance:g} of {expected:.3f}, the clipped-BCE loss of a D that "
            f"outputs 1.0 for every image (no D probabilities in this log)"
        )
        return _verdict(epochs, mask, patience, "d_loss", stats)
    return SaturationReport(False, "no discriminator losses or probabilities in this log", "none")


def detect_collapse(frame: pd.DataFrame, *, patience: int = 3, tolerance: float = 0.05) -> SaturationReport:
    """Flag a *collapsed* discriminator: D(real) and D(fake) both within ``tolerance`` of 0.5 for
    ``patience`` consecutive epochs - D no longer tells real from generated images, so the
    adversarial term carries no information (the opposite failure to saturation). Needs the
    ``d_real``/``d_fake`` columns of this project's loss.csv. The report reads "SATURATED" /
    "not saturated" in ``str()``; use :func:`collapse_line` for a collapse message.
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    if not 0.0 < tolerance < 0.5:
        raise ValueError(f"tolerance must be in (0, 0.5), got {tolerance}")
    rows = per_epoch(adversarial_rows(frame))
    if not {"d_real", "d_fake"} <= set(rows.columns) or not rows["d_real"].notna().any():
        return SaturationReport(False, "no D(real)/D(fake) in this log", "none")
    judged = rows[rows["d_real"].notna() & rows["d_fake"].notna()]
    r, f = judged["d_real"].to_numpy(float), judged["d_fake"].to_numpy(float)
    mask = (np.abs(r - 0.5) <= tolerance) & (np.abs(f - 0.5) <= tolerance)
    stats = (f"D(real) mean {r.mean():.3f}, D(fake) mean {f.mean():.3f} over {len(r)} epochs; "
             f"{mask.mean():.0%} of epochs have both within {tolerance:g} of 0.5")
    report = _verdict(judged["epoch"].to_numpy(int), mask, patience, "probabilities", stats)
    return SaturationReport(report.saturated, report.evidence.replace("saturated", "collapsed"), report.method,
                            report.epochs, report.zones, report.ongoing, report.fraction)


def collapse_line(report: SaturationReport) -> str:
    return ("COLLAPSED: " if report.saturated else "not collapsed: ") + report.evidence


def _verdict(epochs: np.ndarray, mask: np.ndarray, patience: int, method: str, stats: str) -> SaturationReport:
    if len(epochs) == 0:
        return SaturationReport(False, "no epochs to judge", method)
    runs = _runs_of_true(epochs, mask)
    zones = tuple(run for run, length in runs if length >= patience)
    longest = max(runs, key=lambda item: item[1], default=None)
    ongoing = bool(zones) and bool(mask[-1]) and zones[-1][1] == int(epochs[-1])
    fraction = float(mask.mean())
    if zones:
        (first, last), length = max(((z, n) for z, n in runs if n >= patience), key=lambda item: item[1])
        where = f"saturated for {length} consecutive epochs ({first}-{last})"
        if len(zones) > 1:
            where += f", {len(zones)} saturated stretches in all"
        return SaturationReport(True, f"{where}: {stats}", method, (first, last), zones, ongoing, fraction)
    if longest is not None and longest[1] > 0:
        note = f"longest saturated stretch {longest[1]} epochs (< patience {patience}): "
        epochs_range = longest[0]
    else:
        note = ""
        epochs_range = None
    return SaturationReport(False, note + stats, method, epochs_range, (), False, fraction)


def _runs_of_true(epochs: np.ndarray, mask: np.ndarray) -> list[tuple[tuple[int, int], int]]:
    """Maximal stretches of consecutive judged rows with ``mask`` True: ((first, last), length).

    Rows are consecutive when their epoch numbers differ by one (a gap breaks the stretch).
    """
    runs: list[tuple[tuple[int, int], int]] = []
    start = None
    length = 0
    prev_epoch = None
    for epoch, flag in zip(epochs.tolist(), mask.tolist()):
        contiguous = prev_epoch is not None and epoch == prev_epoch + 1
        if flag and start is not None and contiguous:
            length += 1
        elif flag:
            if start is not None:
                runs.append(((start, prev_epoch), length))
            start, length = epoch, 1
        elif start is not None:
            runs.append(((start, prev_epoch), length))
            start, length = None, 0
        prev_epoch = epoch
    if start is not None:
        runs.append(((start, prev_epoch), length))
    return runs
