"""upsampler.data.preprocess: preprocessing (rejections, split, resume), load_split, the tf.data pipeline, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upsampler import cli
from upsampler.data import preprocess as data, sources
from upsampler.data.pipeline import epoch_order, make_train_dataset, steps_per_epoch
from upsampler.data.preprocess import preprocess
from upsampler.data.processed import load_split
from upsampler.data.splits import read_groups_csv

HR = 32  # small crops keep the synthetic tests fast
SCALE = 4


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write_pngs(folder: Path, names: list[str], size: tuple[int, int] = (40, 48)) -> None:
    """One distinct noise PNG per name (content depends on the name only, not on order)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        seed = zlib.crc32(name.encode())
        Image.fromarray(_noise(size[0], size[1], seed)).save(folder / name)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _split_of(out: Path) -> dict[str, str]:
    return {row["source"]: row["split"] for row in _rows(out / "manifest.csv")}


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# ---- the acceptance case -----------------------------------------------------------------

@pytest.fixture()
def messy_folder(tmp_path: Path) -> Path:
    """Good images of several modes mixed with four bad files, at the study's 176 px size."""
    src = tmp_path / "messy"
    (src / "nested" / "deeper").mkdir(parents=True)
    size = (190, 180)  # (H, W): just above hr_size on both sides
    Image.fromarray(_noise(*size, 1)).save(src / "good1.jpg", quality=90)
    Image.fromarray(_noise(*size, 2)).save(src / "nested" / "good2.PNG")
    Image.fromarray(_noise(*size, 3)).save(src / "nested" / "deeper" / "good3.JPEG", quality=90)
    sixteen = (np.random.default_rng(4).integers(0, 65536, size)).astype(np.uint16)
    Image.fromarray(sixteen).save(src / "sixteen_bit.png")
    Image.new("CMYK", (size[1], size[0]), (10, 200, 30, 5)).save(src / "cmyk.jpg", quality=90)
    rgba = np.concatenate([_noise(*size, 5), np.full((*size, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(src / "rgba.png")
    Image.fromarray(_noise(*size, 6)[..., 0], "L").save(src / "grey.png")
    # the four bad ones
    buffer = io.BytesIO()
    Image.fromarray(_noise(*size, 7)).save(buffer, format="JPEG")
    (src / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (src / "nested" / "text.jpg").write_text("not an image at all\n")
    (src / "zero.png").write_bytes(b"")
    Image.fromarray(_noise(10, 10, 8)).save(src / "tiny.png")
    (src / "README.txt").write_text("ignored: not an image extension\n")
    return src


def test_messy_folder_is_cleaned_and_rejections_listed(messy_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    summary = preprocess(messy_folder, out, hr_size=176, scale=4, test_fraction=0.25, seed=0, progress=False)

    rejected = {row["source"]: row["reason"] for row in _rows(out / "rejected.csv")}
    assert set(rejected) == {"truncated.jpg", "nested/text.jpg", "zero.png", "tiny.png"}
    assert rejected["truncated.jpg"].startswith("truncated")
    assert rejected["nested/text.jpg"].startswith("not an image")
    assert rejected["zero.png"] == "empty file"
    assert rejected["tiny.png"] == "too small: 10x10 < 176"

    manifest = _rows(out / "manifest.csv")
    converted = {"good1.jpg", "nested/good2.PNG", "nested/deeper/good3.JPEG", "sixteen_bit.png", "cmyk.jpg", "rgba.png", "grey.png"}
    assert {row["source"] for row in manifest} == converted
    modes = {row["source"]: row["mode"] for row in manifest}
    assert modes["cmyk.jpg"] == "CMYK" and modes["sixteen_bit.png"].startswith("I;16") and modes["grey.png"] == "L"
    for row in manifest:
        assert row["hr_size"] == "176" and row["lr_size"] == "44"
        assert len(row["sha256"]) == 64
        hr = np.asarray(Image.open(out / row["split"] / "hr" / f"{row['name']}.png"))
        lr = np.asarray(Image.open(out / row["split"] / "lr" / f"{row['name']}.png"))
        assert hr.shape == (176, 176, 3) and lr.shape == (44, 44, 3)

    assert summary.n_candidates == 11
    assert summary.n_accepted == 7 and summary.n_rejected == 4
    assert (summary.n_train, summary.n_test) == (5, 2)  # round(0.25 * 7) = 2
    assert summary.rejected_by_kind == {"empty file": 1, "not an image": 1, "too small": 1, "truncated": 1}
    info = json.loads((out / "preprocess.json").read_text())
    assert info["counts"]["accepted"] == 7 and info["counts"]["rejected"] == 4
    assert info["parameters"]["hr_size"] == 176 and info["parameters"]["crop"] == "center"
    text = str(summary)
    assert "7 accepted (train 5, test 2)" in text and "4 rejected" in text and "too small" in text
    # no staging leftovers
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv", "preprocess.json", "rejected.csv", "test", "train"]


def test_center_crop_matches_the_original_pixels(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_pngs(src, ["a.png"], size=(41, 50))
    out = tmp_path / "out"
    preprocess(src, out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    original = np.asarray(Image.open(src / "a.png"))
    hr = np.asarray(Image.open(out / "train" / "hr" / "a.png"))
    np.testing.assert_array_equal(hr, original[4 : 4 + HR, 9 : 9 + HR])  # (41-32)//2, (50-32)//2
    lr = np.asarray(Image.open(out / "train" / "lr" / "a.png"))
    expected = np.asarray(Image.fromarray(hr).resize((HR // SCALE, HR // SCALE), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(lr, expected)


def test_duplicates_and_name_collisions(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_pngs(src / "a", ["img.png", "other.png"])
    _write_pngs(src / "b", ["img.png"])  # same content as a/img.png (content depends on name)
    Image.fromarray(_noise(40, 48, 99)).save(src / "b" / "IMG.bmp")  # same stem, other case and extension
    out = tmp_path / "out"
    summary = preprocess(src, out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    rejected = {r.source: r.reason for r in summary.rejected}
    assert rejected == {"b/img.png": "duplicate of a/img.png"}
    names = [row["name"] for row in _rows(out / "manifest.csv")]
    assert len(names) == 3 and len({n.lower() for n in names}) == 3
    assert "other" in names
    assert all((out / "train" / "hr" / f"{n}.png").is_file() for n in names)


# ---- split -------------------------------------------------------------------------------

def test_split_is_deterministic_whatever_the_creation_order(tmp_path: Path) -> None:
    names = [f"img{i:02d}.png" for i in range(20)]
    _write_pngs(tmp_path / "forward", names)
    _write_pngs(tmp_path / "backward", names[::-1])
    a = preprocess(tmp_path / "forward", tmp_path / "out_a", hr_size=HR, scale=SCALE, seed=3, progress=False)
    preprocess(tmp_path / "backward", tmp_path / "out_b", hr_size=HR, scale=SCALE, seed=3, progress=False)
    preprocess(tmp_path / "forward", tmp_path / "out_c", hr_size=HR, scale=SCALE, seed=4, progress=False)
    assert (a.n_train, a.n_test) == (16, 4)
    assert _split_of(tmp_path / "out_a") == _split_of(tmp_path / "out_b")
    assert _split_of(tmp_path / "out_a") != _split_of(tmp_path / "out_c")


def test_group_split_keeps_each_group_on_one_side(tmp_path: Path) -> None:
    names = [f"face{i:02d}.png" for i in range(30)]
    _write_pngs(tmp_path / "src", names, size=(HR, HR))
    groups_csv = tmp_path / "identity.csv"
    groups_csv.write_text("file,celeba_identity\n" + "".join(f"{n},{i % 10}\n" for i, n in enumerate(names)))
    groups = read_groups_csv(groups_csv)
    assert groups["face11.png"] == "1"
    summary = preprocess(tmp_path / "src", tmp_path / "out", hr_size=HR, scale=SCALE, groups=groups, progress=False)
    assert summary.n_test == 6  # 2 whole groups of 3
    sides: dict[str, set[str]] = {}
    for row in _rows(tmp_path / "out" / "manifest.csv"):
        sides.setdefault(row["group"], set()).add(row["split"])
    assert len(sides) == 10 and all(len(s) == 1 for s in sides.values())

    incomplete = {k: v for k, v in groups.items() if k != "face05.png"}
    with pytest.raises(ValueError, match="1 accepted image.*no group.*face05.png"):
        preprocess(tmp_path / "src", tmp_path / "out2", hr_size=HR, scale=SCALE, groups=incomplete, progress=False)
    assert not (tmp_path / "out2").exists()  # nothing left behind: a corrected rerun into out2 works


def test_celeba_identity_txt_gives_the_same_split_as_the_csv(tmp_path: Path) -> None:
    names = [f"{i:06d}.jpg" for i in range(1, 31)]
    _write_pngs(tmp_path / "src", [n.replace(".jpg", ".png") for n in names], size=(HR, HR))
    ids = {n.replace(".jpg", ".png"): str(100 + i % 7) for i, n in enumerate(names)}
    (tmp_path / "identity_CelebA.txt").write_text("".join(f"{k} {v}\n" for k, v in ids.items()))
    (tmp_path / "identity.csv").write_text("file,celeba_identity\n" + "".join(f"{k},{v}\n" for k, v in ids.items()))
    from_txt, from_csv = read_groups_csv(tmp_path / "identity_CelebA.txt"), read_groups_csv(tmp_path / "identity.csv")
    assert from_txt == from_csv == ids
    preprocess(tmp_path / "src", tmp_path / "out", hr_size=HR, scale=SCALE, groups=from_txt, progress=False)
    rows = _rows(tmp_path / "out" / "manifest.csv")
    train_ids = {r["group"] for r in rows if r["split"] == "train"}
    test_ids = {r["group"] for r in rows if r["split"] == "test"}
    assert test_ids and not (train_ids & test_ids)
    info = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert info["split"].startswith("split by group") and "0 in both" in info["split"]


def test_a_split_without_identities_is_recorded_and_warned(tmp_path: Path, capsys) -> None:
    _write_pngs(tmp_path / "src", [f"{i}.png" for i in range(6)], size=(HR, HR))
    preprocess(tmp_path / "src", tmp_path / "out", hr_size=HR, scale=SCALE, progress=False)
    info = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert info["split"].startswith("split by image")
    assert "WARNING" in capsys.readouterr().err
    from upsampler.metrics.evaluate import split_description

    assert split_description(tmp_path / "out" / "test").startswith("split by image")


@pytest.mark.parametrize("text, message", [
    ("000001.jpg 12\n000002.jpg\n", "line 2: expected 'file identity'"),
    ("file,celeba_identity\na.png,1\nb.png,\n", "line 3: empty file name or group"),
    ("000001.jpg 12\n000001.jpg 13\n", "listed in groups"),
])
def test_malformed_identity_lists_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_groups_csv(path)
    assert "ids.txt" in str(info.value)


def test_several_source_folders_are_joined(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "a", ["x.png", "y.png"], size=(HR, HR))
    _write_pngs(tmp_path / "b", ["x.png"], size=(HR + 4, HR + 4))
    summary = preprocess(f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}", tmp_path / "out", hr_size=HR,
                         scale=SCALE, progress=False)
    assert summary.n_accepted == 3
    assert sorted(r["source"] for r in _rows(tmp_path / "out" / "manifest.csv")) == ["a/x.png", "a/y.png", "b/x.png"]


@pytest.mark.shared_data
def test_faces_2600_split_by_identity_holds_out_whole_people(shared_data: Path, tmp_path: Path) -> None:
    groups = read_groups_csv(shared_data / "meta" / "faces_2600_celeba_identity.csv")
    summary = preprocess(shared_data / "faces_2600", tmp_path / "out", hr_size=176, scale=4, groups=groups,
                         limit=260, progress=False)
    rows = _rows(tmp_path / "out" / "manifest.csv")
    train_ids = {r["group"] for r in rows if r["split"] == "train"}
    test_ids = {r["group"] for r in rows if r["split"] == "test"}
    assert summary.n_test > 0 and test_ids and not (train_ids & test_ids)


def test_read_groups_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_groups_csv(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,person\na.png,1\n")
    with pytest.raises(ValueError, match="celeba_identity"):
        read_groups_csv(bad)


# ---- sources -----------------------------------------------------------------------------

def test_zip_source_matches_the_folder(messy_folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "messy.ZIP"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(messy_folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(messy_folder).as_posix())
        zf.writestr("__MACOSX/._good1.jpg", b"resource fork")
    from_folder = preprocess(messy_folder, tmp_path / "from_folder", progress=False)
    from_zip = preprocess(archive, tmp_path / "from_zip", progress=False)
    assert _rows(tmp_path / "from_zip" / "manifest.csv") == _rows(tmp_path / "from_folder" / "manifest.csv")
    assert [(r.source, r.reason) for r in from_zip.rejected] == [(r.source, r.reason) for r in from_folder.rejected]
    assert not (tmp_path / "messy").joinpath("good1").exists()  # nothing extracted next to the zip


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        preprocess(tmp_path / "does_not_exist", tmp_path / "out", progress=False)


def test_no_usable_image_raises_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files in .*empty"):
        preprocess(tmp_path / "empty", tmp_path / "out", progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_text("text")
    with pytest.raises(ValueError, match="no usable image in .*bad.*1 not an image"):
        preprocess(tmp_path / "bad", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# ---- hostile inputs (docs/hostile_inputs.md) --------------------------------------------

def _png_bytes(pixels: np.ndarray, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", **save_args)
    return buffer.getvalue()


def _all_files(root: Path) -> set[str]:
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def _rejected_kinds(out: Path) -> dict[str, str]:
    return {row["source"]: row["kind"] for row in _rows(out / "rejected.csv")}


def test_zip_members_with_unsafe_paths_are_listed_and_nothing_lands_outside_out(tmp_path: Path) -> None:
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    archive = work / "photos.zip"
    unsafe = ["../evil.png", "../../evil2.png", "/abs/evil3.png", "sub/../../evil4.png", "..\\..\\evil5.png",
              "C:/evil6.png"]
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/good.png", _png_bytes(_noise(40, 48, 1)))
        for index, name in enumerate(unsafe):
            zf.writestr(name, _png_bytes(_noise(40, 48, 10 + index)))
    before = _all_files(tmp_path)
    out = work / "out"
    summary = preprocess(archive, out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    assert [r["source"] for r in _rows(out / "manifest.csv")] == ["ok/good.png"]
    kinds = _rejected_kinds(out)
    assert set(kinds) == {name.replace("\\", "/") for name in unsafe}
    assert set(kinds.values()) == {"unsafe path"} and summary.n_rejected == len(unsafe)
    created = _all_files(tmp_path) - before
    assert created and all(Path(f).is_relative_to(out) for f in created)
    assert not any("evil" in Path(f).name for f in _all_files(tmp_path))


def test_a_zip_bomb_member_is_rejected_without_decompressing_it(tmp_path: Path, monkeypatch) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.png", bytes(50_000_000))  # 50 MB of zeros deflate to ~50 KB
        zf.writestr("big.bmp", np.random.default_rng(0).bytes(3 * 2**20), compress_type=zipfile.ZIP_STORED)
        zf.writestr("good.png", _png_bytes(_noise(40, 48, 1)))
    assert zipfile.ZipFile(archive).getinfo("bomb.png").compress_size < 200_000
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 2 * 2**20)  # a low size limit, to test it on 3 MB
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    out = tmp_path / "out"
    preprocess(archive, out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    rejected = {row["source"]: row for row in _rows(out / "rejected.csv")}
    assert rejected["bomb.png"]["kind"] == "zip bomb"
    assert "50,000,000 bytes" in rejected["bomb.png"]["reason"] and "not decompressed" in rejected["bomb.png"]["reason"]
    assert rejected["big.bmp"]["kind"] == "too large" and "3,145,728 bytes" in rejected["big.bmp"]["reason"]
    assert opened == ["good.png"]  # the two others were judged from the zip's directory alone


def test_decompression_bomb_images_are_rejected_unread(tmp_path: Path, png_header_only) -> None:
    src = tmp_path / "src"
    _write_pngs(src, ["good.png"])
    (src / "bomb20k.png").write_bytes(png_header_only(20000, 20000))  # over Pillow's own refusal
    (src / "bomb12k.png").write_bytes(png_header_only(12000, 12000))  # over our limit, Pillow only warns
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preprocess(src, out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    rejected = {row["source"]: row for row in _rows(out / "rejected.csv")}
    assert {k: r["kind"] for k, r in rejected.items()} == {"bomb20k.png": "too large", "bomb12k.png": "too large"}
    assert "400000000 pixels" in rejected["bomb20k.png"]["reason"]
    assert "12000x12000 = 144,000,000 pixels, over the limit of 89,478,485" in rejected["bomb12k.png"]["reason"]


def test_animations_and_multi_page_files_are_rejected(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_pngs(src, ["good.png"])
    frames = [Image.fromarray(_noise(40, 48, seed)) for seed in (1, 2, 3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(src / "pages.tif", save_all=True, append_images=frames[1:2])
    frames[2].save(src / "still.gif")
    out = tmp_path / "out"
    preprocess(src, out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    rejected = {row["source"]: row for row in _rows(out / "rejected.csv")}
    assert {k: r["kind"] for k, r in rejected.items()} == {"anim.gif": "multi-frame", "pages.tif": "multi-frame"}
    assert "GIF of 3 frames" in rejected["anim.gif"]["reason"] and "TIFF of 2 frames" in rejected["pages.tif"]["reason"]
    assert sorted(r["source"] for r in _rows(out / "manifest.csv")) == ["good.png", "still.gif"]


@pytest.mark.parametrize("orientation, turns", [(6, -1), (8, 1)])  # 6: turn 90 degrees clockwise to view
def test_exif_rotated_photos_are_cropped_upright(tmp_path: Path, orientation: int, turns: int) -> None:
    stored = _noise(36, 60, orientation)  # stored lying down: 60 wide, 36 high
    exif = Image.Exif()
    exif[0x0112] = orientation
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "photo.png").write_bytes(_png_bytes(stored, exif=exif))
    out = tmp_path / "out"
    preprocess(tmp_path / "src", out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    upright = np.rot90(stored, k=turns)  # 36 wide, 60 high
    (row,) = _rows(out / "manifest.csv")
    assert (row["width"], row["height"]) == ("36", "60")
    hr = np.asarray(Image.open(out / "train" / "hr" / "photo.png"))
    np.testing.assert_array_equal(hr, upright[14 : 14 + HR, 2 : 2 + HR])  # (60-32)//2, (36-32)//2


def test_file_names_that_are_not_utf8_are_kept_with_escapes(tmp_path: Path) -> None:
    src = os.fsencode(tmp_path) + b"/d\xe9j\xe0"  # the source folder's name is not UTF-8 either
    os.makedirs(src + b"/sub")
    for name, seed in ((b"caf\xe9.png", 1), (b"sub/caf\xe9.png", 2), (b"ok.png", 3)):
        with open(src + b"/" + name, "wb") as handle:
            handle.write(_png_bytes(_noise(40, 48, seed)))
    with open(src + b"/bad\xff.jpg", "wb") as handle:
        handle.write(b"not a picture")
    out = tmp_path / "out"
    summary = preprocess(os.fsdecode(src), out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    rows = _rows(out / "manifest.csv")  # read as UTF-8: it was written as UTF-8
    assert sorted(r["source"] for r in rows) == ["caf\\xe9.png", "ok.png", "sub/caf\\xe9.png"]
    assert {r["source"]: r["kind"] for r in _rows(out / "rejected.csv")} == {"bad\\xff.jpg": "not an image"}
    for row in rows:
        assert row["name"].isascii() and "\\" not in row["name"]  # e.g. caf_xe9-1a2b3c4d
        assert (out / "train" / "hr" / f"{row['name']}.png").is_file()
    assert "d\\xe9j\\xe0" in str(summary)
    assert json.loads((out / "preprocess.json").read_text())["parameters"]["source"] == os.fsdecode(src)
    assert preprocess(os.fsdecode(src), out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False).already_done


def test_symlink_loops_end_and_are_listed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_pngs(src, ["good.png"])
    _write_pngs(src / "sub", ["x.png"])
    (src / "self").symlink_to(".", target_is_directory=True)  # a folder link to its own folder
    (src / "sub" / "up").symlink_to("..", target_is_directory=True)  # and one to its parent
    (src / "a.png").symlink_to("b.png")  # a -> b -> a
    (src / "b.png").symlink_to("a.png")
    (src / "dangling.png").symlink_to("missing.png")
    out = tmp_path / "out"
    preprocess(src, out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    assert sorted(r["source"] for r in _rows(out / "manifest.csv")) == ["good.png", "sub/x.png"]
    rejected = {row["source"]: row for row in _rows(out / "rejected.csv")}
    assert {k: r["kind"] for k, r in rejected.items()} == {"a.png": "unreadable", "b.png": "unreadable",
                                                            "dangling.png": "unreadable"}
    assert "symbolic links" in rejected["a.png"]["reason"] and "No such file" in rejected["dangling.png"]["reason"]


def test_the_same_pixels_in_another_format_are_a_duplicate(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pixels = _noise(40, 48, 1)
    Image.fromarray(pixels).save(src / "a.bmp")
    Image.fromarray(pixels).save(src / "a.png")
    _write_pngs(src, ["other.png"])
    out = tmp_path / "out"
    summary = preprocess(src, out, hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    assert {r.source: r.reason for r in summary.rejected} == {"a.png": "duplicate of a.bmp (identical pixels)"}
    assert summary.rejected_by_kind == {"duplicate": 1} and summary.n_accepted == 2


def test_cli_empty_zips_are_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as zf:
        zf.writestr("readme.txt", "no pictures here")
    (tmp_path / "zero.zip").write_bytes(b"")
    for name in ("empty.zip", "notes.zip", "zero.zip"):
        out = tmp_path / f"out_{name}"
        assert cli.main(["preprocess", str(tmp_path / name), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("upsampler preprocess: error: ") and err.count("\n") == 1
        assert name in err and not out.exists()


def test_cli_malformed_groups_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_pngs(tmp_path / "src", [f"{i:06d}.png" for i in range(1, 4)])
    bad = tmp_path / "bad.txt"
    bad.write_text("000001.png 12\n000002.png\n000003.png 7\n")
    out = tmp_path / "out"
    assert cli.main(["preprocess", str(tmp_path / "src"), "--out", str(out), "--groups", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and f"{bad}: line 2: expected 'file identity'" in captured.err
    assert captured.out == "" and not out.exists()


# ---- resume ------------------------------------------------------------------------------

def test_second_call_is_a_no_op(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_pngs(tmp_path / "src", [f"{i}.png" for i in range(6)])
    out = tmp_path / "out"
    first = preprocess(tmp_path / "src", out, hr_size=HR, scale=SCALE, progress=False)
    before = _mtimes(out)
    second = preprocess(tmp_path / "src", out, hr_size=HR, scale=SCALE, progress=True)
    assert "already done" in capsys.readouterr().out
    assert second.already_done and not first.already_done
    assert (second.n_train, second.n_test, second.parameters) == (first.n_train, first.n_test, first.parameters)
    assert _mtimes(out) == before


def test_different_parameters_into_the_same_folder_raise(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "src", [f"{i}.png" for i in range(6)])
    out = tmp_path / "out"
    preprocess(tmp_path / "src", out, hr_size=HR, scale=SCALE, progress=False)
    before = _mtimes(out)
    with pytest.raises(ValueError, match="different parameters.*seed.*another output folder"):
        preprocess(tmp_path / "src", out, hr_size=HR, scale=SCALE, seed=1, progress=False)
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        preprocess(tmp_path / "src", unrelated, hr_size=HR, scale=SCALE, progress=False)
    assert _mtimes(out) == before and (unrelated / "keep.txt").read_text() == "mine"


def test_output_inside_the_source_is_not_reprocessed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_pngs(src, [f"{i}.png" for i in range(5)])
    first = preprocess(src, src / "processed", hr_size=HR, scale=SCALE, progress=False)
    (src / "processed" / "preprocess.json").rename(src / "processed" / "saved.json")
    with pytest.raises(ValueError, match="not empty"):  # unfinished-looking folder is refused, not reused
        preprocess(src, src / "processed", hr_size=HR, scale=SCALE, progress=False)
    (src / "processed" / "saved.json").rename(src / "processed" / "preprocess.json")
    os.remove(src / "processed" / "train" / "hr" / "0.png")  # damaged: same parameters -> regenerated
    again = preprocess(src, src / "processed", hr_size=HR, scale=SCALE, progress=False)
    assert not again.already_done and again.n_accepted == first.n_accepted == 5
    assert (src / "processed" / "train" / "hr" / "0.png").exists() or (src / "processed" / "test" / "hr" / "0.png").exists()


# ---- load_split --------------------------------------------------------------------------

def test_load_split_in_manifest_order(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "src", [f"{i}.png" for i in range(10)])
    out = tmp_path / "out"
    preprocess(tmp_path / "src", out, hr_size=HR, scale=SCALE, progress=False)
    lr, hr, names = load_split(out, "train")
    assert lr.shape == (8, HR // SCALE, HR // SCALE, 3) and hr.shape == (8, HR, HR, 3)
    assert lr.dtype == hr.dtype == np.uint8
    assert names == [r["name"] for r in _rows(out / "manifest.csv") if r["split"] == "train"]
    np.testing.assert_array_equal(hr[0], np.asarray(Image.open(out / "train" / "hr" / f"{names[0]}.png")))
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        load_split(tmp_path / "missing_folder", "train")
    preprocess(tmp_path / "src", tmp_path / "all_train", hr_size=HR, scale=SCALE, test_fraction=0.0, progress=False)
    with pytest.raises(ValueError, match="test split of .*all_train is empty"):
        load_split(tmp_path / "all_train", "test")


# ---- tf.data -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    hr[:, 0, 0, 0] = np.arange(10)  # an id in every image
    lr = hr[:, ::4, ::4].copy()
    return lr, hr


def _batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(lr.numpy(), hr.numpy()) for lr, hr in dataset]


def test_dataset_shapes_ranges_and_determinism(arrays) -> None:
    lr, hr = arrays
    batches = _batches(make_train_dataset(lr, hr, batch_size=3, seed=1, epoch=0))
    assert len(batches) == steps_per_epoch(10, 3) == 3
    for lr_b, hr_b in batches:
        assert lr_b.shape == (3, 2, 2, 3) and hr_b.shape == (3, 8, 8, 3)
        assert lr_b.dtype == hr_b.dtype == np.float32
        assert lr_b.min() >= -1.0 and hr_b.max() <= 1.0
    again = _batches(make_train_dataset(lr, hr, batch_size=3, seed=1, epoch=0))
    for (a_lr, a_hr), (b_lr, b_hr) in zip(batches, again):
        np.testing.assert_array_equal(a_lr, b_lr)
        np.testing.assert_array_equal(a_hr, b_hr)
    # the order is exactly epoch_order's, and the values are x / 127.5 - 1
    order, _ = epoch_order(10, seed=1, epoch=0)
    np.testing.assert_array_equal(batches[1][1], hr[order[3:6]].astype(np.float32) / 127.5 - 1.0)
    next_epoch = _batches(make_train_dataset(lr, hr, batch_size=3, seed=1, epoch=1))
    assert not np.array_equal(np.stack([b[1] for b in batches]), np.stack([b[1] for b in next_epoch]))


def test_skip_batches_resumes_mid_epoch(arrays) -> None:
    lr, hr = arrays
    full = _batches(make_train_dataset(lr, hr, batch_size=3, seed=2, epoch=5, flips=True))
    resumed = _batches(make_train_dataset(lr, hr, batch_size=3, seed=2, epoch=5, flips=True, skip_batches=2))
    assert len(resumed) == 1
    np.testing.assert_array_equal(resumed[0][1], full[2][1])
    np.testing.assert_array_equal(resumed[0][0], full[2][0])
    with pytest.raises(ValueError, match="skip_batches"):
        make_train_dataset(lr, hr, batch_size=3, seed=2, epoch=5, skip_batches=4)


def test_flips_are_paired_and_keyed(arrays) -> None:
    lr, hr = arrays
    order, flip = epoch_order(10, seed=0, epoch=3, flips=True)
    assert flip.any() and not flip.all()
    batches = _batches(make_train_dataset(lr, hr, batch_size=5, seed=0, epoch=3, flips=True))
    got_hr = np.concatenate([b[1] for b in batches])
    got_lr = np.concatenate([b[0] for b in batches])
    for position, (index, mirrored) in enumerate(zip(order, flip)):
        want_hr, want_lr = hr[index], lr[index]
        if mirrored:
            want_hr, want_lr = want_hr[:, ::-1], want_lr[:, ::-1]
        np.testing.assert_array_equal(got_hr[position], want_hr.astype(np.float32) / 127.5 - 1.0)
        np.testing.assert_array_equal(got_lr[position], want_lr.astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_array_equal(hr[:, 0, 0, 0], np.arange(10))  # the caller's arrays are untouched


def test_dataset_smaller_than_a_batch_raises(arrays) -> None:
    lr, hr = arrays
    with pytest.raises(ValueError, match="10 images, fewer than one batch of 16"):
        make_train_dataset(lr, hr, batch_size=16, seed=0, epoch=0)


# ---- command line ------------------------------------------------------------------------

def test_cli_missing_and_empty_sources_exit_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_such_folder"
    assert cli.main(["preprocess", str(missing), "--out", str(tmp_path / "out")]) != 0
    assert str(missing) in capsys.readouterr().err
    (tmp_path / "empty_folder").mkdir()
    assert cli.main(["preprocess", str(tmp_path / "empty_folder"), "--out", str(tmp_path / "out")]) != 0
    assert "empty_folder" in capsys.readouterr().err


def test_cli_preprocess_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_pngs(tmp_path / "src", [f"{i}.png" for i in range(5)])
    out = tmp_path / "out"
    argv = ["preprocess", str(tmp_path / "src"), "--out", str(out), "--hr-size", str(HR), "--seed", "2", "--crop", "random"]
    assert cli.main(argv) == 0
    assert "5 accepted (train 4, test 1)" in capsys.readouterr().out
    params = json.loads((out / "preprocess.json").read_text())["parameters"]
    assert params["crop"] == "random" and params["seed"] == 2 and params["hr_size"] == HR
    assert cli.main(argv) == 0 and "already done" in capsys.readouterr().out


# ---- real data ---------------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_faces_limit_40(shared_data: Path, tmp_path: Path) -> None:
    groups = read_groups_csv(shared_data / "meta" / "faces_celeba_identity.csv")
    out = tmp_path / "faces"
    summary = preprocess(shared_data / "faces", out, hr_size=176, scale=4, limit=40, groups=groups, progress=False)
    assert summary.n_accepted == 40 and summary.n_rejected == 0
    manifest = _rows(out / "manifest.csv")
    assert all((row["width"], row["height"]) == ("178", "218") for row in manifest)
    train_ids = {r["group"] for r in manifest if r["split"] == "train"}
    test_ids = {r["group"] for r in manifest if r["split"] == "test"}
    assert test_ids and not train_ids & test_ids
    lr, hr, names = load_split(out, "train")
    assert lr.shape[1:] == (44, 44, 3) and hr.shape[1:] == (176, 176, 3)
    assert len(names) == summary.n_train


def test_random_crops_keep_lr_and_hr_aligned_and_are_keyed(arrays) -> None:
    from upsampler.data.pipeline import make_train_dataset

    lr_big = np.random.default_rng(5).integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    hr_big = np.repeat(np.repeat(lr_big, 4, axis=1), 4, axis=2)  # HR = LR blown up: crops must line up
    batches = _batches(make_train_dataset(lr_big, hr_big, batch_size=5, seed=1, epoch=2, crop=8))
    again = _batches(make_train_dataset(lr_big, hr_big, batch_size=5, seed=1, epoch=2, crop=8))
    other = _batches(make_train_dataset(lr_big, hr_big, batch_size=5, seed=1, epoch=3, crop=8))
    for (lr, hr), (lr2, hr2) in zip(batches, again):
        assert lr.shape == (5, 2, 2, 3) and hr.shape == (5, 8, 8, 3)
        np.testing.assert_array_equal(np.repeat(np.repeat(lr, 4, axis=1), 4, axis=2), hr)
        np.testing.assert_array_equal(lr, lr2)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(batches, other))
    with pytest.raises(ValueError, match="multiple of the scale"):
        make_train_dataset(lr_big, hr_big, batch_size=5, seed=1, epoch=2, crop=6)
