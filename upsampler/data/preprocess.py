"""Preprocessing (images -> processed train/test set) and the tf.data training pipeline.

``preprocess`` turns a folder or ``.zip`` of photos into::

    OUT/train/hr/<name>.png   HR crops, hr_size x hr_size, uint8 RGB
    OUT/train/lr/<name>.png   LR inputs, (hr_size // scale)^2, Pillow antialiased bicubic
    OUT/test/{hr,lr}/...      the same for the test split
    OUT/manifest.csv          one row per accepted image (name, split, source, sha256, ...)
    OUT/rejected.csv          one row per rejected file (source, kind, reason)
    OUT/preprocess.json       parameters and counts; written last, it marks the set complete

Hostile inputs (see ``docs/hostile_inputs.md``) end as rows of ``rejected.csv``: zip members
with absolute or ``..`` paths (``unsafe path``; a zip is never extracted, members are read in
memory), members declaring more than :data:`~upsampler.data.images.MAX_FILE_BYTES` or compressed
more than :data:`MAX_ZIP_RATIO` times (``too large``, ``zip bomb``; never decompressed),
images declaring more than :data:`~upsampler.data.images.MAX_IMAGE_PIXELS` (``too large``; never
decoded), animations and multi-page files (``multi-frame``), symlink loops, broken links and
special files (``unreadable``; directory loops are walked once). File names that are not UTF-8
are kept, written with ``\\xNN`` escapes (``caf\\xe9.png``).

Running it again with the same source and parameters is a no-op ("already done"), which is
what lets ``run_all.sh`` resume; different parameters into the same folder are refused
(nothing is ever deleted). The train/test split depends only on the seed and the sorted
relative paths (never on the order the file system lists files), optionally by group
(e.g. CelebA identity) so that no person is in both splits.

``load_split`` reads a split back as uint8 arrays (``load_train_split``: the training images a
config uses, all of them or the seeded subset of ``data.train_images``); ``make_train_dataset`` serves one epoch
of ``(lr, hr)`` float32 batches in [-1, 1] whose order and flips depend only on
``(seed, epoch)``, so a resumed run sees exactly the batches it would have seen.
TensorFlow is imported only inside ``make_train_dataset``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import os
import re
import stat
import sys
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from upsampler.utils.argtypes import integer, number
from upsampler.config import DataConfig
from upsampler.utils.files import replaced_atomically, write_atomically
from upsampler.data.images import (  # noqa: F401 - IMAGE_EXTENSIONS is also this module's public name
    IMAGE_EXTENSIONS,
    MAX_FILE_BYTES,
    ImageDecodeError,
    bicubic_downscale,
    load_rgb,
    read_header,
    readable_name,
    save_png,
)

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

#: File extensions (lower case) treated as images when scanning a folder or zip.
SPLITS = ("train", "test")
FORMAT_VERSION = 1

INFO_FILE = "preprocess.json"
MANIFEST_FILE = "manifest.csv"
REJECTED_FILE = "rejected.csv"
_IN_PROGRESS_FILE = ".preprocess-in-progress.json"
_STAGING_DIR = ".staging"

#: A zip member declaring more than ``MAX_ZIP_RATIO`` times its compressed size is a zip bomb
#: (photos deflate by 1-3x; 50 MB of zeros by 1000x). Checked only above ``ZIP_RATIO_MIN_BYTES``,
#: so that a small flat test image is never taken for one.
MAX_ZIP_RATIO = 200
ZIP_RATIO_MIN_BYTES = 2**20

MANIFEST_COLUMNS = (
    "name", "split", "source", "sha256", "width", "height", "mode",
    "crop_top", "crop_left", "hr_size", "lr_size", "group",
)
REJECTED_COLUMNS = ("source", "kind", "reason")
SPLIT_BY_IMAGE = "split by image (no identity list: the same person may be in train and test)"
SPLIT_BY_IMAGE_WARNING = (
    "no identity/group list given: the split is BY IMAGE, so the same person (or scene) can appear in both "
    "train and test. For faces pass --groups (a CSV with file and identity columns, or CelebA's "
    "identity_CelebA.txt); every table built on this set says 'split by image'.")


# ---- summary ---------------------------------------------------------------------------

@dataclass
class RejectedFile:
    """A source file left out of the processed set: ``kind`` groups, ``reason`` explains."""

    source: str  # path relative to the source folder, or the zip member name
    kind: str  # "too small", "truncated", "not an image", "empty file", "duplicate", ...
    reason: str  # e.g. "too small: 10x10 < 176"


@dataclass
class PreprocessSummary:
    """What :func:`preprocess` made (or found already made) in ``out_dir``."""

    source: str
    out_dir: Path
    n_candidates: int  # files with an image extension examined (all of them unless ``limit`` stopped early)
    n_train: int
    n_test: int
    rejected: list[RejectedFile] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    already_done: bool = False  # True when an identical earlier run was found and reused

    @property
    def n_accepted(self) -> int:
        return self.n_train + self.n_test

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)

    @property
    def rejected_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(r.kind for r in self.rejected).items()))

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_FILE

    @property
    def rejected_path(self) -> Path:
        return self.out_dir / REJECTED_FILE

    @property
    def info_path(self) -> Path:
        return self.out_dir / INFO_FILE

    def split_dir(self, split: str, resolution: str) -> Path:
        """``OUT/<split>/<resolution>`` with split ``train``/``test`` and resolution ``hr``/``lr``."""
        return self.out_dir / split / resolution

    def __str__(self) -> str:
        p = self.parameters
        head = "already done: " if self.already_done else ""
        lines = [
            f"{head}{readable_name(self.source)} -> {readable_name(str(self.out_dir))}",
            f"  {self.n_accepted} accepted (train {self.n_train}, test {self.n_test}), "
            f"{self.n_rejected} rejected, of {self.n_candidates} image files examined",
        ]
        if p:
            lines.append(
                f"  HR {p.get('hr_size')}x{p.get('hr_size')} ({p.get('crop')} crop), "
                f"LR {p.get('lr_size')}x{p.get('lr_size')} (x{p.get('scale')} bicubic), seed {p.get('seed')}"
            )
        for kind, count in self.rejected_by_kind.items():
            lines.append(f"  rejected {count:>5}  {kind}")
        if self.rejected:
            lines.append(f"  details: {self.rejected_path}")
        return "\n".join(lines)


# ---- sources ---------------------------------------------------------------------------

@dataclass
class _Candidate:
    relpath: str  # POSIX-style, relative to the source, readable (see images.readable_name)
    read: Callable[[], bytes]
    problem: tuple[str, str] | None = None  # (kind, reason): rejected without being read


def _is_image_name(name: str) -> bool:
    pure = PurePosixPath(name)
    if pure.name.startswith("._") or "__MACOSX" in pure.parts:  # macOS resource-fork litter
        return False
    return pure.suffix.lower() in IMAGE_EXTENSIONS


def _folder_candidates(root: Path, exclude: Path | None) -> list[_Candidate]:
    """Image files under ``root`` (recursive, each real folder walked once, ``exclude`` skipped)."""
    candidates: list[_Candidate] = []
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
            if _is_image_name(rel):
                candidates.append(_Candidate(rel, full.read_bytes, _file_problem(full)))
    return candidates


def _file_problem(path: Path) -> tuple[str, str] | None:
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


def _zip_candidates(archive: zipfile.ZipFile) -> list[_Candidate]:
    candidates = []
    for info in archive.infolist():
        name = readable_name(info.filename.replace("\\", "/"))
        if info.is_dir() or not _is_image_name(name):
            continue
        candidates.append(_Candidate(name, lambda info=info: archive.read(info), _zip_member_problem(name, info)))
    return candidates


def _zip_member_problem(name: str, info: zipfile.ZipInfo) -> tuple[str, str] | None:
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


# ---- parameters and existing outputs ---------------------------------------------------

def _groups_digest(groups: Mapping[str, Any] | None) -> str | None:
    if groups is None:
        return None
    text = json.dumps(sorted((str(k), str(v)) for k, v in groups.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _describe_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k))


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _summary_from_disk(out_dir: Path, info: Mapping[str, Any], already_done: bool) -> PreprocessSummary:
    rejected_rows = _read_csv_rows(out_dir / REJECTED_FILE) if (out_dir / REJECTED_FILE).exists() else []
    counts = info.get("counts", {})
    return PreprocessSummary(
        source=info["parameters"]["source"],
        out_dir=out_dir,
        n_candidates=int(counts.get("candidates", 0)),
        n_train=int(counts.get("train", 0)),
        n_test=int(counts.get("test", 0)),
        rejected=[RejectedFile(r["source"], r.get("kind", ""), r["reason"]) for r in rejected_rows],
        parameters=dict(info["parameters"]),
        already_done=already_done,
    )


def _outputs_complete(out_dir: Path) -> bool:
    manifest = out_dir / MANIFEST_FILE
    if not manifest.exists():
        return False
    for row in _read_csv_rows(manifest):
        for resolution in ("hr", "lr"):
            if not (out_dir / row["split"] / resolution / f"{row['name']}.png").is_file():
                return False
    return True


def _check_existing_output(out_dir: Path, parameters: dict[str, Any]) -> PreprocessSummary | None:
    """The summary of an identical finished run in ``out_dir``, None to (re)run, or ValueError."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path {out_dir} exists and is not a folder; choose another --out")
    info_path = out_dir / INFO_FILE
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text())
            recorded = info["parameters"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{info_path} is unreadable ({exc}); choose another output folder") from exc
        if recorded != parameters:
            raise ValueError(
                f"{out_dir} already holds a preprocessed set made with different parameters "
                f"({_describe_differences(recorded, parameters)}); choose another output folder "
                "(nothing was changed or deleted)"
            )
        if _outputs_complete(out_dir):
            return _summary_from_disk(out_dir, info, already_done=True)
        return None  # same parameters but files missing: regenerate (same names, same pixels)
    if out_dir.exists() and any(out_dir.iterdir()):
        marker = out_dir / _IN_PROGRESS_FILE
        if marker.exists():
            try:
                started = json.loads(marker.read_text()).get("parameters")
            except json.JSONDecodeError:
                started = None
            if started == parameters:
                return None  # an interrupted run with the same parameters: redo it
            raise ValueError(
                f"{out_dir} holds an unfinished preprocess run with different parameters; "
                "choose another output folder (nothing was changed or deleted)"
            )
        raise ValueError(
            f"{out_dir} is not empty and does not hold a finished preprocess output; "
            "choose another (new or empty) output folder"
        )
    return None


# ---- splitting -------------------------------------------------------------------------

def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _test_count(n_items: int, test_fraction: float) -> int:
    """round(test_fraction * n), but at least one image on each side when that is possible."""
    n_test = _round_half_up(test_fraction * n_items)
    if test_fraction > 0 and n_items >= 2:
        n_test = min(max(n_test, 1), n_items - 1)
    return min(n_test, n_items)


def _assign_splits(
    relpaths: list[str], group_of: list[str] | None, test_fraction: float, seed: int
) -> list[str]:
    """``"train"``/``"test"`` per item of ``relpaths`` (which must be sorted).

    Without groups: a ``default_rng(seed)`` permutation of the sorted items; the first
    ``round(test_fraction * N)`` go to test. With groups: the sorted distinct group ids are
    permuted the same way and whole groups go to test until it holds at least that many.
    """
    n_items = len(relpaths)
    target = _test_count(n_items, test_fraction)
    splits = ["train"] * n_items
    rng = np.random.default_rng(seed)
    if group_of is None:
        for index in rng.permutation(n_items)[:target]:
            splits[int(index)] = "test"
        return splits
    members: dict[str, list[int]] = {}
    for index, group in enumerate(group_of):
        members.setdefault(group, []).append(index)
    group_ids = sorted(members)
    n_test = 0
    for g in rng.permutation(len(group_ids)):
        if n_test >= target:
            break
        if len(group_ids) > 1 and n_test + len(members[group_ids[g]]) >= n_items:
            continue  # never move every image to test
        for index in members[group_ids[g]]:
            splits[index] = "test"
        n_test += len(members[group_ids[g]])
    return splits


def read_groups_csv(
    path: str | os.PathLike, key_column: str = "file", group_column: str = "celeba_identity"
) -> dict[str, str]:
    """Read ``file -> group id`` from an identity list: a CSV with a header (default columns
    ``file`` and ``celeba_identity``, as ``meta/faces_celeba_identity.csv``) or CelebA's own
    ``identity_CelebA.txt`` (``000001.jpg 2880`` per line, no header).

    Keys are matched against each image's path relative to the source, then its bare file
    name. Raises FileNotFoundError for a missing file, ValueError (naming the file and line)
    for missing columns, malformed lines or a key listed with two different groups.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"groups CSV not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    groups: dict[str, str] = {}

    def add(key: str, group: str, where: str) -> None:
        if not key or not group:
            raise ValueError(f"{path}: {where}: empty file name or group")
        if key in groups and groups[key] != group:
            raise ValueError(f"{path}: {key!r} is listed in groups {groups[key]!r} and {group!r}")
        groups[key] = group

    if "," not in first and len(first.split()) == 2:  # CelebA's identity_CelebA.txt
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}: line {number}: expected 'file identity', got {line.strip()[:60]!r}")
            add(parts[0], parts[1], f"line {number}")
    else:
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        missing = [c for c in (key_column, group_column) if c not in columns]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; columns are {columns}")
        for number, row in enumerate(reader, start=2):
            if row.get(key_column) is None or row.get(group_column) is None:
                raise ValueError(f"{path}: line {number}: too few fields")
            add(row[key_column].strip(), row[group_column].strip(), f"line {number}")
    if not groups:
        raise ValueError(f"{path}: no rows")
    return groups


def _group_for(relpath: str, groups: Mapping[str, Any]) -> str | None:
    if relpath in groups:
        return str(groups[relpath])
    name = PurePosixPath(relpath).name
    if name in groups:
        return str(groups[name])
    return None


# ---- naming ----------------------------------------------------------------------------

def _output_names(relpaths: list[str]) -> list[str]:
    """One file stem per item; a stem shared (case-insensitively) gets a path-hash suffix."""
    # a backslash would be a folder separator on Windows (readable names contain "\\xNN")
    stems = [PurePosixPath(r).stem.replace("\\", "_") for r in relpaths]
    counts = Counter(s.lower() for s in stems)
    names: list[str] = []
    taken: set[str] = set()
    for relpath, stem in zip(relpaths, stems):
        name = stem
        if counts[stem.lower()] > 1:
            name = f"{stem}-{hashlib.sha1(relpath.encode()).hexdigest()[:8]}"
        base, k = name, 2
        while name.lower() in taken:  # a zip holding the same member name twice
            name, k = f"{base}-{k}", k + 1
        taken.add(name.lower())
        names.append(name)
    return names


# ---- preprocessing ---------------------------------------------------------------------

@dataclass
class _Accepted:
    relpath: str
    sha256: str
    width: int
    height: int
    mode: str
    crop_top: int
    crop_left: int
    group: str = ""


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with replaced_atomically(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    write_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _crop_origin(shape: tuple[int, ...], hr_size: int, crop: str, rng: np.random.Generator | None) -> tuple[int, int]:
    """Top-left corner of the HR window; the same windows as ``images.center_crop`` / ``random_crop``."""
    if crop == "center":
        return (shape[0] - hr_size) // 2, (shape[1] - hr_size) // 2
    assert rng is not None
    return int(rng.integers(0, shape[0] - hr_size + 1)), int(rng.integers(0, shape[1] - hr_size + 1))


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


def _multi_folder_candidates(folders: list[Path], exclude: Path) -> list[_Candidate]:
    """Images of several folders, each relative path prefixed with its folder's name."""
    names = [f.resolve().name for f in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"source folders must have distinct names, got {[str(f) for f in folders]}")
    candidates = []
    for folder, name in zip(folders, names):
        if not folder.is_dir():
            raise ValueError(f"source {folder} is not a folder (several sources must all be folders)")
        for c in _folder_candidates(folder, exclude=exclude):
            candidates.append(_Candidate(f"{readable_name(name)}/{c.relpath}", c.read, c.problem))
    return candidates


def preprocess(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    hr_size: int = 176,
    scale: int = 4,
    crop: str = "center",
    test_fraction: float = 0.2,
    seed: int = 0,
    min_size: int | None = None,
    groups: Mapping[str, Any] | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> PreprocessSummary:
    """Crop every usable image of ``source`` into an HR/LR train/test set under ``out_dir``.

    Args:
        source: a folder (searched recursively; extensions in ``IMAGE_EXTENSIONS``, any case)
            or a ``.zip`` (members read directly, never extracted); or several folders (a list,
            or one string separated by ``os.pathsep``), each file then named ``<folder>/<path>``.
        out_dir: output folder; new, empty, or holding an earlier run with the same
            ``source`` and parameters (then this returns its summary at once, without
            re-reading the source; a finished set with missing files is regenerated).
        hr_size: side of the square HR crop, pixels. The image is cropped at its original
            resolution (no resize first), as in the original study.
        scale: HR side / LR side; ``hr_size`` must be divisible by it.
        crop: ``"center"`` or ``"random"`` (a window drawn from a generator keyed by
            ``seed`` and the file's sha256, so it is the same whatever else is in the source).
        test_fraction: share of accepted images in the test split, in [0, 1).
        seed: split (and random crop) seed.
        min_size: smallest accepted side in pixels (default and minimum: ``hr_size``).
        groups: optional ``relative path or file name -> group id``; the split then keeps
            every group on one side. Every accepted image must have a group.
        limit: stop after this many accepted images (taken in sorted relative-path order).
        progress: show a tqdm bar (stderr) and print the summary (stdout).

    Rejected (listed in ``rejected.csv``, never fatal): empty, non-image, truncated or
    corrupt files, images smaller than ``min_size`` on either side, exact duplicates
    (same file sha256, or the same decoded pixels) of an already accepted image, and the
    hostile inputs of the module docstring (unsafe zip paths, zip bombs, oversized files or
    images, multi-frame files, symlink loops and special files).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: bad parameters, no usable image in ``source``, or ``out_dir`` holds
            something else (a run with other parameters, or unrelated files).
    """
    sources = split_sources(source)
    source_path = sources[0]
    out_path = Path(out_dir)
    _validate_parameters(hr_size, scale, crop, test_fraction, min_size, limit)
    for path in sources:
        if not path.exists():
            raise FileNotFoundError(f"source not found: {path}")
    is_zip = len(sources) == 1 and source_path.is_file() and source_path.suffix.lower() == ".zip"
    if not (source_path.is_dir() or is_zip):
        raise ValueError(f"source {source_path} is neither a folder nor a .zip file")
    min_side = hr_size if min_size is None else min_size
    parameters = {
        "source": os.pathsep.join(str(p.resolve()) for p in sources),
        "hr_size": hr_size,
        "scale": scale,
        "lr_size": hr_size // scale,
        "crop": crop,
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "min_size": min_side,
        "limit": limit,
        "groups_sha256": _groups_digest(groups),
    }
    existing = _check_existing_output(out_path, parameters)
    if existing is not None:
        if progress:
            print(f"preprocess: already done, reusing {out_path} (same source and parameters)")
            print(existing)
        return existing

    created_out_dir = not out_path.exists()
    archive = None
    try:
        if is_zip:
            try:
                archive = zipfile.ZipFile(source_path)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise ValueError(f"{source_path} is not a readable zip file ({exc})") from exc
            candidates = _zip_candidates(archive)
        elif len(sources) > 1:
            candidates = _multi_folder_candidates(sources, exclude=out_path)
        else:
            candidates = _folder_candidates(source_path, exclude=out_path)
        candidates.sort(key=lambda c: c.relpath)
        if not candidates:
            raise ValueError(
                f"no image files in {source_path} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, any case)"
            )
        accepted, rejected, n_examined = _crop_candidates(
            candidates, out_path, parameters, hr_size, scale, crop, seed, min_side, groups, limit, progress
        )
        if not accepted:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(r.kind for r in rejected).items()))
            raise ValueError(f"no usable image in {source_path}: all {len(rejected)} image files were rejected ({kinds})")
    except BaseException:
        _discard_staging(out_path, created_out_dir)  # leave out_dir as this call found it
        raise
    finally:
        if archive is not None:
            archive.close()

    summary = _finish(out_path, accepted, rejected, parameters, test_fraction, seed, n_examined, groups is not None)
    if progress:
        print(summary)
    return summary


def _discard_staging(out_path: Path, created_out_dir: bool) -> None:
    """Remove what an unfinished call wrote before any final file: staged PNGs and the marker."""
    staging = out_path / _STAGING_DIR
    if staging.is_dir():
        for staged in staging.glob("*_[hl]r.png"):
            staged.unlink(missing_ok=True)
        try:
            staging.rmdir()
        except OSError:
            pass
    (out_path / _IN_PROGRESS_FILE).unlink(missing_ok=True)
    if created_out_dir:
        try:
            out_path.rmdir()  # only if empty
        except OSError:
            pass


def _validate_parameters(
    hr_size: int, scale: int, crop: str, test_fraction: float, min_size: int | None, limit: int | None
) -> None:
    if scale < 1 or hr_size < 1:
        raise ValueError(f"hr_size and scale must be positive, got {hr_size} and {scale}")
    if hr_size % scale:
        raise ValueError(f"hr_size ({hr_size}) must be divisible by scale ({scale})")
    if crop not in ("center", "random"):
        raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if min_size is not None and min_size < hr_size:
        raise ValueError(f"min_size ({min_size}) must be at least hr_size ({hr_size})")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


def _crop_candidates(
    candidates: list[_Candidate],
    out_path: Path,
    parameters: dict[str, Any],
    hr_size: int,
    scale: int,
    crop: str,
    seed: int,
    min_side: int,
    groups: Mapping[str, Any] | None,
    limit: int | None,
    progress: bool,
) -> tuple[list[_Accepted], list[RejectedFile], int]:
    """Decode, check, crop and stage candidates (until ``limit`` are accepted).

    Staged files are ``OUT/.staging/<sha256>_{hr,lr}.png``. Returns the accepted and
    rejected items and how many candidates were examined.
    """
    from tqdm.auto import tqdm

    staging = out_path / _STAGING_DIR
    accepted: list[_Accepted] = []
    rejected: list[RejectedFile] = []
    by_file_hash: dict[str, str] = {}
    by_pixel_hash: dict[str, str] = {}
    missing_group: list[str] = []
    started = False
    bar = tqdm(candidates, desc="preprocess", unit="img", disable=not progress, file=sys.stderr)
    n_examined = 0
    for candidate in bar:
        if limit is not None and len(accepted) >= limit:
            break
        n_examined += 1
        relpath = candidate.relpath
        data = _read_candidate(candidate)
        if isinstance(data, RejectedFile):
            rejected.append(data)
            continue
        file_hash = hashlib.sha256(data).hexdigest()
        if file_hash in by_file_hash:
            rejected.append(RejectedFile(relpath, "duplicate", f"duplicate of {by_file_hash[file_hash]}"))
            continue
        decoded = _decode_candidate(data, relpath)
        if isinstance(decoded, RejectedFile):
            rejected.append(decoded)
            continue
        image, mode = decoded
        height, width = image.shape[:2]
        if width < min_side or height < min_side:
            rejected.append(RejectedFile(relpath, "too small", f"too small: {width}x{height} < {min_side}"))
            continue
        pixel_hash = hashlib.sha256(f"{image.shape}".encode() + image.tobytes()).hexdigest()
        if pixel_hash in by_pixel_hash:
            rejected.append(
                RejectedFile(relpath, "duplicate", f"duplicate of {by_pixel_hash[pixel_hash]} (identical pixels)")
            )
            continue
        group = ""
        if groups is not None:
            found = _group_for(relpath, groups)
            if found is None:
                missing_group.append(relpath)
                continue
            group = found
        rng = np.random.default_rng([seed, int(file_hash[:16], 16)]) if crop == "random" else None
        top, left = _crop_origin(image.shape, hr_size, crop, rng)
        hr = image[top : top + hr_size, left : left + hr_size]
        lr = bicubic_downscale(hr, scale)
        if not started:  # create the output folder only once something will go in it
            staging.mkdir(parents=True, exist_ok=True)
            _write_json(out_path / _IN_PROGRESS_FILE, {"parameters": parameters})
            started = True
        save_png(hr, staging / f"{file_hash}_hr.png")
        save_png(lr, staging / f"{file_hash}_lr.png")
        by_file_hash[file_hash] = relpath
        by_pixel_hash[pixel_hash] = relpath
        accepted.append(_Accepted(relpath, file_hash, width, height, mode, top, left, group))
    bar.close()
    if missing_group:
        examples = ", ".join(missing_group[:3])
        raise ValueError(
            f"{len(missing_group)} accepted image(s) have no group in the groups mapping (e.g. {examples}); "
            "every image needs a group for a group split"
        )
    return accepted, rejected, n_examined


def _read_candidate(candidate: _Candidate) -> bytes | RejectedFile:
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


def _decode_candidate(data: bytes, relpath: str) -> tuple[np.ndarray, str] | RejectedFile:
    """The upright RGB pixels and the file's Pillow mode (for the manifest), or why it is rejected."""
    try:
        header = read_header(data, name=relpath)
        if header.frames > 1:  # which frame is "the" picture is a guess: leave it out
            return RejectedFile(relpath, "multi-frame",
                                f"multi-frame: {header.format} of {header.frames} frames (a training image is one picture)")
        return load_rgb(data, name=relpath), header.mode
    except ImageDecodeError as exc:
        return RejectedFile(relpath, exc.kind, exc.reason)


def _finish(
    out_path: Path,
    accepted: list[_Accepted],
    rejected: list[RejectedFile],
    parameters: dict[str, Any],
    test_fraction: float,
    seed: int,
    n_candidates: int,
    grouped: bool,
) -> PreprocessSummary:
    """Split, move staged files to their final names, write the CSVs and preprocess.json."""
    accepted.sort(key=lambda a: a.relpath)
    relpaths = [a.relpath for a in accepted]
    splits = _assign_splits(relpaths, [a.group for a in accepted] if grouped else None, test_fraction, seed)
    names = _output_names(relpaths)
    staging = out_path / _STAGING_DIR
    for split in SPLITS:
        for resolution in ("hr", "lr"):
            (out_path / split / resolution).mkdir(parents=True, exist_ok=True)
    rows = []
    for item, split, name in zip(accepted, splits, names):
        for resolution in ("hr", "lr"):
            os.replace(staging / f"{item.sha256}_{resolution}.png", out_path / split / resolution / f"{name}.png")
        rows.append(
            {
                "name": name, "split": split, "source": item.relpath, "sha256": item.sha256,
                "width": item.width, "height": item.height, "mode": item.mode,
                "crop_top": item.crop_top, "crop_left": item.crop_left,
                "hr_size": parameters["hr_size"], "lr_size": parameters["lr_size"], "group": item.group,
            }
        )
    rows.sort(key=lambda r: (SPLITS.index(r["split"]), r["source"]))
    rejected = sorted(rejected, key=lambda r: r.source)
    _write_csv(out_path / MANIFEST_FILE, MANIFEST_COLUMNS, rows)
    _write_csv(out_path / REJECTED_FILE, REJECTED_COLUMNS, [vars(r) for r in rejected])
    n_test = splits.count("test")
    from upsampler import __version__
    from PIL import __version__ as pillow_version

    if grouped:
        test_groups = {a.group for a, sp in zip(accepted, splits) if sp == "test"}
        train_groups = {a.group for a, sp in zip(accepted, splits) if sp == "train"}
        split = (f"split by group: {len(test_groups)} groups in test, {len(train_groups)} in train, "
                 f"{len(test_groups & train_groups)} in both")
    else:
        split = SPLIT_BY_IMAGE
        print(f"WARNING: {out_path}: {SPLIT_BY_IMAGE_WARNING}", file=sys.stderr)
    info = {
        "format_version": FORMAT_VERSION,
        "split": split,
        "parameters": parameters,
        "counts": {
            "candidates": n_candidates,
            "accepted": len(accepted),
            "train": len(accepted) - n_test,
            "test": n_test,
            "rejected": len(rejected),
            "rejected_by_kind": dict(sorted(Counter(r.kind for r in rejected).items())),
        },
        "software": {"upsampler": __version__, "pillow": pillow_version, "numpy": np.__version__},
    }
    _write_json(out_path / INFO_FILE, info)  # last: marks the set complete
    (out_path / _IN_PROGRESS_FILE).unlink(missing_ok=True)
    try:
        staging.rmdir()  # our own, now empty, staging folder
    except OSError:
        pass
    return _summary_from_disk(out_path, info, already_done=False)


# ---- reading a processed set -----------------------------------------------------------

def _read_png(path: Path) -> np.ndarray:
    return load_rgb(path)


def split_names(processed_dir: str | os.PathLike, split: str) -> list[str]:
    """The file stems of one split of a processed set, in manifest order (its ``manifest.csv``).

    Raises FileNotFoundError when the folder or its manifest is missing, ValueError for an
    unknown or empty split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(processed_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"processed data folder not found: {root} (run `upsampler preprocess` first)")
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        raise FileNotFoundError(f"no {MANIFEST_FILE} in {root}: not a processed set (run `upsampler preprocess` first)")
    names = [row["name"] for row in _read_csv_rows(manifest) if row["split"] == split]
    if not names:
        raise ValueError(f"the {split} split of {root} is empty")
    return names


def load_split(processed_dir: str | os.PathLike, split: str, *,
               names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load one split of a processed set: ``(lr, hr, names)`` in manifest order.

    ``lr`` is ``uint8 (N, h, w, 3)``, ``hr`` is ``uint8 (N, H, W, 3)``, ``names`` the file
    stems. ``names``: load only these images of the split (in the order given; see
    :func:`load_train_split`); None: all. Raises FileNotFoundError when the folder or its
    manifest is missing, ValueError for an unknown or empty split or a name not in the split.
    """
    root = Path(processed_dir)
    available = split_names(root, split)
    if names is None:
        names = available
    else:
        names = list(names)
        missing = sorted(set(names) - set(available))
        if missing:
            raise ValueError(f"{root}: not in its {split} split: {', '.join(missing[:5])}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if not names:
            raise ValueError(f"no images of the {split} split of {root} asked for")
    hr = np.stack([_read_png(root / split / "hr" / f"{name}.png") for name in names])
    lr = np.stack([_read_png(root / split / "lr" / f"{name}.png") for name in names])
    return lr, hr, names


#: The second key of the generator that chooses a training subset (``default_rng([split_seed, 1])``):
#: a stream of its own, not the one ``_assign_splits`` drew the train/test split from.
TRAIN_SUBSET_KEY = 1


def choose_train_images(names: Sequence[str], train_images: int | None, *, split_seed: int,
                        source: str | os.PathLike = "the processed set") -> list[str]:
    """The training images a run uses (``data.train_images``), in the order of ``names``.

    ``None``: all of ``names``. Else ``train_images`` of them: the first of a
    ``np.random.default_rng([split_seed, TRAIN_SUBSET_KEY])`` permutation of the *sorted* names,
    so the subset depends only on the set of names and the split seed (never on the training
    seed, nor on the order the names come in); it is returned in the order of ``names`` (the
    manifest's), so asking for every image gives exactly the arrays, and the batches, of ``None``.
    More than there are is a ValueError naming ``source``, the count and the field.
    """
    names = list(names)
    if train_images is None:
        return names
    if isinstance(train_images, bool) or not isinstance(train_images, int) or train_images < 1:
        raise ValueError(f"data.train_images must be a number of images >= 1 or None, got {train_images!r}")
    if train_images > len(names):
        raise ValueError(f"data.train_images={train_images}: {source} has only {len(names)} training images; "
                         f"ask for at most {len(names)} (or data.train_images=null for all)")
    ordered = sorted(names)
    permutation = np.random.default_rng([split_seed, TRAIN_SUBSET_KEY]).permutation(len(ordered))
    chosen = {ordered[i] for i in permutation[:train_images]}
    return [name for name in names if name in chosen]


def train_image_names(processed_dir: str | os.PathLike, data: DataConfig) -> list[str]:
    """The names of the training images a run with ``data`` uses (:func:`choose_train_images`
    of the processed set's train split), in manifest order."""
    return choose_train_images(split_names(processed_dir, "train"), data.train_images, split_seed=data.split_seed,
                               source=Path(processed_dir))


def load_train_split(processed_dir: str | os.PathLike, data: DataConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`load_split` of the train split restricted to ``data.train_images``
    (:func:`train_image_names`): what the training pipeline draws its batches from."""
    return load_split(processed_dir, "train", names=train_image_names(processed_dir, data))


# ---- training pipeline -----------------------------------------------------------------

def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches in one pass over ``n_images`` (the remainder is dropped)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_images < batch_size:
        raise ValueError(f"the training set has {n_images} images, fewer than one batch of {batch_size}")
    return n_images // batch_size


def epoch_order(n_images: int, *, seed: int, epoch: int, flips: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The image order and horizontal-flip flags of one epoch, a pure function of (seed, epoch).

    Returns ``(indices, flip)``: a permutation of ``range(n_images)`` from
    ``np.random.default_rng([seed, epoch])`` and a boolean per position (all False when
    ``flips`` is off) from ``np.random.default_rng([seed, epoch, 1])``.
    """
    indices = np.random.default_rng([seed, epoch]).permutation(n_images)
    if flips:
        flip = np.random.default_rng([seed, epoch, 1]).random(n_images) < 0.5
    else:
        flip = np.zeros(n_images, dtype=bool)
    return indices, flip


def crop_origins(n_images: int, lr_size: int, lr_crop: int, *, seed: int, epoch: int) -> np.ndarray:
    """LR-pixel origins ``(n_images, 2)`` of one epoch's random crops, by epoch position.

    A pure function of (seed, epoch) like :func:`epoch_order`; the HR crop starts at
    ``scale *`` the LR origin, so LR and HR crops stay exactly aligned.
    """
    return np.random.default_rng([seed, epoch, 2]).integers(0, lr_size - lr_crop + 1, size=(n_images, 2))


def train_batches(
    lr: np.ndarray,
    hr: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    flips: bool = False,
    crop: int | None = None,
    skip_batches: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of uint8 ``(lr, hr)`` NumPy batches, fully determined by (seed, epoch).

    Args:
        lr, hr: uint8 arrays ``(N, h, w, 3)`` and ``(N, H, W, 3)`` (from :func:`load_split`).
        batch_size: images per batch; the last partial batch is dropped, so every batch
            has this static size.
        seed, epoch: the shuffle key (see :func:`epoch_order`). Same key, same batches.
        flips: mirror left-right the same images in LR and HR, decided per (seed, epoch,
            position).
        crop: HR side of a random crop per image (its LR crop is ``crop / scale`` at the
            matching origin; see :func:`crop_origins`); None: whole images.
        skip_batches: start at this batch of the epoch (a run resumed mid-epoch);
            ``0 <= skip_batches <= steps_per_epoch``.

    Knows nothing of the model or the backend: every engine (TensorFlow's ``tf.data`` wrapper
    :func:`make_train_dataset`, the JAX step) eats these arrays. Raises ValueError when there are
    fewer images than ``batch_size``.
    """
    lr = np.asarray(lr)
    hr = np.asarray(hr)
    if lr.ndim != 4 or hr.ndim != 4 or len(lr) != len(hr):
        raise ValueError(f"lr and hr must be (N, h, w, C) arrays of equal N, got {lr.shape} and {hr.shape}")
    if lr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise ValueError(f"lr and hr must be uint8, got {lr.dtype} and {hr.dtype}")
    n_batches = steps_per_epoch(len(lr), batch_size)
    if not 0 <= skip_batches <= n_batches:
        raise ValueError(f"skip_batches must be in [0, {n_batches}] for this epoch, got {skip_batches}")
    indices, flip = epoch_order(len(lr), seed=seed, epoch=epoch, flips=flips)
    scale = hr.shape[1] // lr.shape[1]
    lr_crop = None
    if crop is not None and crop < hr.shape[1]:
        if crop % scale or crop > min(hr.shape[1:3]):
            raise ValueError(f"crop {crop} must be a multiple of the scale {scale} and at most the HR size {hr.shape[1:3]}")
        lr_crop = crop // scale
        origins = crop_origins(len(lr), min(lr.shape[1:3]), lr_crop, seed=seed, epoch=epoch)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for b in range(skip_batches, n_batches):
            window = slice(b * batch_size, (b + 1) * batch_size)
            chosen = indices[window]
            if lr_crop is None:
                lr_batch, hr_batch = lr[chosen], hr[chosen]
            else:
                lr_batch = np.stack([lr[i, y:y + lr_crop, x:x + lr_crop]
                                     for i, (y, x) in zip(chosen, origins[window])])
                hr_batch = np.stack([hr[i, scale * y:scale * (y + lr_crop), scale * x:scale * (x + lr_crop)]
                                     for i, (y, x) in zip(chosen, origins[window])])
            mirrored = flip[window]
            if mirrored.any():
                lr_batch[mirrored] = lr_batch[mirrored, :, ::-1]
                hr_batch[mirrored] = hr_batch[mirrored, :, ::-1]
            yield lr_batch, hr_batch

    return batches()


def make_train_dataset(
    lr: np.ndarray,
    hr: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    flips: bool = False,
    crop: int | None = None,
    shuffle_buffer: int = 4096,
    skip_batches: int = 0,
) -> "tf.data.Dataset":
    """TensorFlow only: :func:`train_batches` as a ``tf.data.Dataset`` of float32 batches in [-1, 1].

    ``shuffle_buffer`` is kept for configuration compatibility; unused, because the order is a
    full permutation of the epoch (what an unbounded shuffle buffer would give). The uint8 ->
    float conversion (``x / 127.5 - 1``) happens on the fly; batches are prefetched.
    """
    import tensorflow as tf

    if shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
    epoch_batches = functools.partial(train_batches, lr, hr, batch_size=batch_size, seed=seed, epoch=epoch,
                                      flips=flips, crop=crop, skip_batches=skip_batches)
    epoch_batches()  # validates eagerly, before any tf.data
    lr, hr = np.asarray(lr), np.asarray(hr)
    scale = hr.shape[1] // lr.shape[1]
    cropped = crop is not None and crop < hr.shape[1]
    lr_shape = lr.shape[1:] if not cropped else (crop // scale, crop // scale, lr.shape[3])
    hr_shape = hr.shape[1:] if not cropped else (crop, crop, hr.shape[3])
    signature = (
        tf.TensorSpec((batch_size, *lr_shape), tf.uint8),
        tf.TensorSpec((batch_size, *hr_shape), tf.uint8),
    )

    def to_unit_range(lr_batch: "tf.Tensor", hr_batch: "tf.Tensor") -> tuple["tf.Tensor", "tf.Tensor"]:
        return (
            tf.cast(lr_batch, tf.float32) / 127.5 - 1.0,
            tf.cast(hr_batch, tf.float32) / 127.5 - 1.0,
        )

    dataset = tf.data.Dataset.from_generator(epoch_batches, output_signature=signature)
    dataset = dataset.map(to_unit_range, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


# ---- command line ----------------------------------------------------------------------

def configure_preprocess_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``upsampler preprocess`` (defaults from :class:`upsampler.config.DataConfig`)."""
    defaults = DataConfig()
    parser.add_argument("source", nargs="+", help="folder (searched recursively) or .zip of images; several folders are joined")
    parser.add_argument("--out", required=True, help="output folder (new, empty, or an identical earlier run)")
    parser.add_argument("--hr-size", type=integer(2), default=defaults.hr_size, help="HR crop side, pixels (default %(default)s)")
    parser.add_argument("--scale", type=integer(1), default=defaults.scale, help="HR side / LR side (default %(default)s)")
    parser.add_argument("--crop", choices=("center", "random"), default=defaults.crop, help="crop position (default %(default)s)")
    parser.add_argument("--test-fraction", type=number(0, 1), default=defaults.test_fraction, help="share of images in the test split (default %(default)s)")
    parser.add_argument("--seed", type=integer(0), default=defaults.split_seed, help="split / random-crop seed (default %(default)s)")
    parser.add_argument("--min-size", type=integer(1), default=defaults.min_size, help="smallest accepted image side (default: --hr-size)")
    parser.add_argument("--groups", help="CSV mapping file name -> group (e.g. meta/faces_celeba_identity.csv): split by group")
    parser.add_argument("--group-key-column", default="file", help="file-name column of --groups (default %(default)s)")
    parser.add_argument("--group-column", default="celeba_identity", help="group column of --groups (default %(default)s)")
    parser.add_argument("--limit", type=integer(1), help="stop after this many accepted images (sorted path order)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def run_preprocess(args: argparse.Namespace) -> int:
    """``upsampler preprocess``: returns 0; bad input raises ValueError/FileNotFoundError (exit 2)."""
    groups = read_groups_csv(args.groups, args.group_key_column, args.group_column) if args.groups else None
    preprocess(
        args.source if len(args.source) > 1 else args.source[0],
        args.out,
        hr_size=args.hr_size,
        scale=args.scale,
        crop=args.crop,
        test_fraction=args.test_fraction,
        seed=args.seed,
        min_size=args.min_size,
        groups=groups,
        limit=args.limit,
        progress=not args.quiet,
    )
    return 0
