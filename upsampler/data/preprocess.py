"""Preprocessing: images -> a processed train/test set (read back by :mod:`upsampler.data.processed`).

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
more than :data:`~upsampler.data.sources.MAX_ZIP_RATIO` times (``too large``, ``zip bomb``; never decompressed),
images declaring more than :data:`~upsampler.data.images.MAX_IMAGE_PIXELS` (``too large``; never
decoded), animations and multi-page files (``multi-frame``), symlink loops, broken links and
special files (``unreadable``; directory loops are walked once). File names that are not UTF-8
are kept, written with ``\\xNN`` escapes (``caf\\xe9.png``).

Running it again with the same source and parameters is a no-op ("already done"), which is
what lets ``run_all.sh`` resume; different parameters into the same folder are refused
(nothing is ever deleted). The train/test split depends only on the seed and the sorted
relative paths (never on the order the file system lists files), optionally by group
(e.g. CelebA identity) so that no person is in both splits.

A processed set is read back by :mod:`upsampler.data.processed`; the training batches come from
:mod:`upsampler.data.pipeline`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np

from upsampler.config import DataConfig
from upsampler.data.images import IMAGE_EXTENSIONS, bicubic_downscale, save_png
from upsampler.data.processed import (
    FORMAT_VERSION,
    IN_PROGRESS_FILE,
    INFO_FILE,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    REJECTED_COLUMNS,
    REJECTED_FILE,
    SPLITS,
    PreprocessSummary,
    check_existing_output,
    summary_from_disk,
)
from upsampler.data.sources import (
    Candidate,
    RejectedFile,
    decode_candidate,
    folder_candidates,
    multi_folder_candidates,
    read_candidate,
    split_sources,
    zip_candidates,
)
from upsampler.data.splits import (
    SPLIT_BY_IMAGE,
    SPLIT_BY_IMAGE_WARNING,
    assign_splits,
    group_for,
    groups_digest,
    read_groups_csv,
)
from upsampler.utils.argtypes import integer, number
from upsampler.utils.files import replaced_atomically, write_atomically


_STAGING_DIR = ".staging"


# ---- summary ---------------------------------------------------------------------------


# ---- sources ---------------------------------------------------------------------------


# ---- parameters and existing outputs ---------------------------------------------------


# ---- splitting -------------------------------------------------------------------------


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
        "groups_sha256": groups_digest(groups),
    }
    existing = check_existing_output(out_path, parameters)
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
            candidates = zip_candidates(archive)
        elif len(sources) > 1:
            candidates = multi_folder_candidates(sources, exclude=out_path)
        else:
            candidates = folder_candidates(source_path, exclude=out_path)
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
    (out_path / IN_PROGRESS_FILE).unlink(missing_ok=True)
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
    candidates: list[Candidate],
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
        data = read_candidate(candidate)
        if isinstance(data, RejectedFile):
            rejected.append(data)
            continue
        file_hash = hashlib.sha256(data).hexdigest()
        if file_hash in by_file_hash:
            rejected.append(RejectedFile(relpath, "duplicate", f"duplicate of {by_file_hash[file_hash]}"))
            continue
        decoded = decode_candidate(data, relpath)
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
            found = group_for(relpath, groups)
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
            _write_json(out_path / IN_PROGRESS_FILE, {"parameters": parameters})
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
    splits = assign_splits(relpaths, [a.group for a in accepted] if grouped else None, test_fraction, seed)
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
    (out_path / IN_PROGRESS_FILE).unlink(missing_ok=True)
    try:
        staging.rmdir()  # our own, now empty, staging folder
    except OSError:
        pass
    return summary_from_disk(out_path, info, already_done=False)


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
