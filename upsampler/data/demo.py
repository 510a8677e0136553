"""The built-in demo data: two small image folders cut from photos that ship inside packages.

Nothing is downloaded. The photos are the ones bundled *inside* the installed
``scikit-image`` wheel (``skimage/data/*.png|jpg``, no pooch fetch) and matplotlib's
``sample_data/grace_hopper.jpg``. :func:`write_demo_datasets` cuts many seeded square crops
from them into two folders that play the study's two roles:

``broad/`` - the "COCO" role (varied content)
    12 photos of unrelated subjects: an astronaut, a cat, a coffee cup, a rocket, a
    motorcycle (left view of the stereo pair only, so the two near-identical views never
    straddle the split), Grace Hopper, the cameraman, coins, the moon, the Hubble deep
    field, a retina fundus and an immunohistochemistry slide. Colour and grey.
``narrow/`` - the "CelebA" role (one kind of content)
    **grey ground-surface textures**: scikit-image's ``brick``, ``grass`` and ``gravel``
    (512x512 each). Faces would match CelebA better, but the packages ship only two usable
    face photos (astronaut, Grace Hopper; ``lfw_subset`` is 25x25), far too few to train and
    test on; three textures of one family give a narrow, homogeneous domain with enough
    distinct material. None of them appears in ``broad/``, as no CelebA image is in COCO.

**Crops.** Each photo is cut into a grid of ``2 * size`` px tiles; every crop lies inside one
tile, at one of the scales 1, 1.5 or 2 (a ``size``, ``1.5 size`` or ``2 size`` px window,
resized to ``size`` x ``size`` with Pillow's antialiased Lanczos when larger), at a seeded
position. Nearly flat windows (pixel std < 8 levels: sky, black space) are redrawn. The crop
counts are spread evenly over photos and, within a photo, round-robin over its tiles.

**No train/test leakage.** Crops from different tiles share no pixel. Each folder has a
``groups.csv`` (``file,group``; group = ``photo:tile``) to pass to ``upsampler preprocess
--groups groups.csv --group-column group``: the split then keeps every tile's crops on one
side, so no test pixel was ever seen in training (``run_all.sh`` does this for the demo).
Without ``--groups`` the split is per image and overlapping crops of one tile can land on
both sides. Each folder's ``README.txt`` says it is DEMO data and lists every crop's
source photo, tile, window and scale. Everything is a pure function of ``seed``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from upsampler.utils.argtypes import integer
from upsampler.utils.files import file_digest

DEMO_LABEL = "DEMO"
SCALES = (1.0, 1.5, 2.0)
MIN_STD = 8.0  # pixel std (0..255) below which a window counts as flat and is redrawn
GROUPS_FILE = "groups.csv"
README_FILE = "README.txt"
SOURCES_FILE = "sources.csv"

# key -> (package, file inside the package's data folder, description)
_SKIMAGE = "scikit-image"
_MPL = "matplotlib"
BROAD_PHOTOS: dict[str, tuple[str, str, str]] = {
    "astronaut": (_SKIMAGE, "astronaut.png", "astronaut Eileen Collins, flag and shuttle model (NASA)"),
    "chelsea": (_SKIMAGE, "chelsea.png", "Chelsea the cat"),
    "coffee": (_SKIMAGE, "coffee.png", "a cup of coffee on a saucer"),
    "rocket": (_SKIMAGE, "rocket.jpg", "a rocket on its launch pad (NASA)"),
    "motorcycle": (_SKIMAGE, "motorcycle_left.png", "a motorcycle in a workshop (left stereo view)"),
    "grace_hopper": (_MPL, "grace_hopper.jpg", "Rear Admiral Grace Hopper (US Navy)"),
    "camera": (_SKIMAGE, "camera.png", "the cameraman (grey)"),
    "coins": (_SKIMAGE, "coins.png", "Greek coins (grey)"),
    "moon": (_SKIMAGE, "moon.png", "the lunar surface (grey)"),
    "hubble": (_SKIMAGE, "hubble_deep_field.jpg", "Hubble eXtreme Deep Field (NASA)"),
    "retina": (_SKIMAGE, "retina.jpg", "a human retina, fundus photograph"),
    "ihc": (_SKIMAGE, "ihc.png", "immunohistochemistry slide (microscopy)"),
}
NARROW_PHOTOS: dict[str, tuple[str, str, str]] = {
    "brick": (_SKIMAGE, "brick.png", "a brick wall (grey texture)"),
    "grass": (_SKIMAGE, "grass.png", "grass (grey texture)"),
    "gravel": (_SKIMAGE, "gravel.png", "gravel (grey texture)"),
}
ROLES = {
    "broad": ("the 'COCO' role: varied content (Model A's training data)", BROAD_PHOTOS),
    "narrow": ("the 'CelebA' role: one kind of content, grey ground-surface textures "
               "(Model B's training data and the evaluation test set)", NARROW_PHOTOS),
}


def package_photo_path(package: str, filename: str) -> Path:
    """Where a bundled photo lies inside its installed package (FileNotFoundError if absent)."""
    if package == _SKIMAGE:
        import skimage.data

        folder = Path(skimage.data.__file__).parent
    elif package == _MPL:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "sample_data"
    else:  # pragma: no cover - the tables above name only these two
        raise ValueError(f"unknown package {package!r}")
    path = folder / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bundled photo missing from the installed {package} package")
    return path


def load_photo(package: str, filename: str) -> np.ndarray:
    """A bundled photo as ``uint8 (H, W, 3)`` RGB (grey replicated, alpha on white)."""
    from upsampler.data.images import load_rgb

    return load_rgb(package_photo_path(package, filename))


@dataclass(frozen=True)
class Crop:
    """One demo image: where it came from and how it was made."""

    file: str
    photo: str
    tile_row: int
    tile_col: int
    top: int
    left: int
    side: int
    scale: float

    @property
    def group(self) -> str:
        return f"{self.photo}:r{self.tile_row}c{self.tile_col}"


def _tiles(shape: tuple[int, ...], tile: int) -> list[tuple[int, int]]:
    rows, cols = shape[0] // tile, shape[1] // tile
    return [(r, c) for r in range(rows) for c in range(cols)]


def _plan_photo(
    key: str, image: np.ndarray, count: int, size: int, rng: np.random.Generator
) -> list[Crop]:
    """``count`` distinct crops of ``image``, spread round-robin over its informative tiles."""
    tile = 2 * size
    grey = image.astype(np.float64).mean(axis=2)
    tiles = _tiles(image.shape, tile)
    if not tiles:
        raise ValueError(f"demo photo {key!r} ({image.shape[1]}x{image.shape[0]}) is smaller than one {tile}px tile")
    informative = [t for t in tiles if grey[t[0] * tile:(t[0] + 1) * tile, t[1] * tile:(t[1] + 1) * tile].std() >= MIN_STD]
    tiles = informative or tiles
    order = [tiles[i] for i in rng.permutation(len(tiles))]
    sides = sorted({int(round(s * size)) for s in SCALES if round(s * size) <= tile})
    crops: list[Crop] = []
    seen: set[tuple[int, int, int]] = set()
    index = 0
    attempts = 0
    max_attempts = 200 * max(count, 1)
    while len(crops) < count:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(f"demo photo {key!r}: could not place {count} distinct crops of {size}px")
        row, col = order[index % len(order)]
        side = sides[int(rng.integers(len(sides)))]
        top = row * tile + int(rng.integers(0, tile - side + 1))
        left = col * tile + int(rng.integers(0, tile - side + 1))
        if (top, left, side) in seen:
            continue
        window = grey[top:top + side, left:left + side]
        if window.std() < MIN_STD and attempts < max_attempts // 2:
            continue  # flat: draw another window in the same tile
        seen.add((top, left, side))
        crops.append(Crop(f"{key}_r{row}c{col}_{len(crops):03d}.png", key, row, col, top, left, side, side / size))
        index += 1
    return crops


def _render(image: np.ndarray, crop: Crop, size: int) -> np.ndarray:
    from PIL import Image

    window = image[crop.top:crop.top + crop.side, crop.left:crop.left + crop.side]
    if crop.side == size:
        return np.ascontiguousarray(window)
    return np.asarray(Image.fromarray(window).resize((size, size), Image.Resampling.LANCZOS))


def _split_counts(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _write_set(
    folder: Path, role: str, photos: dict[str, tuple[str, str, str]], count: int, size: int, seed: int
) -> Path:
    from upsampler.data.images import save_png

    if count < len(photos):
        raise ValueError(f"{role}: count {count} is smaller than the number of photos ({len(photos)})")
    folder.mkdir(parents=True, exist_ok=True)
    all_crops: list[Crop] = []
    photo_lines: list[str] = []
    for (key, (package, filename, description)), n in zip(photos.items(), _split_counts(count, len(photos))):
        path = package_photo_path(package, filename)
        image = load_photo(package, filename)
        # One generator per (seed, role, photo): adding a photo never moves another's crops.
        key_int = int(hashlib.sha256(f"{role}/{key}".encode()).hexdigest()[:12], 16)
        rng = np.random.default_rng([seed, key_int])
        crops = _plan_photo(key, image, n, size, rng)
        for crop in crops:
            save_png(_render(image, crop, size), folder / crop.file)
        all_crops.extend(crops)
        photo_lines.append(
            f"  {key:<13} {package}: {filename} ({image.shape[1]}x{image.shape[0]}, sha256 {file_digest(path)[:16]}) "
            f"- {description}: {n} crops"
        )
    with (folder / GROUPS_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "group"])
        writer.writerows([c.file, c.group] for c in all_crops)
    with (folder / SOURCES_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "photo", "package", "source_file", "tile_row", "tile_col", "top", "left", "side",
                         "scale", "group"])
        for c in all_crops:
            package, filename, _ = photos[c.photo]
            writer.writerow([c.file, c.photo, package, filename, c.tile_row, c.tile_col, c.top, c.left, c.side,
                             f"{c.scale:g}", c.group])
    description, _ = ROLES[role]
    readme = [
        f"{DEMO_LABEL} DATA - NOT A REAL DATASET. Built by `upsampler demo-data` (upsampler.data.demo.write_demo_datasets)",
        f"with seed {seed}: {len(all_crops)} crops of {size}x{size} px, {description}.",
        "",
        "Results trained or evaluated on this folder are a demo of the pipeline, not a result of the study.",
        "",
        "Source photos (bundled inside the installed packages; nothing was downloaded):",
        *photo_lines,
        "",
        f"Each photo is cut into {2 * size}x{2 * size} px tiles; every crop lies inside one tile, at scale 1, 1.5 or 2",
        f"(a {size}, {int(1.5 * size)} or {2 * size} px window, Lanczos-resized to {size} px when larger).",
        f"{GROUPS_FILE} maps file -> group (photo:tile). Preprocess with `--groups {GROUPS_FILE} --group-column group`",
        "so that every tile lies entirely in train or in test: crops of different tiles share no pixel, so no",
        "test pixel is seen in training.",
        f"{SOURCES_FILE} lists every crop: file, photo, package, source file, tile, window (top, left, side), scale.",
        "",
        "Crops (file: photo tile window):",
        *[f"  {c.file}: {photos[c.photo][1]} tile r{c.tile_row}c{c.tile_col}, window top={c.top} left={c.left} "
          f"side={c.side} (scale {c.scale:g})" for c in all_crops],
    ]
    (folder / README_FILE).write_text("\n".join(readme) + "\n")
    return folder


def write_demo_datasets(
    out_root: str | os.PathLike,
    *,
    broad_count: int = 480,
    narrow_count: int = 360,
    size: int = 64,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``out_root/broad`` and ``out_root/narrow`` (see the module docstring).

    Args:
        out_root: parent folder; the two sets go into ``broad/`` and ``narrow/``. Existing
            files with the same names are overwritten with identical bytes (same seed).
        broad_count, narrow_count: images per set, spread evenly over the set's photos.
        size: side of every image, pixels (>= the profile's ``data.hr_size``; at most 150, so
            that every photo holds a ``2 * size`` tile: the smallest, chelsea, is 451x300).
        seed: everything (tiles, scales, windows) is a pure function of it.

    Returns:
        ``{"broad": Path, "narrow": Path}``.
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 px, got {size}")
    if 2 * size > 300:
        raise ValueError(f"size must be at most 150 px (the smallest demo photo is 300 px high), got {size}")
    root = Path(out_root)
    return {
        "broad": _write_set(root / "broad", "broad", BROAD_PHOTOS, broad_count, size, seed),
        "narrow": _write_set(root / "narrow", "narrow", NARROW_PHOTOS, narrow_count, size, seed),
    }


def is_demo_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` (a source folder, or a processed set made from one) holds demo data."""
    path = Path(path)
    readme = path / README_FILE
    if readme.is_file():
        return readme.read_text(errors="replace").startswith(f"{DEMO_LABEL} DATA")
    info = path / "preprocess.json"
    if info.is_file():
        import json

        try:
            source = json.loads(info.read_text())["parameters"]["source"]
        except (ValueError, KeyError, TypeError):
            return False
        return is_demo_folder(source)
    return False


# ---- command line ----------------------------------------------------------------------

def configure_demo_data_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="folder to write broad/ and narrow/ into")
    parser.add_argument("--broad-count", type=integer(1), default=480, help="images in broad/ (default %(default)s)")
    parser.add_argument("--narrow-count", type=integer(1), default=360, help="images in narrow/ (default %(default)s)")
    parser.add_argument("--size", type=integer(8), default=64, help="image side in px, >= the profile's hr_size (default %(default)s)")
    parser.add_argument("--seed", type=integer(0), default=0, help="crop seed (default %(default)s)")


def run_demo_data(args: argparse.Namespace) -> int:
    paths = write_demo_datasets(args.out, broad_count=args.broad_count, narrow_count=args.narrow_count,
                                size=args.size, seed=args.seed)
    for role, path in paths.items():
        n = sum(1 for p in path.glob("*.png"))
        print(f"{DEMO_LABEL} data: {role:<6} {n} images of {args.size}x{args.size} -> {path} "
              f"(groups: {path / GROUPS_FILE})")
    return 0

