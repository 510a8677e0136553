"""Robust image decoding, pixel-range helpers, crops and the bicubic baseline.

Pure Pillow + NumPy (no TensorFlow), so that preprocessing and the metric commands start fast.

Conventions used across the project:

* an *image* is a NumPy ``uint8`` array of shape ``(H, W, 3)`` (RGB, values 0..255);
* the networks see ``float32`` in ``[-1, 1]``: :func:`to_float` maps 0..255 to [-1, 1] and
  :func:`to_uint8` maps back (rounded, clipped). The pair round-trips all 256 values exactly;
* "bicubic" means Pillow's ``Image.resize(..., BICUBIC)``, which is antialiased when it
  downscales (its kernel is widened by the scale factor), as in the original study.
  :func:`bicubic_downscale` makes the LR inputs and :func:`bicubic_upscale` is the "real
  bicubic" baseline every model is compared against.

Colour policy of :func:`load_rgb` (one rule per Pillow mode):

=====================  ===============================================================
mode                   conversion to 8-bit RGB
=====================  ===============================================================
RGB                    as is
RGBA, LA, PA, RGBa, La alpha-composited onto a **white** background, rounded
P (palette)            through RGBA (then onto white) when it has a transparency entry,
                       else Pillow's palette lookup
L, 1                   grey replicated to the three channels (1-bit: 0 or 255)
I;16*, I               16-bit grey scaled to 8 bit as ``round(v / 257)`` (65535 -> 255,
                       32896 -> 128); ``I`` (32-bit) is clipped to 0..65535 first
F                      float grey, taken as 0..255, rounded and clipped
CMYK, YCbCr, others    Pillow's ``convert("RGB")`` (Adobe-inverted CMYK JPEGs are handled
                       by Pillow's JPEG reader)
=====================  ===============================================================

EXIF orientation is applied first (``ImageOps.exif_transpose``), so a portrait photo stored
sideways comes out upright. ICC profiles are ignored (pixels are taken as sRGB). Multi-frame
files (GIF, TIFF) give their first frame; :func:`read_header` counts the frames so that a
caller can refuse them or say so. Pillow's warnings (oversized images, malformed EXIF, palette
transparency) are silenced while decoding: each is either checked here or handled by the policy
above, and a caller running with warnings as errors must not see them turn into rejections.

Hostile files: an image declaring more than ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`)
is refused from its header, before any pixel is decoded, and a path larger than
:data:`MAX_FILE_BYTES` or that is not a regular file (a FIFO, a device) is refused before it is
read. Pillow's own guard refuses more than ``2 * Image.MAX_IMAGE_PIXELS`` (179 MP) whatever
``max_pixels`` says. Known limit: Pillow itself reads 16-bit-per-channel
*colour* PNGs as 8-bit RGB by keeping the high byte (``v // 256``), which differs from
``round(v / 257)`` by at most one level; only 16-bit *grey* PNGs reach us at full depth.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PathOrBytes = Union[str, os.PathLike, bytes, bytearray, memoryview]

#: File extensions (lower case) read as images everywhere: preprocess, upscale, the benchmarks.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}

#: Largest image :func:`load_rgb` decodes by default, width x height in pixels: Pillow's own
#: warning threshold (about 0.25 GiB as RGBA). Checked on the header, before decoding.
MAX_IMAGE_PIXELS = 89_478_485
#: Largest file :func:`load_rgb` reads from a path (``preprocess`` applies it to every source file).
MAX_FILE_BYTES = 256 * 2**20


class ImageDecodeError(ValueError):
    """A file that cannot be turned into an RGB image.

    ``str(error)`` is ``"<name>: <reason>"``. ``kind`` is a short category used to group
    rejections in summaries: ``"empty file"``, ``"not an image"``, ``"truncated"``,
    ``"corrupt"``, ``"too large"`` (pixels or bytes over a limit), ``"unsupported mode"`` or
    ``"unreadable"`` (also: not a regular file, a symlink loop); ``reason``
    is the category plus detail, e.g. ``"truncated (image file is truncated ...)"``.
    """

    def __init__(self, name: str, kind: str, detail: str | None = None) -> None:
        self.name = name
        self.kind = kind
        self.reason = f"{kind} ({detail})" if detail else kind
        super().__init__(f"{name}: {self.reason}")


def readable_name(name: str) -> str:
    """``name`` safe to print and to write as UTF-8: bytes that are not UTF-8 (a Linux file name
    such as ``b"caf\\xe9.png"``, which Python holds as a lone surrogate) and control characters
    become ``\\xNN`` escapes (``caf\\xe9.png``); any other name is returned unchanged."""
    try:
        text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text)


# ---- decoding --------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageHeader:
    """What an image file declares, read without decoding its pixels."""

    width: int
    height: int
    mode: str  # Pillow mode of the file, e.g. "RGB", "P", "I;16"
    format: str  # Pillow format name, e.g. "PNG", "GIF"
    frames: int  # 1 for a still image; more for an animation or a multi-page file

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(path_or_bytes: PathOrBytes, name: str | None = None) -> ImageHeader:
    """Size, mode, format and frame count of an image file (a path, or its bytes), not decoded.

    Raises:
        ImageDecodeError: as :func:`load_rgb`, for what can be told from the header
            (an empty or unreadable file, not an image, beyond Pillow's size guard).
        FileNotFoundError: the path does not exist.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        label = name if name is not None else "<bytes>"
        data = bytes(path_or_bytes)
        if not data:
            raise ImageDecodeError(label, "empty file")
        return _header_of(io.BytesIO(data), label)
    path = Path(path_or_bytes)
    label = name if name is not None else readable_name(str(path))
    if _checked_file_size(path, label) == 0:
        raise ImageDecodeError(label, "empty file")
    with path.open("rb") as handle:
        return _header_of(handle, label)


def _header_of(handle: IO[bytes], label: str) -> ImageHeader:
    with _quiet_pillow(), _open(handle, label) as img:
        try:
            frames = int(getattr(img, "n_frames", 1))
        except Exception as exc:  # a damaged frame table
            raise ImageDecodeError(label, "corrupt", f"cannot count frames: {first_line(exc)}") from exc
        return ImageHeader(img.width, img.height, img.mode, img.format or "", frames)


def load_rgb(
    path_or_bytes: PathOrBytes, name: str | None = None, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Decode an image file (a path, or its bytes) to an ``(H, W, 3)`` ``uint8`` RGB array.

    ``name`` labels the file in error messages (default: the path, or ``"<bytes>"``).
    EXIF orientation is applied and every Pillow mode is converted by the policy in the
    module docstring. The whole file is decoded (``Image.load``), so truncated files fail
    here instead of producing grey bands later. An image of more than ``max_pixels`` pixels
    (None: no limit of ours) is refused from its header, before decoding.

    Raises:
        ImageDecodeError: (a ``ValueError``) empty file, not an image, truncated or
            corrupt data, an unsupported mode, or too large (over ``max_pixels``, a
            decompression bomb, a file over :data:`MAX_FILE_BYTES`); the message names
            the file and the reason.
        FileNotFoundError: the path does not exist.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        label = name if name is not None else "<bytes>"
    else:
        path = Path(path_or_bytes)
        label = name if name is not None else readable_name(str(path))
        _checked_file_size(path, label)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:  # permissions, an I/O error
            raise ImageDecodeError(label, "unreadable", exc.strerror or str(exc)) from exc
    return _decode_bytes(data, label, max_pixels)


def _checked_file_size(path: Path, label: str) -> int:
    """The size of ``path``; ImageDecodeError unless it is a regular file of at most MAX_FILE_BYTES."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():  # a link to nowhere: the link exists, so say what is wrong with it
            raise ImageDecodeError(label, "unreadable", "broken symbolic link") from None
        raise
    except OSError as exc:  # a symlink loop (a -> b -> a), permissions
        raise ImageDecodeError(label, "unreadable", exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(info.st_mode):  # a directory; a FIFO or a device would block or never end
        raise ImageDecodeError(label, "unreadable", "not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageDecodeError(label, "too large", f"file of {info.st_size:,} bytes, over the limit of {MAX_FILE_BYTES:,}")
    return info.st_size


@contextlib.contextmanager
def _quiet_pillow() -> Iterator[None]:
    # Pillow's warnings are about sizes checked here, EXIF that is skipped, palette transparency
    # that the policy handles; under a caller's "warnings as errors" they must not reject a file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _open(handle: IO[bytes], label: str) -> Image.Image:
    """``Image.open`` (header only) with its errors turned into ImageDecodeError."""
    try:
        return Image.open(handle)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(label, "not an image", "unrecognised file format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(label, "too large", str(exc)) from exc
    except Exception as exc:  # Pillow plugins raise SyntaxError/OSError/... on bad headers
        raise ImageDecodeError(label, "corrupt", first_line(exc)) from exc


def _decode_bytes(data: bytes, label: str, max_pixels: int | None) -> np.ndarray:
    if len(data) == 0:
        raise ImageDecodeError(label, "empty file")
    with _quiet_pillow():
        img = _open(io.BytesIO(data), label)
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageDecodeError(label, "too large",
                                   f"{width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}")
        try:
            img.load()
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(label, "too large", str(exc)) from exc
        except Exception as exc:  # OSError "image file is truncated", SyntaxError "broken PNG", ...
            message = first_line(exc)
            kind = "truncated" if "truncat" in message.lower() else "corrupt"
            raise ImageDecodeError(label, kind, message) from exc
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # unreadable EXIF block: keep the pixels as stored
            pass
        try:
            return _to_rgb_array(img)
        except Exception as exc:
            raise ImageDecodeError(label, "unsupported mode", f"{img.mode}: {first_line(exc)}") from exc


def first_line(exc: BaseException, limit: int | None = 200) -> str:
    """The first line of an exception's message (its type name when empty), cut to ``limit``."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        arr = np.asarray(img, dtype=np.uint8)
    elif mode == "P" and "transparency" in img.info:
        arr = _composite_on_white(np.asarray(img.convert("RGBA"), dtype=np.uint8))
    elif mode in _ALPHA_MODES:
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        arr = _composite_on_white(np.asarray(rgba, dtype=np.uint8))
    elif mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)
        values = np.clip(values, 0, 65535)
        grey = ((2 * values + 257) // 514).astype(np.uint8)  # round(v / 257), exact in integers
        arr = np.repeat(grey[..., None], 3, axis=-1)
    elif mode == "F":
        grey = np.clip(np.round(np.nan_to_num(np.asarray(img, dtype=np.float64))), 0, 255).astype(np.uint8)
        arr = np.repeat(grey[..., None], 3, axis=-1)
    else:  # L, 1, P without transparency, CMYK, YCbCr, LAB, HSV, ...
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"conversion gave shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """``round(rgb * a/255 + 255 * (1 - a/255))`` per channel, in integers."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


GREY_MODES = ("1", "L", "LA", "La", "I", "F")  # and every "I;16..." mode: the file holds one grey channel


def is_grey_mode(mode: str) -> bool:
    return mode in GREY_MODES or mode.startswith("I;16")


def load_alpha(path: str | os.PathLike) -> np.ndarray | None:
    """The ``(H, W)`` uint8 alpha channel of an image file with transparency (an alpha mode, or a
    palette or grey image with a transparent colour), oriented as :func:`load_rgb` orients the
    pixels; None for an opaque image. Call after :func:`load_rgb` has accepted the file."""
    path = Path(path)
    with _quiet_pillow(), Image.open(path) as img:
        if img.mode not in _ALPHA_MODES and "transparency" not in img.info:
            return None
        img = ImageOps.exif_transpose(img)
        return np.asarray(img.convert("RGBA").getchannel("A"), np.uint8)


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a ``uint8`` image (``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA, ``(H, W)`` grey or
    ``(H, W, 2)`` grey + alpha) as a PNG; returns the path.

    Parent folders are created. Float arrays are refused: convert with :func:`to_uint8`
    first so that the [-1, 1] -> 0..255 mapping is explicit.
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"save_png expects uint8 pixels, got {arr.dtype} (use to_uint8 for [-1, 1] floats)")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4))):
        raise ValueError(f"save_png expects (H, W), (H, W, 2), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha: Pillow's LA from its two bands
        image = Image.merge("LA", [Image.fromarray(np.ascontiguousarray(arr[..., k])) for k in (0, 1)])
    else:
        image = Image.fromarray(np.ascontiguousarray(arr))
    image.save(path, format="PNG")
    return path


SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def save_image(array: np.ndarray, path: str | os.PathLike, *, quality: int = 95) -> Path:
    """Write a ``uint8`` image in the format its suffix names (:data:`SAVE_FORMATS`); PNG is
    lossless, JPEG and WebP use ``quality`` (1-100). JPEG has no alpha: an image with one is
    refused (the caller chooses PNG instead). Returns the path."""
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image format {path.suffix!r}; use one of {', '.join(SAVE_FORMATS)}")
    if fmt == "PNG":
        return save_png(array, path)
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"save_image expects uint8 pixels, got {arr.dtype}")
    if fmt == "JPEG" and arr.ndim == 3 and arr.shape[-1] in (2, 4):
        raise ValueError(f"{path}: JPEG cannot hold an alpha channel; save it as PNG or WebP")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 2:  # WebP has no grey + alpha: store it as RGBA
        arr = np.dstack([arr[..., 0]] * 3 + [arr[..., 1]])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format=fmt, quality=int(quality))
    return path


def resize_to(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """A ``uint8`` image (grey, grey + alpha, RGB or RGBA) resized with Lanczos, every channel alike."""
    arr = np.asarray(array)
    if arr.shape[1] == width and arr.shape[0] == height:
        return arr
    if arr.ndim == 3 and arr.shape[-1] == 2:
        return np.dstack([resize_to(arr[..., k], width, height) for k in (0, 1)])
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((width, height), Image.Resampling.LANCZOS), np.uint8)


# ---- pixel ranges ----------------------------------------------------------------------

def to_float(image: np.ndarray) -> np.ndarray:
    """``uint8`` 0..255 -> ``float32`` in [-1, 1], as ``x / 127.5 - 1`` (0 -> -1, 255 -> 1)."""
    return (np.asarray(image, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float in [-1, 1] -> ``uint8`` 0..255, as ``round((x + 1) * 127.5)`` clipped to 0..255.

    Values outside [-1, 1] saturate; NaN maps to 0. Inverse of :func:`to_float` on all 256
    levels.
    """
    scaled = (np.asarray(image, dtype=np.float32) + np.float32(1.0)) * np.float32(127.5)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


# ---- crops -----------------------------------------------------------------------------

def _crop_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (tuple, list)):
        height, width = int(size[0]), int(size[1])
    else:
        height = width = int(size)
    if height < 1 or width < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    return height, width


def _check_fits(img: np.ndarray, height: int, width: int) -> None:
    if img.shape[0] < height or img.shape[1] < width:
        raise ValueError(f"image of {img.shape[1]}x{img.shape[0]} (WxH) is smaller than the {width}x{height} crop")


def center_crop(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The central ``size`` x ``size`` (or ``(height, width)``) window of an ``(H, W, ...)`` image.

    The window starts at ``((H - h) // 2, (W - w) // 2)``: with an odd margin the extra
    pixel is left at the bottom/right. Raises ``ValueError`` when the image is smaller.
    """
    height, width = _crop_size(size)
    _check_fits(img, height, width)
    top = (img.shape[0] - height) // 2
    left = (img.shape[1] - width) // 2
    return img[top : top + height, left : left + width]


def random_crop(img: np.ndarray, size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed ``size`` window of an ``(H, W, ...)`` image, drawn from ``rng``.

    Takes exactly two ``rng.integers`` draws (top, then left), so a seeded generator gives
    a reproducible crop. Raises ``ValueError`` when the image is smaller than the window.
    """
    height, width = _crop_size(size)
    _check_fits(img, height, width)
    top = int(rng.integers(0, img.shape[0] - height + 1))
    left = int(rng.integers(0, img.shape[1] - width + 1))
    return img[top : top + height, left : left + width]


# ---- bicubic ---------------------------------------------------------------------------

def _resize_uint8(img: np.ndarray, size_for: Callable[[int, int], tuple[int, int]], what: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"{what} expects uint8 pixels, got {arr.dtype}")
    if arr.ndim == 4:  # a batch (N, H, W, C)
        return np.stack([_resize_uint8(one, size_for, what) for one in arr])
    if arr.ndim not in (2, 3):
        raise ValueError(f"{what} expects (H, W), (H, W, C) or (N, H, W, C), got shape {arr.shape}")
    height, width = arr.shape[:2]
    new_width, new_height = size_for(width, height)
    if new_width < 1 or new_height < 1:
        raise ValueError(f"{what}: {width}x{height} is too small for this scale")
    squeeze = arr.ndim == 3 and arr.shape[-1] == 1
    pil = Image.fromarray(np.ascontiguousarray(arr[..., 0] if squeeze else arr))
    out = np.asarray(pil.resize((new_width, new_height), Image.Resampling.BICUBIC), dtype=np.uint8)
    return out[..., None] if squeeze else out


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """Downscale a ``uint8`` image by ``scale`` with Pillow's antialiased bicubic.

    The output is ``(H // scale, W // scale)``; accepts ``(H, W)``, ``(H, W, C)`` or a
    batch ``(N, H, W, C)``. This is how every LR input of the project is made.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    return _resize_uint8(hr, lambda w, h: (w // scale, h // scale), "bicubic_downscale")


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """Upscale a ``uint8`` image by ``scale`` with Pillow's bicubic: the "real bicubic" baseline.

    The output is ``(H * scale, W * scale)``; accepts ``(H, W)``, ``(H, W, C)`` or a batch.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    return _resize_uint8(lr, lambda w, h: (w * scale, h * scale), "bicubic_upscale")
