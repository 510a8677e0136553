"""Writing a file so that a reader, or a process killed half-way, sees the old file or the new one.

Every file the package writes for keeps (run directories, processed data sets, caches, the
evaluation key) goes through :func:`replaced_atomically`: the content is written to a temporary
name beside the target and renamed over it only once complete.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (``name.tmp.ext``: same extension, so writers that infer
    the format from it still work), renamed to ``path`` when the block ends without an error and
    removed when it raises."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, flushed to disk, and a rename."""
    with replaced_atomically(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``hashlib`` ``algorithm``), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
