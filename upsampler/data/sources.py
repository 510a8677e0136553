"""Where preprocessing finds its images: folders and zips, and what it refuses before decoding.

Every candidate file is checked before a pixel is decoded (see ``docs/hostile_inputs.md``): zip
members with absolute or ``..`` paths, declared sizes over the limits, compression ratios over
:data:`MAX_ZIP_RATIO`, symlink loops, special files and multi-frame images become a
:class:`RejectedFile` with its reason instead of an error.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np

from upsampler.data.images import (
    IMAGE_EXTENSIONS,
    MAX_FILE_BYTES,
    ImageDecodeError,
    load_rgb,
    read_header,
    readable_name,
)


#: A zip member declaring more than ``MAX_ZIP_RATIO`` times its compressed size is a zip bomb
#: (photos deflate by 1-3x; 50 MB of zeros by 1000x). Checked only above ``ZIP_RATIO_MIN_BYTES``,
#: so that a small flat test image is never taken for one.
MAX_ZIP_RATIO = 200


ZIP_RATIO_MIN_BYTES = 2**20


@dataclass
class RejectedFile:
    """A source file left out of the processed set: ``kind`` groups, ``reason`` explains."""

    source: str  # path relative to the source folder, or the zip member name
    kind: str  # "too small", "truncated", "not an image", "empty file", "duplicate", ...
    reason: str  # e.g. "too small: 10x10 < 176"


@dataclass
class Candidate:
    relpath: str  # POSIX-style, relative to the source, readable (see images.readable_name)
    read: Callable[[], bytes]
    problem: tuple[str, str] | None = None  # (kind, reason): rejected without being read


def is_image_name(name: str) -> bool:
    pure = PurePosixPath(name)
    if pure.name.startswith("._") or "__MACOSX" in pure.parts:  # macOS resource-fork litter
        return False
    return pure.suffix.lower() in IMAGE_EXTENSIONS


def folder_candidates(root: Path, exclude: Path | None) -> list[Candidate]:
    """Image files under ``root`` (recursive, each real folder walked once, ``exclude`` skipped)."""
    candidates: list[Candidate] = []
    seen_dirs: set[str] = set()
    exclude_real = os.path.realpath(exclude) if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs or real == exclude_real:  # also ends a link to a parent folder
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for filename in sorted(filenames):
            full = Path(dirpath) / filename
            rel = readable_name(full.relative_to(root).as_posix())
            if is_image_name(rel):
                candidates.append(Candidate(rel, full.read_bytes, file_problem(full)))
    return candidates


def file_problem(path: Path) -> tuple[str, str] | None:
    """Why ``path`` must not be read (a symlink loop, a FIFO, an oversized file), or None."""
    try:
        info = path.stat()
    except OSError as exc:  # a broken link, a symlink loop (a -> b -> a)
        return "unreadable", f"unreadable ({exc.strerror or type(exc).__name__})"
    if not stat.S_ISREG(info.st_mode):  # reading a FIFO or a device would block or never end
        return "unreadable", "unreadable (not a regular file)"
    if info.st_size > MAX_FILE_BYTES:
        return "too large", f"too large (file of {info.st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,})"
    return None


def zip_candidates(archive: zipfile.ZipFile) -> list[Candidate]:
    candidates = []
    for info in archive.infolist():
        name = readable_name(info.filename.replace("\\", "/"))
        if info.is_dir() or not is_image_name(name):
            continue
        candidates.append(Candidate(name, lambda info=info: archive.read(info), zip_member_problem(name, info)))
    return candidates


def zip_member_problem(name: str, info: zipfile.ZipInfo) -> tuple[str, str] | None:
    """Why a zip member must not be read, from the zip's directory alone: an unsafe path
    (absolute, a drive letter or a ``..`` part), or a declared size that is absurd."""
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in PurePosixPath(name).parts:
        return "unsafe path", "unsafe path: absolute or with '..' parts (the zip is never extracted; member left out)"
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > ZIP_RATIO_MIN_BYTES and ratio > MAX_ZIP_RATIO:
        return "zip bomb", (f"zip bomb: declares {info.file_size:,} bytes from {info.compress_size:,} compressed "
                            f"(ratio {ratio:,.0f}, over {MAX_ZIP_RATIO}; not decompressed)")
    if info.file_size > MAX_FILE_BYTES:
        return "too large", (f"too large (declares {info.file_size:,} bytes uncompressed, "
                             f"over the limit of {MAX_FILE_BYTES:,}; not decompressed)")
    return None


def split_sources(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """One source, a list of them, or several in one string separated by ``os.pathsep`` (``a:b``)."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        parts = [p for p in text.split(os.pathsep) if p] if os.pathsep in text and not Path(text).exists() else [text]
    else:
        parts = [os.fspath(p) for p in source]
    if not parts:
        raise ValueError("no source given")
    return [Path(p) for p in parts]


def multi_folder_candidates(folders: list[Path], exclude: Path) -> list[Candidate]:
    """Images of several folders, each relative path prefixed with its folder's name."""
    names = [f.resolve().name for f in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"source folders must have distinct names, got {[str(f) for f in folders]}")
    candidates = []
    for folder, name in zip(folders, names):
        if not folder.is_dir():
            raise ValueError(f"source {folder} is not a folder (several sources must all be folders)")
        for c in folder_candidates(folder, exclude=exclude):
            candidates.append(Candidate(f"{readable_name(name)}/{c.relpath}", c.read, c.problem))
    return candidates


def read_candidate(candidate: Candidate) -> bytes | RejectedFile:
    """The file's bytes, or why it is rejected (a problem found before reading, a read error, empty)."""
    if candidate.problem is not None:
        return RejectedFile(candidate.relpath, *candidate.problem)
    try:
        data = candidate.read()
    except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        # RuntimeError: an encrypted zip member; NotImplementedError: an unknown compression method
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return RejectedFile(candidate.relpath, "unreadable", f"unreadable ({readable_name(detail)})")
    if not data:
        return RejectedFile(candidate.relpath, "empty file", "empty file")
    return data


def decode_candidate(data: bytes, relpath: str) -> tuple[np.ndarray, str] | RejectedFile:
    """The upright RGB pixels and the file's Pillow mode (for the manifest), or why it is rejected."""
    try:
        header = read_header(data, name=relpath)
        if header.frames > 1:  # which frame is "the" picture is a guess: leave it out
            return RejectedFile(relpath, "multi-frame",
                                f"multi-frame: {header.format} of {header.frames} frames (a training image is one picture)")
        return load_rgb(data, name=relpath), header.mode
    except ImageDecodeError as exc:
        return RejectedFile(relpath, exc.kind, exc.reason)
