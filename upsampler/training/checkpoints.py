"""Backend-neutral checkpoints: every array of a run in one ``.npz`` file, written atomically.

The TensorFlow engine keeps ``tf.train.Checkpoint``; the others (JAX) use :class:`ArrayCheckpoint`,
which offers the small part of the ``tf.train.Checkpoint`` / ``CheckpointManager`` interface the
run directory uses (``save(checkpoint_number)``, ``checkpoints``, ``latest_checkpoint``,
``checkpoint.restore(path).assert_existing_objects_matched()``), so :class:`upsampler.training.rundir.RunDirectory`
manages both alike. A checkpoint file ``checkpoints/ckpt-<step>.npz`` holds named arrays (the
engine's state: weights, BatchNorm statistics, optimiser slots, counters, the last epoch's metrics)
and a JSON record of names, shapes and dtypes; a torn or foreign file fails ``restore`` and the
run directory falls back to the one before it.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from upsampler.utils.files import replaced_atomically

_NAME = re.compile(r"^ckpt-(\d+)\.npz$")


def array_checkpoint_files(directory: str | Path) -> list[Path]:
    """The ``ckpt-<step>.npz`` files of ``directory``, oldest first (none when it does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


class HostCounter:
    """A number kept on the host with the two methods the epoch loop uses on a ``tf.Variable``."""

    def __init__(self, value=0, dtype=np.int64):
        self.dtype = dtype
        self.value = np.asarray(value, dtype)

    def numpy(self) -> np.ndarray:
        return self.value.copy()

    def assign(self, value) -> None:
        self.value = np.asarray(value, self.dtype)


class _Restore:
    def __init__(self, error: Exception | None):
        self.error = error

    def assert_existing_objects_matched(self):
        if self.error is not None:
            raise self.error
        return self


class ArrayCheckpoint:
    """Named arrays from ``get_state()``, written to and read back into ``set_state(arrays)``."""

    def __init__(self, get_state: Callable[[], Mapping[str, np.ndarray]],
                 set_state: Callable[[Mapping[str, np.ndarray]], None]):
        self.get_state, self.set_state = get_state, set_state

    def write(self, path: Path) -> None:
        arrays = {name: np.asarray(value) for name, value in self.get_state().items()}
        record = {name: [list(a.shape), str(a.dtype)] for name, a in arrays.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, __record__=np.frombuffer(json.dumps(record).encode(), np.uint8), **arrays)
                handle.flush()
                os.fsync(handle.fileno())

    def read(self, path: str | Path) -> dict[str, np.ndarray]:
        """The arrays of ``path``, checked against this run's names and shapes (ValueError if not)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                record = json.loads(bytes(data["__record__"]).decode())
                arrays = {name: data[name] for name in record}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
        expected = {name: np.asarray(value) for name, value in self.get_state().items()}
        if set(expected) != set(arrays):
            missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
            raise ValueError(f"{path}: holds another run's state (missing {missing[:3]}, unexpected {extra[:3]})")
        for name, value in expected.items():
            if value.shape != arrays[name].shape:
                raise ValueError(f"{path}: {name} has shape {arrays[name].shape}, this run's has {value.shape}")
        return arrays

    def restore(self, path: str | Path) -> _Restore:
        try:
            self.set_state(self.read(path))
        except ValueError as exc:
            return _Restore(exc)
        return _Restore(None)


class ArrayCheckpointManager:
    """``checkpoints/ckpt-<step>.npz`` files of one :class:`ArrayCheckpoint`, the newest ``max_to_keep`` kept."""

    def __init__(self, checkpoint: ArrayCheckpoint, directory: str | Path, max_to_keep: int):
        self.checkpoint, self.directory, self.max_to_keep = checkpoint, Path(directory), max(1, int(max_to_keep))

    @property
    def checkpoints(self) -> list[str]:
        """Existing checkpoint files, oldest first."""
        return [str(p) for p in array_checkpoint_files(self.directory)]

    @property
    def latest_checkpoint(self) -> str | None:
        existing = self.checkpoints
        return existing[-1] if existing else None

    def save(self, checkpoint_number: int) -> str:
        path = self.directory / f"ckpt-{int(checkpoint_number)}.npz"
        self.checkpoint.write(path)
        for old in self.checkpoints[:-self.max_to_keep]:
            Path(old).unlink(missing_ok=True)
        return str(path)


def checkpoint_manager(checkpoint, directory: str | Path, keep: int):
    """The manager of ``checkpoint``: an :class:`ArrayCheckpointManager` for an :class:`ArrayCheckpoint`,
    else TensorFlow's ``CheckpointManager`` for a ``tf.train.Checkpoint``."""
    if isinstance(checkpoint, ArrayCheckpoint):
        return ArrayCheckpointManager(checkpoint, directory, max_to_keep=keep)
    import tensorflow as tf

    return tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=keep)
