"""Loss logs: read them and find copied records (saturation: :mod:`upsampler.training.health`).

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

**Saturation (defect #1)** is judged by :mod:`upsampler.training.health`.
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
