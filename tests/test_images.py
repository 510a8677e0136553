"""upsampler.data.images: decoding policy per Pillow mode, error messages, ranges, crops, bicubic."""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from upsampler.data.images import (
    MAX_IMAGE_PIXELS,
    ImageDecodeError,
    bicubic_downscale,
    bicubic_upscale,
    center_crop,
    load_rgb,
    random_crop,
    read_header,
    readable_name,
    save_png,
    to_float,
    to_uint8,
)


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# ---- conversions -------------------------------------------------------------------------

def test_rgb_png_is_returned_unchanged(tmp_path: Path) -> None:
    pixels = _noise(7, 5)
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels).save(path)
    out = load_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, pixels)


def test_rgba_is_composited_on_white() -> None:
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    out = load_rgb(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    # opaque red stays red, transparent becomes white, half-transparent black is mid grey
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 2], [127, 127, 127])  # round(255 * 127 / 255)


def test_la_is_composited_on_white() -> None:
    la = Image.new("LA", (3, 2), (40, 0))  # fully transparent dark grey
    out = load_rgb(_encode(la, "PNG"))
    assert out.shape == (2, 3, 3)
    assert (out == 255).all()
    opaque = load_rgb(_encode(Image.new("LA", (1, 1), (40, 255)), "PNG"))
    np.testing.assert_array_equal(opaque[0, 0], [40, 40, 40])


def test_palette_with_transparency_goes_through_rgba() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    data = _encode(img, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = load_rgb(data)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # the transparent entry -> white
    np.testing.assert_array_equal(out[0, 1], [0, 0, 255])


def test_greyscale_is_replicated() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = load_rgb(_encode(Image.fromarray(grey, "L"), "PNG"))
    assert out.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


def test_one_bit_is_black_and_white() -> None:
    img = Image.new("1", (2, 1))
    img.putpixel((1, 0), 1)
    out = load_rgb(_encode(img, "PNG"))
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [255, 255, 255]])


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32896, 65535, 128]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = load_rgb(data)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255, 0])
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = _encode(Image.new("CMYK", (8, 8), (0, 255, 0, 0)), "JPEG", quality=95)  # pure magenta ink
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = load_rgb(data)
    assert out.shape == (8, 8, 3)
    r, g, b = out[4, 4].astype(int)
    assert r > 240 and g < 15 and b > 240


def test_ycbcr_becomes_rgb() -> None:
    out = load_rgb(_encode(Image.new("RGB", (4, 4), (10, 200, 30)).convert("YCbCr"), "TIFF"))
    assert out.shape == (4, 4, 3)
    assert np.abs(out[0, 0].astype(int) - [10, 200, 30]).max() <= 3


def test_exif_orientation_is_applied() -> None:
    pixels = _noise(30, 20)  # stored 20 wide, 30 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)
    out = load_rgb(data)
    assert out.shape == (20, 30, 3)  # displayed 30 wide, 20 high


# ---- errors ------------------------------------------------------------------------------

def test_truncated_jpeg_names_the_file(tmp_path: Path) -> None:
    data = _encode(Image.fromarray(_noise(64, 64)), "JPEG")
    path = tmp_path / "cut_short.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut_short.jpg.*truncated") as info:
        load_rgb(path)
    assert info.value.kind == "truncated"
    assert isinstance(info.value, ValueError)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageDecodeError, match="notes.jpg.*not an image") as info:
        load_rgb(path)
    assert info.value.kind == "not an image"


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.png: empty file"):
        load_rgb(path)


def test_bytes_use_the_given_name() -> None:
    with pytest.raises(ImageDecodeError, match="^archive.zip:member.png: empty file$"):
        load_rgb(b"", name="archive.zip:member.png")


def test_missing_path_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "nowhere.png")


# ---- hostile files ----------------------------------------------------------------------

@pytest.mark.parametrize("side", [20000, 12000])  # over Pillow's own refusal; over ours only (Pillow just warns)
def test_a_decompression_bomb_is_refused_from_its_header(side, png_header_only, monkeypatch) -> None:
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    data = png_header_only(side, side)
    assert len(data) < 100 and side * side > MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not decide
        with pytest.raises(ImageDecodeError, match="bomb.png: too large") as info:
            load_rgb(data, name="bomb.png")
    assert info.value.kind == "too large"
    assert decoded == []  # never decoded: memory stays at the size of the header
    if side == 12000:
        assert "12000x12000 = 144,000,000 pixels, over the limit of 89,478,485" in str(info.value)


def test_the_pixel_limit_can_be_lowered_and_lifted(png_header_only) -> None:
    small = _encode(Image.fromarray(_noise(20, 30)), "PNG")
    with pytest.raises(ImageDecodeError, match="30x20 = 600 pixels, over the limit of 599"):
        load_rgb(small, max_pixels=599)
    assert load_rgb(small, max_pixels=None).shape == (20, 30, 3)
    header = read_header(png_header_only(12000, 9000))
    assert (header.width, header.height, header.pixels, header.frames) == (12000, 9000, 108_000_000, 1)


def test_palette_with_alpha_per_entry_is_composited_without_warnings() -> None:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * (253 * 3))
    for index in range(3):
        img.putpixel((index, 0), index)
    data = _encode(img, "PNG", transparency=bytes([0, 128, 255]))  # a tRNS alpha per palette entry
    assert isinstance(Image.open(io.BytesIO(data)).info["transparency"], bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = load_rgb(data)
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [127, 127, 255], [0, 255, 0]])


def test_multi_frame_files_give_their_first_frame_and_say_how_many() -> None:
    frames = [Image.new("RGB", (8, 6), colour) for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    for fmt in ("GIF", "TIFF"):
        data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
        assert read_header(data).frames == 3
        first = load_rgb(data)
        assert first.shape == (6, 8, 3) and tuple(first[0, 0]) == (200, 0, 0)
    assert read_header(_encode(frames[1], "GIF")).frames == 1


def test_special_files_and_symlink_loops_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "a.png").symlink_to("b.png")
    (tmp_path / "b.png").symlink_to("a.png")
    with pytest.raises(ImageDecodeError, match="a.png: unreadable.*symbolic links"):
        load_rgb(tmp_path / "a.png")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # reading it would block until some writer comes
    # A writer that opens and closes at once: were the FIFO read, the test would fail ("empty file"), not hang.
    writer = threading.Thread(target=lambda: os.close(os.open(fifo, os.O_WRONLY)), daemon=True)
    writer.start()
    with pytest.raises(ImageDecodeError, match="pipe.png: unreadable \\(not a regular file\\)"):
        load_rgb(fifo)
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
    writer.join(5)


def test_readable_name_escapes_bytes_that_are_not_utf8() -> None:
    assert readable_name(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"
    assert readable_name("caf\u00e9.png") == "caf\u00e9.png"  # valid UTF-8 is kept as is
    assert readable_name("two\nlines.png") == "two\\x0alines.png"
    assert readable_name(os.fsdecode(b"caf\xe9.png")).encode("utf-8")


# ---- ranges ------------------------------------------------------------------------------

def test_float_round_trip_is_exact_on_all_levels() -> None:
    levels = np.arange(256, dtype=np.uint8)
    as_float = to_float(levels)
    assert as_float.dtype == np.float32
    assert as_float.min() == -1.0 and as_float.max() == 1.0
    np.testing.assert_array_equal(to_uint8(as_float), levels)


def test_to_uint8_saturates_and_handles_nan() -> None:
    out = to_uint8(np.array([-3.0, 2.0, np.nan, 0.0], dtype=np.float32))
    np.testing.assert_array_equal(out, [0, 255, 0, 128])  # round(127.5) = 128 (half to even)


def test_save_png_round_trip_and_refuses_floats(tmp_path: Path) -> None:
    pixels = _noise(5, 6)
    path = save_png(pixels, tmp_path / "sub" / "x.png")
    np.testing.assert_array_equal(load_rgb(path), pixels)
    with pytest.raises(ValueError, match="to_uint8"):
        save_png(pixels.astype(np.float32), tmp_path / "y.png")


# ---- crops and bicubic -------------------------------------------------------------------

def test_center_crop_position() -> None:
    img = np.arange(10 * 7).reshape(10, 7)
    crop = center_crop(img, 4)
    np.testing.assert_array_equal(crop, img[3:7, 1:5])
    assert center_crop(img, (2, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match="smaller"):
        center_crop(img, 8)


def test_random_crop_is_seeded_and_inside() -> None:
    img = _noise(40, 30)
    a = random_crop(img, 16, np.random.default_rng(5))
    b = random_crop(img, 16, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 16, 3)
    tops = {random_crop(np.arange(40)[:, None].repeat(30, 1), 16, np.random.default_rng(s))[0, 0] for s in range(30)}
    assert len(tops) > 1 and min(tops) >= 0 and max(tops) <= 24


def test_bicubic_shapes_and_pillow_equivalence() -> None:
    hr = _noise(32, 24)
    lr = bicubic_downscale(hr, 4)
    assert lr.shape == (8, 6, 3) and lr.dtype == np.uint8
    expected = np.asarray(Image.fromarray(hr).resize((6, 8), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(lr, expected)
    up = bicubic_upscale(lr, 4)
    assert up.shape == (32, 24, 3)
    batch = bicubic_upscale(np.stack([lr, lr]), 4)
    assert batch.shape == (2, 32, 24, 3)
    np.testing.assert_array_equal(batch[1], up)


def test_bicubic_downscale_is_antialiased() -> None:
    # A one-pixel checkerboard averages to mid-grey when antialiased; point sampling would not.
    board = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
    lr = bicubic_downscale(board, 4)
    assert np.abs(lr.astype(int) - 128).max() <= 2
