"""``sr-bench``: PSNR/SSIM of bicubic or a generator on a folder of HR images (Set5, Set14, ...).

Protocol (the SRGAN paper's, and SOURCES.md's recipe): each HR image is mod-cropped to a
multiple of the scale; its LR version is MATLAB-style bicubic downsampling (:func:`imresize`,
antialiased) rounded to uint8; the method upscales the LR image; PSNR and SSIM are computed
on Y (raw gray for single-channel images) after shaving ``scale`` pixels
(:func:`upsampler.metrics.sr.sr_metrics`).

Methods: ``"bicubic"`` (MATLAB-style bicubic upscaling) or the path of a saved Keras generator
(LR in [-1, 1] -> SR in [-1, 1]; ``x / 127.5 - 1`` in, ``(y + 1) * 127.5`` out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from upsampler.metrics.sr import imresize, mod_crop, sr_metrics, round_to_uint8

__all__ = [
    "IMAGE_EXTENSIONS",
    "SRBenchResult",
    "list_images",
    "read_image",
    "bicubic_sr",
    "generator_upscaler",
    "make_upscaler",
    "run_sr_bench",
]

from upsampler.data.images import IMAGE_EXTENSIONS

Upscaler = Callable[[np.ndarray], np.ndarray]  # LR uint8 (h, w[, 3]) -> SR uint8 (h*s, w*s[, 3])


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name. Raises if none or no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def read_image(path: str | Path, mode: str | None = None) -> np.ndarray:
    """Decode an image to uint8: (H, W, 3) for colour, (H, W) for single-channel.

    ``mode=None`` keeps gray images gray (L / I;16 etc. become 8-bit L; the SR benchmarks'
    MATLAB convention scores a single-channel image on its raw values) and converts the rest
    to RGB; ``mode="RGB"`` is :func:`upsampler.data.images.load_rgb`, the reader used everywhere else.
    """
    if mode == "RGB":
        from upsampler.data.images import load_rgb

        return load_rgb(path)
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            if mode is None:
                im = im.convert("L") if im.mode in ("L", "LA", "I", "I;16", "1") else im.convert("RGB")
            else:
                im = im.convert(mode)
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot decode image ({exc})") from exc


def bicubic_sr(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style bicubic upscaling by an integer ``scale``; uint8 in, uint8 out."""
    return imresize(lr, float(scale))


def generator_upscaler(model: Any) -> Upscaler:
    """Wrap a Keras generator (LR [-1, 1] -> SR [-1, 1]) as a uint8 -> uint8 upscaler.

    Single-channel LR images are fed as gray RGB; the SR output is reduced back to one
    channel with ITU-R BT.601 luma weights (0.299, 0.587, 0.114), so they are scored on gray
    values like the bicubic baseline.
    """

    def upscale(lr: np.ndarray) -> np.ndarray:
        gray = lr.ndim == 2
        x = np.repeat(lr[..., None], 3, axis=-1) if gray else lr
        x = x[None].astype(np.float32) / 127.5 - 1.0
        y = np.asarray(model.predict_on_batch(x))[0].astype(np.float64)
        sr = (y + 1.0) * 127.5
        if gray:
            sr = sr @ np.array([0.299, 0.587, 0.114])
        return round_to_uint8(sr)

    return upscale


def make_upscaler(method: str | Any, scale: int) -> tuple[str, Upscaler]:
    """(display name, upscaler) for ``"bicubic"``, a generator path, or a Keras model."""
    if isinstance(method, str) and method.lower() == "bicubic":
        return "bicubic", lambda lr: bicubic_sr(lr, scale)
    if isinstance(method, (str, Path)):
        from upsampler.archs.srgan import load_generator

        return str(method), generator_upscaler(load_generator(method))
    return getattr(method, "name", "model"), generator_upscaler(method)


@dataclass
class SRBenchResult:
    """Per-image and mean PSNR (dB) / SSIM of one method on one folder."""

    method: str
    scale: int
    per_image: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.per_image)

    @property
    def psnr(self) -> float:
        return float(np.mean([r["psnr"] for r in self.per_image]))

    @property
    def ssim(self) -> float:
        return float(np.mean([r["ssim"] for r in self.per_image]))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "scale": self.scale, "n": self.n, "psnr": self.psnr, "ssim": self.ssim,
                "per_image": [dict(r) for r in self.per_image]}

    def table(self) -> str:
        """A plain-text table, one row per image and the mean."""
        width = max([len("mean")] + [len(r["image"]) for r in self.per_image])
        lines = [f"method: {self.method}   scale: x{self.scale}   (Y channel, {self.scale}-px border shaved)",
                 f"{'image':<{width}}  {'size':>9}  {'PSNR (dB)':>9}  {'SSIM':>6}"]
        for r in self.per_image:
            lines.append(f"{r['image']:<{width}}  {r['width']:>4}x{r['height']:<4}  {r['psnr']:9.2f}  {r['ssim']:6.4f}")
        lines.append(f"{'mean':<{width}}  {'':>9}  {self.psnr:9.2f}  {self.ssim:6.4f}")
        return "\n".join(lines)


def run_sr_bench(folder: str | Path, method: str | Any = "bicubic", scale: int = 4) -> SRBenchResult:
    """Score ``method`` on every image of ``folder`` (see the module docstring for the protocol)."""
    if scale < 2:
        raise ValueError(f"scale must be >= 2, got {scale}")
    files = list_images(folder)
    name, upscale = make_upscaler(method, scale)
    result = SRBenchResult(method=name, scale=scale)
    for path in files:
        hr = mod_crop(read_image(path), scale)
        lr = imresize(hr, 1.0 / scale)
        sr = upscale(lr)
        if sr.shape != hr.shape:
            raise ValueError(f"{path.name}: {name} produced shape {sr.shape}, expected {hr.shape}")
        p, s = sr_metrics(sr, hr, scale)
        result.per_image.append({"image": path.name, "width": hr.shape[1], "height": hr.shape[0],
                                 "psnr": p, "ssim": s})
    return result

