"""The run directory: everything a training run keeps on disk, and how it is written.

::

    config.json      the full resolved config and the provenance (read back on resume)
    loss.csv         one row per epoch and phase, appended exactly once each
    train.log        human-readable log (appended, never truncated)
    checkpoints/     G, D, all optimisers, epochs done, step, last metrics: a tf.train.Checkpoint on
                     TensorFlow, ckpt-<step>.npz on other backends (:mod:`upsampler.training.checkpoints`)
    generator.keras  the generator of the latest checkpoint (stock Keras layers), for inference
    generator_pretrained.keras   the generator at the end of MSE pre-training
    exports.json     which checkpoint step each exported generator holds
    samples/         a fixed small test batch rendered every few epochs
    cache/           the HR feature cache (:mod:`upsampler.training.feed`)
    .lock            held by the one process training in this folder

The invariants, all kept here: whole files (config.json, the exports, exports.json, samples)
are written to a temporary name and renamed; loss.csv and train.log are append-only, and a torn
last row of loss.csv (a kill or a full disk mid-write) is moved aside into ``loss.csv.torn-*``
with a note in train.log; config.json records the data set (its folder and the SHA-256 of its
manifest), and a resume on other data is refused; a folder without a checkpoint is a new run;
one writer at a time (an advisory lock, released by the kernel when its process dies).
In a multi-worker run only the chief writes these files; the other workers read them
(``RunDirectory(path, worker=...)``, see :mod:`upsampler.training.distribute`).
:class:`RunDirectory` knows nothing of models or steps.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from upsampler.config import Config
from upsampler.utils.files import replaced_atomically, write_atomically

LOSS_COLUMNS = [
    "phase", "epoch", "step", "d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake", "seconds",
]
# Fields a resume may change: the schedule (no effect on any step's numbers) ...
SCHEDULE_FIELDS = {
    "train": {"epochs", "pretrain_epochs", "progress", "sample_every", "checkpoint_every", "keep_checkpoints",
              "saturation_patience", "saturation_threshold", "precise_bn_batches", "pretrain_budget_minutes",
              "budget_minutes"},
}
# ... and how the steps execute, which changes float rounding: a resume that changes them is not bit-exact.
INEXACT_FIELDS = {"train": {"jit_compile", "strategy", "cache_hr_features", "precision"}}
RESUMABLE_FIELDS = {section: SCHEDULE_FIELDS.get(section, set()) | INEXACT_FIELDS.get(section, set())
                    for section in SCHEDULE_FIELDS.keys() | INEXACT_FIELDS.keys()}
PRETRAINED_SNAPSHOT = "generator_pretrained.keras"


class RunDirectoryBusy(RuntimeError):
    """Another process holds the run directory's lock."""


def resolve_run_config(requested: Config, run_dir: Path) -> tuple[Config, list[str]]:
    """The config to use in ``run_dir`` and warnings: ``requested``, checked against a saved one.

    Only schedule fields (epochs, sampling, checkpoint cadence) and the execution fields of
    :data:`INEXACT_FIELDS` may differ from the saved config; the latter give a warning that the
    resume is not bit-exact. Anything that changes the model or the data raises a ValueError
    naming the field. ``train.precision`` comes back resolved: ``auto`` keeps the saved run's
    precision, and a new run's is chosen by hardware (:mod:`upsampler.training.precision`), so the
    config.json written from it records the one the run trains in.
    """
    saved_path = Path(run_dir) / "config.json"
    saved = Config.from_json(saved_path) if saved_path.exists() else None
    requested = with_resolved_precision(requested, saved)
    if saved is None:
        return requested, []
    saved_dict, requested_dict = saved.to_dict(), requested.to_dict()
    differences, warnings = [], []
    for section, values in requested_dict.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            old = saved_dict[section].get(key)
            if old == value:
                continue
            change = f"{section}.{key}: saved {old!r}, requested {value!r}"
            if key in INEXACT_FIELDS.get(section, set()):
                warnings.append(f"WARNING: this resume is not bit-exact: {change} (changes float rounding)")
            elif key not in RESUMABLE_FIELDS.get(section, set()):
                differences.append(change)
    if differences:
        raise ValueError(
            f"{saved_path}: the run was made with a different configuration; use another run directory or "
            "the same settings. Differences: " + "; ".join(differences)
        )
    return requested, warnings


def with_resolved_precision(requested: Config, saved: Config | None = None) -> Config:
    """A copy of ``requested`` whose ``train.precision`` is a concrete policy: the saved run's
    when ``auto`` is requested on resume, else ``requested``'s, resolved for this hardware."""
    from upsampler.training.precision import resolve_precision

    config = Config.from_dict(requested.to_dict())
    keep_saved = config.train.precision == "auto" and saved is not None
    config.train.precision = resolve_precision((saved if keep_saved else config).train.precision)
    return config


def data_source(data_dir: str | Path) -> dict[str, str]:
    """The identity of a processed data folder: its absolute path and its manifest's SHA-256."""
    from upsampler.data.processed import MANIFEST_FILE

    data_dir = Path(data_dir).resolve()
    manifest = data_dir / MANIFEST_FILE
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else ""
    return {"path": str(data_dir), "manifest_sha256": digest}


def split_torn_tail(text: str) -> tuple[str, str]:
    """``(complete, torn)``: the longest prefix of a loss.csv that is whole rows of
    :data:`LOSS_COLUMNS` (header first, every row newline-terminated, an integer epoch), and the rest."""
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].endswith("\n") or lines[0].rstrip("\r\n") != ",".join(LOSS_COLUMNS):
        return "", text
    end = len(lines[0])
    for line in lines[1:]:
        if not line.endswith("\n"):
            break
        fields = next(csv.reader([line.rstrip("\r\n")]), [])
        if len(fields) != len(LOSS_COLUMNS) or fields[0] not in ("pretrain", "adversarial") or not fields[1].isdigit():
            break
        end += len(line)
    return text[:end], text[end:]


def read_loss_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``loss.csv`` (strings, as written); [] when there is none."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_loss_row(path: Path, row: dict) -> None:
    """Append one row (header first in a new file) and fsync it."""
    path = Path(path)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in LOSS_COLUMNS})
        f.flush()
        os.fsync(f.fileno())


def writes(returns=lambda: None):
    """For a :class:`RunDirectory` method that writes: on a non-writing worker it does nothing
    and returns ``returns()``."""
    def wrap(method):
        @functools.wraps(method)
        def run_if_writer(self, *args, **kwargs):
            return method(self, *args, **kwargs) if self.writer else returns()
        return run_if_writer
    return wrap


class RunDirectory:
    """The files of one run (see the module docstring); ``path`` is created when missing.

    ``worker``: None for the process that writes the run (a single process, or the chief of a
    multi-worker run); else the name of another worker of a multi-worker run (``worker-1``,
    :func:`upsampler.training.distribute.task_name`). Such a worker reads the run's files (the config to
    check, the checkpoints to restore) and writes none: the methods marked :func:`writes` do
    nothing, and its part of each collective checkpoint save goes to a temporary folder.
    """

    def __init__(self, path: str | Path, *, worker: str | None = None):
        self.path = Path(path)
        self.worker = worker
        self.writer = worker is None
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
        self.config_path = self.path / "config.json"
        self.loss_path = self.path / "loss.csv"
        self.log_path = self.path / "train.log"
        self.checkpoint_dir = self.path / "checkpoints"
        self.generator_path = self.path / "generator.keras"
        self.snapshot_path = self.path / PRETRAINED_SNAPSHOT
        self.exports_path = self.path / "exports.json"
        self.samples_dir = self.path / "samples"
        self.cache_dir = self.path / "cache"
        self.lock_path = self.path / ".lock"
        self._manager = None
        self._lock_file = None

    # -- one writer ----------------------------------------------------------------------------
    @writes()
    def lock(self) -> None:
        """Take the advisory lock or raise :class:`RunDirectoryBusy` naming its holder.

        ``flock`` is released by the kernel when the process ends, however it ends, so a killed
        run never leaves a stale lock. (No-op where ``fcntl`` does not exist.)
        """
        try:
            import fcntl
        except ImportError:  # Windows
            return
        handle = self.lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirectoryBusy(f"{self.path}: run directory in use by {holder} (lock {self.lock_path}); "
                                   "wait for it to finish or stop it") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    # -- config and log ------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:  # a TensorFlow checkpoint index or an array checkpoint
        from upsampler.training.checkpoints import array_checkpoint_files

        return (self.checkpoint_dir / "checkpoint").is_file() or bool(array_checkpoint_files(self.checkpoint_dir))

    def resolve_config(self, requested: Config) -> tuple[Config, list[str]]:
        """:func:`resolve_run_config`, for a folder with a checkpoint; a folder without one is a new run."""
        if not self.has_checkpoint():
            return with_resolved_precision(requested), []
        return resolve_run_config(requested, self.path)

    def check_data(self, data_dir: str | Path) -> list[str]:
        """Refuse to resume on other data (a ValueError naming both folders); notes for a moved folder."""
        if not self.has_checkpoint() or not self.config_path.is_file():
            return []
        saved = json.loads(self.config_path.read_text()).get("data_source")
        if not saved:
            return []
        now = data_source(data_dir)
        if saved.get("manifest_sha256") != now["manifest_sha256"]:
            raise ValueError(
                f"{self.path}: this run was trained on {saved.get('path')} (manifest SHA-256 "
                f"{str(saved.get('manifest_sha256'))[:12]}), not on {now['path']} (manifest SHA-256 "
                f"{now['manifest_sha256'][:12]}); use another run directory or the original data"
            )
        if saved.get("path") != now["path"]:
            return [f"the data folder moved from {saved.get('path')} to {now['path']} (same manifest)"]
        return []

    def check_cpu_kernels(self, provenance: dict[str, Any]) -> list[str]:
        """A note when a run resumes on other CPU kernels (oneDNN's or Eigen's) than its last start."""
        if not self.has_checkpoint() or not self.config_path.is_file() or provenance.get("onednn") is None:
            return []
        saved = json.loads(self.config_path.read_text()).get("provenance", {}).get("onednn")
        if saved is None or saved == provenance["onednn"]:
            return []
        name = {True: "oneDNN's", False: "Eigen's"}
        return [f"this run last started on {name[saved]} CPU kernels and resumes on {name[provenance['onednn']]}: "
                f"they round differently, so it continues correctly but not bit-identically to an uninterrupted "
                f"run (TF_ENABLE_ONEDNN_OPTS={int(saved)} before Python starts restores them)"]

    @writes()
    def write_config(self, config: Config, provenance: dict[str, Any], data: dict[str, str] | None = None) -> None:
        payload = {**config.to_dict(), "provenance": provenance}
        if data:
            payload["data_source"] = data
        write_atomically(self.config_path, json.dumps(payload, indent=2, sort_keys=True) + "\n")

    @writes(list)
    def start_fresh(self) -> list[str]:
        """For a folder without a checkpoint: move a previous attempt's loss.csv aside; notes."""
        if self.has_checkpoint() or not self.loss_path.exists():
            return []
        aside = self.path / f"loss.csv.before-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(self.loss_path, aside)
        return [f"no checkpoint yet, so this is a new run; the previous attempt's loss.csv is kept as {aside.name}"]

    def log(self, message: str, echo: bool = True) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if self.writer:
            with self.log_path.open("a") as f:
                f.write(f"[{stamp}] {message}\n")
        if echo:
            print(message, flush=True)

    # -- loss.csv ------------------------------------------------------------------------------
    @writes()
    def repair_loss_log(self) -> str | None:
        """Move a torn tail of loss.csv aside (``loss.csv.torn-<time>``); a note, or None if whole."""
        if not self.loss_path.exists():
            return None
        text = self.loss_path.read_bytes().decode("utf-8", errors="replace")
        complete, torn = split_torn_tail(text)
        if not torn:
            return None
        aside = self.path / f"loss.csv.torn-{time.strftime('%Y%m%d-%H%M%S')}"
        write_atomically(aside, torn)
        if complete:
            write_atomically(self.loss_path, complete)
        else:
            self.loss_path.unlink()
        return (f"loss.csv: an incomplete last row ({len(torn)} bytes, from an interrupted write) was moved to "
                f"{aside.name}; the rows of checkpointed epochs are restored from the checkpoint or re-run")

    def loss_rows(self) -> list[dict[str, str]]:
        return read_loss_rows(self.loss_path)

    def has_row(self, phase: str, epoch: int) -> bool:
        return any(r["phase"] == phase and int(r["epoch"]) == epoch for r in self.loss_rows())

    @writes(bool)
    def append_row_once(self, row: dict) -> bool:
        """Append ``row`` unless loss.csv has its (phase, epoch) already; True when written.

        An epoch logged after the last checkpoint is re-run on resume; determinism makes the
        re-run identical, so the existing row stands and nothing is written twice or removed.
        """
        if self.has_row(row["phase"], int(row["epoch"])):
            return False
        append_loss_row(self.loss_path, row)
        return True

    # -- checkpoints ---------------------------------------------------------------------------
    def attach(self, checkpoint, keep: int) -> None:
        """Manage ``checkpoint`` (a ``tf.train.Checkpoint``, or an
        :class:`upsampler.training.checkpoints.ArrayCheckpoint`) in ``checkpoints/``, keeping ``keep``."""
        from upsampler.training.checkpoints import checkpoint_manager

        self._manager = checkpoint_manager(checkpoint, self.checkpoint_dir, keep)

    @property
    def latest_checkpoint(self) -> str | None:
        return self._manager.latest_checkpoint if self._manager is not None else None

    def save_checkpoint(self, step: int) -> str | None:
        """Save a checkpoint numbered ``step``; its path, or None on a non-writing worker.

        Under a multi-worker strategy saving is collective, so every worker saves: a non-writing
        one into a temporary folder of its own, removed straight after (as TensorFlow's
        multi-worker guide does)."""
        if self.writer:
            return self._manager.save(checkpoint_number=step)
        import tensorflow as tf

        scratch = tempfile.mkdtemp(prefix=f"upsampler-{self.worker}-")
        try:
            tf.train.CheckpointManager(self._manager.checkpoint, scratch, max_to_keep=1).save(checkpoint_number=step)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None

    def restore_latest(self) -> tuple[str | None, list[str]]:
        """Restore the newest readable checkpoint into the attached objects.

        Returns ``(path or None, notes)``: an unreadable checkpoint (a torn or corrupt file) is
        skipped for the one before it, and the notes say so.
        """
        notes: list[str] = []
        for path in reversed(self._manager.checkpoints if self._manager is not None else []):
            try:
                self._manager.checkpoint.restore(path).assert_existing_objects_matched()
            except Exception as exc:  # noqa: BLE001 - TensorFlow raises several types for a bad file
                from upsampler.data.images import first_line

                notes.append(f"WARNING: checkpoint {path} is unreadable ({first_line(exc)}); trying the one before it")
                continue
            return path, notes
        if notes:
            raise ValueError(f"{self.checkpoint_dir}: no checkpoint can be read; " + "; ".join(notes))
        return None, notes

    # -- exports -------------------------------------------------------------------------------
    def exports(self) -> dict[str, int]:
        """``{file name: checkpoint step}`` of the exported generators (exports.json)."""
        try:
            return {k: int(v) for k, v in json.loads(self.exports_path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    @writes()
    def export_generator(self, model, step: int, path: Path | None = None) -> Path | None:
        """Save ``model`` as ``generator.keras`` (or ``path``) holding checkpoint step ``step``.

        Temporary name, rename, then the step in exports.json: a kill at any point leaves a
        file whose recorded step is either right or older, and :meth:`stale_exports` finds it.
        """
        path = Path(path or self.generator_path)
        with replaced_atomically(path) as tmp:
            model.save(tmp)
        record = self.exports()
        record[path.name] = int(step)
        write_atomically(self.exports_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        return path

    def is_current(self, path: Path, step: int) -> bool:
        """Whether the exported ``path`` exists and holds checkpoint step ``step``."""
        return Path(path).is_file() and self.exports().get(Path(path).name) == int(step)

    @writes()
    def save_samples(self, phase: str, epoch: int, image: np.ndarray) -> Path | None:
        """Save one uint8 image as ``samples/<phase>_epoch_<epoch>.png``."""
        from PIL import Image

        path = self.samples_dir / f"{phase}_epoch_{epoch:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(path) as tmp:
            Image.fromarray(image).save(tmp)
        return path
