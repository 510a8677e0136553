"""Loss logs: read them, find copied records, and flag a saturated discriminator.

Two formats are read into one table (:data:`COLUMNS`):

* a run's ``loss.csv`` written by :mod:`upsampler.training.train` (one row per phase and epoch:
  ``phase, epoch, step, d_loss, g_loss, content_loss, adversarial_loss, d_real, d_fake,
  seconds``; ``d_real``/``d_fake`` are the discriminator's mean probabilities in [0, 1]);
* the original study's text logs (``COCO_loss.txt``, ``CelebA_loss.txt``), one line per
  epoch holding the *last batch's* losses::

      EPOCH 1\\t\\td_loss 7.968418598175049\\tgan_loss [0.07464352, 0.072894074, 1.7494463]

  ``gan_loss`` is Keras' ``[total, content, adversarial]`` of the combined model; the total
  is the perceptual loss ``content + 1e-3 * adversarial``. They map to ``g_loss``,
  ``content_loss`` and ``adversarial_loss``; the original logged no D probabilities, so
  ``d_real``/``d_fake`` are NaN.

**Copied records (defect #3 of the original).** Its loss logs were truncated at every resume
and spliced back together by hand. :func:`read_loss_log` reports repeated epoch numbers and
records whose values repeat an earlier record of the same log; :func:`find_copied_records`
finds records shared *between* logs. In the shipped seed logs there are no repeated epoch
numbers, but 349 epochs hold identical records in both files (epochs 601-725, 1876-2025,
2251-2275, 2351-2399), CelebA's epoch 2400 repeats its (shared) epoch 2392, and COCO's line
2025 - the last of a copied block - lacks its closing ``]``.

**Saturation (defect #1).** :func:`detect_saturation` flags a discriminator that stayed
saturated for ``patience`` consecutive epochs, judged

* from the probabilities when the log has them: D(real) and D(fake) both >= 1 - threshold,
  or both <= threshold (D can no longer tell real from fake and, through a clipped or
  saturated sigmoid, passes almost no gradient);
* otherwise from ``d_loss``: a D that outputs 1.0 for every image under Keras' clipped
  binary cross-entropy has a *known, constant* loss (:func:`saturated_bce_d_loss`, 7.971 with
  the study's noisy labels), so a ``d_loss`` pinned within ``d_loss_tolerance`` of it epoch
  after epoch is the signature. The original's logs sit there for all 2500 epochs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

COLUMNS = ["epoch", "step", "d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake", "seconds"]
VALUE_COLUMNS = ["d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake"]
ORIGINAL = "original"
CSV = "csv"

KERAS_EPSILON = 1e-7  # Keras' backend epsilon: probabilities are clipped to [eps, 1 - eps] before the log

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf|NaN|Inf)"
_ORIGINAL_LINE = re.compile(
    rf"^\s*EPOCH\s+(\d+)\s+d_loss\s+({_NUMBER})\s+gan_loss\s+\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*(\])?\s*$"
)


# ---- reading ---------------------------------------------------------------------------------

@dataclass
class LossLog:
    """One parsed loss log.

    Attributes:
        path: the file read.
        source_format: ``"original"`` (the study's text log) or ``"csv"`` (a run's loss.csv).
        frame: one row per record, columns :data:`COLUMNS` (+ ``phase`` and any extra CSV
            columns), in file order; losses are floats, missing values NaN.
        duplicate_epochs: epoch numbers that occur more than once (within one phase), sorted.
        repeated_records: ``(epoch, earlier_epoch)`` pairs: the record at ``epoch`` has
            exactly the values of the earlier record at ``earlier_epoch`` (a copied line).
        irregular_lines: ``(line number, what)`` for lines that parsed but are damaged, e.g.
            the original COCO log's line 2025 (the last of a copied block) lacks its
            closing ``]``.
    """

    path: Path
    source_format: str
    frame: pd.DataFrame
    duplicate_epochs: list[int] = field(default_factory=list)
    repeated_records: list[tuple[int, int]] = field(default_factory=list)
    irregular_lines: list[tuple[int, str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def has_copies(self) -> bool:
        return bool(self.duplicate_epochs or self.repeated_records)

    def summary_lines(self) -> list[str]:
        """Human-readable lines: size, epoch range, and the copy findings."""
        f = self.frame
        epochs = f["epoch"].dropna()
        lines = [
            f"{self.path}: {len(f)} records ({self.source_format} format), "
            + (f"epochs {int(epochs.min())}-{int(epochs.max())}" if len(epochs) else "no epochs")
        ]
        if self.duplicate_epochs:
            lines.append(
                f"  repeated epoch numbers ({len(self.duplicate_epochs)}): {format_ranges(self.duplicate_epochs)}"
            )
        if self.repeated_records:
            pairs = ", ".join(f"{e} = {p}" for e, p in self.repeated_records[:10])
            more = "" if len(self.repeated_records) <= 10 else f", ... ({len(self.repeated_records)} in all)"
            lines.append(f"  records that repeat an earlier record's values: epoch {pairs}{more}")
        if not self.has_copies:
            lines.append("  no repeated epochs or copied records within this log")
        for number, what in self.irregular_lines[:10]:
            lines.append(f"  line {number}: {what}")
        return lines


def read_loss_log(path: str | Path) -> LossLog:
    """Read a run's ``loss.csv`` or an original-format text log (detected from the content).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an empty file, an unknown format, or a malformed line; the message names
            the file and the 1-based line number.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such loss log")
    if path.is_dir():
        candidate = path / "loss.csv"
        if not candidate.exists():
            raise FileNotFoundError(f"{path}: a folder without loss.csv")
        path = candidate
    text = path.read_text(encoding="utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip()), None)
    irregular_lines: list[tuple[int, str]] = []
    if first is None:
        raise ValueError(f"{path}: empty loss log")
    if first.lstrip().upper().startswith("EPOCH "):
        frame = _parse_original(text, path, irregular_lines)
        fmt = ORIGINAL
    elif "epoch" in [c.strip().lower() for c in first.split(",")]:
        frame = _parse_csv(path)
        fmt = CSV
    else:
        raise ValueError(
            f"{path}: line 1: unrecognised loss log (expected a CSV header with 'epoch' or lines 'EPOCH n ... d_loss ...')"
        )
    return LossLog(
        path=path,
        source_format=fmt,
        frame=frame,
        duplicate_epochs=_duplicate_epochs(frame),
        repeated_records=_repeated_records(frame),
        irregular_lines=irregular_lines,
    )


def _parse_original(text: str, path: Path, notes: list[tuple[int, str]]) -> pd.DataFrame:
    """Parse the original's lines; tolerable irregularities are appended to ``notes``."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _ORIGINAL_LINE.match(line)
        if m is None:
            raise ValueError(
                f"{path}: line {number}: malformed record {line.strip()[:80]!r} "
                "(expected 'EPOCH <n> d_loss <x> gan_loss [<total>, <content>, <adversarial>]')"
            )
        epoch, d_loss, total, content, adversarial, bracket = m.groups()
        if bracket is None:
            notes.append((number, "missing ']' at the end of the line (values kept)"))
        rows.append(
            {
                "epoch": int(epoch), "step": np.nan, "d_loss": float(d_loss), "g_loss": float(total),
                "content_loss": float(content), "adversarial_loss": float(adversarial),
                "d_real": np.nan, "d_fake": np.nan, "seconds": np.nan, "line": number,
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS + ["line"])
    frame["epoch"] = frame["epoch"].astype("int64")
    return frame


def _parse_csv(path: Path) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.ParserError as exc:
        match = re.search(r"line (\d+)", str(exc))
        where = f"line {match.group(1)}" if match else "a line"
        raise ValueError(f"{path}: {where}: malformed CSV row ({exc})") from None
    raw.columns = [c.strip() for c in raw.columns]
    if "epoch" not in raw.columns:
        raise ValueError(f"{path}: line 1: CSV header has no 'epoch' column")
    # Line numbers of the data rows (header is line 1; blank lines are skipped by pandas).
    data_lines = [n for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
                  if line.strip()][1:]
    frame = pd.DataFrame(index=raw.index)
    if "phase" in raw.columns:
        frame["phase"] = raw["phase"].str.strip()
    for column in COLUMNS:
        if column not in raw.columns:
            frame[column] = np.nan
            continue
        values = raw[column].str.strip()
        numeric = pd.to_numeric(values.replace("", np.nan), errors="coerce")
        bad = numeric.isna() & values.ne("") & ~values.str.lower().isin(["nan", "na", "none"])
        if column == "epoch":
            bad |= numeric.isna() | (numeric.notna() & (numeric != numeric.round()))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            line = data_lines[i] if i < len(data_lines) else i + 2
            raise ValueError(f"{path}: line {line}: bad value {raw[column].iloc[i]!r} in column '{column}'")
        frame[column] = numeric.astype("float64")
    frame["epoch"] = frame["epoch"].astype("int64")
    for column in raw.columns:
        if column not in frame.columns:
            frame[column] = raw[column]
    frame["line"] = data_lines[: len(frame)] if len(data_lines) >= len(frame) else np.arange(2, len(frame) + 2)
    return frame


def _record_key_columns(frame: pd.DataFrame) -> list[str]:
    return ["phase", "epoch"] if "phase" in frame.columns else ["epoch"]


def _duplicate_epochs(frame: pd.DataFrame) -> list[int]:
    keys = _record_key_columns(frame)
    dup = frame.duplicated(subset=keys, keep=False)
    return sorted({int(e) for e in frame.loc[dup, "epoch"]})


def _value_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in VALUE_COLUMNS if c in frame.columns and frame[c].notna().any()]


def _repeated_records(frame: pd.DataFrame) -> list[tuple[int, int]]:
    """(epoch, earlier epoch) for records whose loss values equal an earlier record's exactly."""
    cols = _value_columns(frame)
    if not cols:
        return []
    first_seen: dict[tuple, int] = {}
    pairs = []
    for epoch, values in zip(frame["epoch"].to_numpy(), frame[cols].itertuples(index=False, name=None)):
        if all(isinstance(v, float) and math.isnan(v) for v in values):
            continue
        key = tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in values)
        if key in first_seen and first_seen[key] != int(epoch):
            pairs.append((int(epoch), first_seen[key]))
        else:
            first_seen.setdefault(key, int(epoch))
    return pairs


# ---- copies across logs -------------------------------------------------------------------------

@dataclass(frozen=True)
class CopyReport:
    """Records that occur more than once across a set of logs.

    ``groups`` holds one tuple per distinct copied record: its occurrences as
    ``(log label, epoch)``. ``n_copies`` counts the surplus occurrences (a record seen three
    times makes two copies).
    """

    groups: tuple[tuple[tuple[str, int], ...], ...]

    @property
    def n_copies(self) -> int:
        return sum(len(g) - 1 for g in self.groups)

    def same_epoch_across_logs(self) -> list[int]:
        """Epochs at which two different logs hold identical records."""
        epochs = set()
        for group in self.groups:
            for i, (label_a, epoch_a) in enumerate(group):
                for label_b, epoch_b in group[i + 1 :]:
                    if label_a != label_b and epoch_a == epoch_b:
                        epochs.add(epoch_a)
        return sorted(epochs)

    def other_copies(self) -> list[tuple[tuple[str, int], ...]]:
        """Groups with an occurrence at a different epoch (copied lines, not aligned splices)."""
        return [g for g in self.groups if len({e for _, e in g}) > 1]

    def summary_lines(self) -> list[str]:
        if not self.groups:
            return ["no records are shared between or repeated within the logs"]
        same = self.same_epoch_across_logs()
        lines = []
        if same:
            lines.append(f"{len(same)} epochs hold identical records in different logs: {format_ranges(same)}")
        for group in self.other_copies()[:10]:
            lines.append("identical records at different epochs: " + " = ".join(f"{label} epoch {e}" for label, e in group))
        lines.append(f"{self.n_copies} surplus copies in all ({len(self.groups)} records occur more than once)")
        return lines


def find_copied_records(logs: Sequence[LossLog]) -> CopyReport:
    """Find records with identical loss values anywhere in ``logs`` (within or across files).

    Values are compared exactly (as parsed), over the loss columns any of the logs fills.
    Two independently trained models never log the same float32 losses, so every hit is a
    copied line.
    """
    labels = _unique_labels(logs)
    cols = [c for c in VALUE_COLUMNS if any(c in log.frame.columns and log.frame[c].notna().any() for log in logs)]
    occurrences: dict[tuple, list[tuple[str, int]]] = {}
    for label, log in zip(labels, logs):
        f = log.frame
        for row_epoch, row in zip(f["epoch"].to_numpy(), f.reindex(columns=cols).itertuples(index=False, name=None)):
            if all(isinstance(v, float) and math.isnan(v) for v in row):
                continue
            key = tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)
            occurrences.setdefault(key, []).append((label, int(row_epoch)))
    groups = tuple(tuple(occ) for occ in occurrences.values() if len(occ) > 1)
    return CopyReport(groups=groups)


def _unique_labels(logs: Sequence[LossLog]) -> list[str]:
    names = [log.path.name for log in logs]
    if len(set(names)) == len(names):
        return names
    return [str(log.path) for log in logs]


def format_ranges(values: Sequence[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"``."""
    runs = contiguous_runs(values)
    if not runs:
        return "none"
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def contiguous_runs(epochs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted epochs -> inclusive ``(first, last)`` runs of consecutive numbers."""
    values = sorted(set(int(v) for v in epochs))
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


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
        frame: a loss table as in :func:`read_loss_log` (columns ``epoch``, ``d_loss`` and,
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
