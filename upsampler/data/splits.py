"""The train/test split: seeded, from the sorted relative paths only, optionally by group.

With a groups file (CelebA's ``identity_CelebA.txt`` or a CSV) every group - a person - is on
one side only; without one the split is by image and every table says so
(:data:`SPLIT_BY_IMAGE`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import numpy as np


SPLIT_BY_IMAGE = "split by image (no identity list: the same person may be in train and test)"


SPLIT_BY_IMAGE_WARNING = (
    "no identity/group list given: the split is BY IMAGE, so the same person (or scene) can appear in both "
    "train and test. For faces pass --groups (a CSV with file and identity columns, or CelebA's "
    "identity_CelebA.txt); every table built on this set says 'split by image'.")


def groups_digest(groups: Mapping[str, Any] | None) -> str | None:
    if groups is None:
        return None
    text = json.dumps(sorted((str(k), str(v)) for k, v in groups.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def test_count(n_items: int, test_fraction: float) -> int:
    """round(test_fraction * n), but at least one image on each side when that is possible."""
    n_test = round_half_up(test_fraction * n_items)
    if test_fraction > 0 and n_items >= 2:
        n_test = min(max(n_test, 1), n_items - 1)
    return min(n_test, n_items)


def assign_splits(
    relpaths: list[str], group_of: list[str] | None, test_fraction: float, seed: int
) -> list[str]:
    """``"train"``/``"test"`` per item of ``relpaths`` (which must be sorted).

    Without groups: a ``default_rng(seed)`` permutation of the sorted items; the first
    ``round(test_fraction * N)`` go to test. With groups: the sorted distinct group ids are
    permuted the same way and whole groups go to test until it holds at least that many.
    """
    n_items = len(relpaths)
    target = test_count(n_items, test_fraction)
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
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}: line {line_number}: expected 'file identity', got {line.strip()[:60]!r}")
            add(parts[0], parts[1], f"line {line_number}")
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


def group_for(relpath: str, groups: Mapping[str, Any]) -> str | None:
    if relpath in groups:
        return str(groups[relpath])
    name = PurePosixPath(relpath).name
    if name in groups:
        return str(groups[name])
    return None
