"""The built-in demo data: deterministic, the promised sizes, labelled DEMO, no train/test leakage."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upsampler import cli
from upsampler.data.preprocess import preprocess
from upsampler.data.splits import read_groups_csv
from upsampler.data.demo import (
    BROAD_PHOTOS,
    GROUPS_FILE,
    NARROW_PHOTOS,
    README_FILE,
    SOURCES_FILE,
    is_demo_folder,
    package_photo_path,
    write_demo_datasets,
)

COUNTS = {"broad": 30, "narrow": 18}


def _write(root: Path, seed: int = 0, size: int = 32) -> dict[str, Path]:
    return write_demo_datasets(root, broad_count=COUNTS["broad"], narrow_count=COUNTS["narrow"], size=size, seed=seed)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    return _write(tmp_path_factory.mktemp("demo"))


def test_bundled_photos_exist_without_download():
    for package, filename, _ in [*BROAD_PHOTOS.values(), *NARROW_PHOTOS.values()]:
        assert package_photo_path(package, filename).is_file()
    assert not set(BROAD_PHOTOS) & set(NARROW_PHOTOS)
    assert not {f for _, f, _ in BROAD_PHOTOS.values()} & {f for _, f, _ in NARROW_PHOTOS.values()}


def test_same_seed_same_bytes(demo, tmp_path):
    again = _write(tmp_path / "again")
    for role in ("broad", "narrow"):
        assert _tree(demo[role]) == _tree(again[role]), role


def test_other_seed_other_crops(demo, tmp_path):
    other = _write(tmp_path / "other", seed=1)
    pngs = {k: v for k, v in _tree(demo["narrow"]).items() if k.endswith(".png")}
    other_pngs = {k: v for k, v in _tree(other["narrow"]).items() if k.endswith(".png")}
    assert sorted(pngs.values()) != sorted(other_pngs.values())


@pytest.mark.parametrize("role", ["broad", "narrow"])
def test_sizes_and_files(demo, role):
    folder = demo[role]
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == COUNTS[role]
    for path in pngs:
        with Image.open(path) as img:
            assert img.size == (32, 32) and img.mode == "RGB"
    # every crop is distinct
    assert len({p.read_bytes() for p in pngs}) == len(pngs)
    photos = {p.name.split("_r")[0] for p in pngs}
    assert photos == set(BROAD_PHOTOS if role == "broad" else NARROW_PHOTOS)


@pytest.mark.parametrize("role", ["broad", "narrow"])
def test_readme_says_demo_and_lists_every_crop(demo, role):
    readme = (demo[role] / README_FILE).read_text()
    assert readme.startswith("DEMO DATA")
    assert "not a result of the study" in readme
    for path in demo[role].glob("*.png"):
        assert path.name in readme
    assert is_demo_folder(demo[role])


def test_narrow_set_is_one_kind_of_content(demo):
    # the narrow role is grey textures: every crop has R == G == B
    for path in demo["narrow"].glob("*.png"):
        pixels = np.asarray(Image.open(path))
        assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


@pytest.mark.parametrize("role", ["broad", "narrow"])
def test_windows_of_different_groups_never_overlap(demo, role):
    with (demo[role] / SOURCES_FILE).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == COUNTS[role]
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["photo"] != b["photo"] or a["group"] == b["group"]:
                continue
            ta, la, sa = int(a["top"]), int(a["left"]), int(a["side"])
            tb, lb, sb = int(b["top"]), int(b["left"]), int(b["side"])
            overlap = ta < tb + sb and tb < ta + sa and la < lb + sb and lb < la + sa
            assert not overlap, (a["file"], b["file"])


def test_group_split_keeps_tiles_on_one_side(demo, tmp_path):
    groups = read_groups_csv(demo["narrow"] / GROUPS_FILE, "file", "group")
    assert set(groups) == {p.name for p in demo["narrow"].glob("*.png")}
    out = tmp_path / "processed"
    summary = preprocess(demo["narrow"], out, hr_size=32, scale=4, groups=groups, progress=False)
    assert summary.n_accepted == COUNTS["narrow"] and summary.n_test > 0 and summary.n_train > 0
    with (out / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    sides: dict[str, set[str]] = {}
    for row in rows:
        sides.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert is_demo_folder(out)  # a set processed from demo data is recognised too


def test_cli_demo_data(tmp_path, capsys):
    assert cli.main(["demo-data", str(tmp_path), "--broad-count", "12", "--narrow-count", "6", "--size", "24"]) == 0
    assert len(list((tmp_path / "broad").glob("*.png"))) == 12
    assert len(list((tmp_path / "narrow").glob("*.png"))) == 6
    assert "DEMO data" in capsys.readouterr().out


def test_bad_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="size"):
        write_demo_datasets(tmp_path, size=200)
    with pytest.raises(ValueError, match="count"):
        write_demo_datasets(tmp_path, broad_count=3, narrow_count=3, size=32)
