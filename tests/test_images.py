"""upsampler.images: decoding policy per Pillow mode, error messages, ranges, crops, bicubic."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upsampler.images import (
    ImageDecodeError,
    bicubic_downscale,
    bicubic_upscale,
    center_crop,
    load_rgb,
    random_crop,
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
