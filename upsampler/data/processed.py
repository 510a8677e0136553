"""A processed set on disk: its files and summary, and reading it back (splits as uint8 arrays, the
training images a config uses).

``load_split`` reads a split (``manifest.csv`` order); ``load_train_split`` the training images of
a config: all of them, or the seeded subset of ``data.train_images`` (:func:`choose_train_images`,
chosen with the split seed, the same for every training seed).
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from upsampler.config import DataConfig
from upsampler.data.images import load_rgb, readable_name
from upsampler.data.sources import RejectedFile


#: File extensions (lower case) treated as images when scanning a folder or zip.
SPLITS = ("train", "test")
FORMAT_VERSION = 1
INFO_FILE = "preprocess.json"
MANIFEST_FILE = "manifest.csv"
REJECTED_FILE = "rejected.csv"
MANIFEST_COLUMNS = (
    "name", "split", "source", "sha256", "width", "height", "mode",
    "crop_top", "crop_left", "hr_size", "lr_size", "group",
)
REJECTED_COLUMNS = ("source", "kind", "reason")

IN_PROGRESS_FILE = ".preprocess-in-progress.json"


# ---- the set's summary, and a re-run of the same preprocessing ----------------------------

@dataclass
class PreprocessSummary:
    """What :func:`upsampler.data.preprocess.preprocess` made (or found already made) in ``out_dir``."""

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


def describe_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k))


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def summary_from_disk(out_dir: Path, info: Mapping[str, Any], already_done: bool) -> PreprocessSummary:
    rejected_rows = read_csv_rows(out_dir / REJECTED_FILE) if (out_dir / REJECTED_FILE).exists() else []
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


def outputs_complete(out_dir: Path) -> bool:
    manifest = out_dir / MANIFEST_FILE
    if not manifest.exists():
        return False
    for row in read_csv_rows(manifest):
        for resolution in ("hr", "lr"):
            if not (out_dir / row["split"] / resolution / f"{row['name']}.png").is_file():
                return False
    return True


def check_existing_output(out_dir: Path, parameters: dict[str, Any]) -> PreprocessSummary | None:
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
                f"({describe_differences(recorded, parameters)}); choose another output folder "
                "(nothing was changed or deleted)"
            )
        if outputs_complete(out_dir):
            return summary_from_disk(out_dir, info, already_done=True)
        return None  # same parameters but files missing: regenerate (same names, same pixels)
    if out_dir.exists() and any(out_dir.iterdir()):
        marker = out_dir / IN_PROGRESS_FILE
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
    names = [row["name"] for row in read_csv_rows(manifest) if row["split"] == split]
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
