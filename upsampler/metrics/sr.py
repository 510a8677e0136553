"""PSNR and SSIM the way the super-resolution literature reports them, and MATLAB's ``imresize``.

NumPy/SciPy only (no TensorFlow). Conventions, as in the SRGAN paper's tables and most SR
code since SRCNN:

* images are compared as uint8 (values 0..255); colour images on the luma channel **Y** of
  ITU-R BT.601 with MATLAB ``rgb2ycbcr`` coefficients (Y in [16, 235]); single-channel images
  on their raw gray values (MATLAB only converts 3-channel images);
* a border of ``scale`` pixels is shaved from each side before scoring;
* PSNR with peak 255; SSIM with Wang et al.'s Gaussian window (11x11, sigma 1.5, K1 0.01,
  K2 0.03, 'valid' filtering), averaged over the SSIM map;
* the bicubic baseline and the LR images use :func:`imresize`, a NumPy re-implementation of
  MATLAB's ``imresize(img, scale, 'bicubic')`` (Keys cubic with a = -0.5, antialiased when
  downscaling, symmetric padding).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = [
    "rgb_to_y",
    "round_to_uint8",
    "shave",
    "mod_crop",
    "psnr",
    "ssim",
    "imresize",
    "sr_metrics",
]

# MATLAB rgb2ycbcr, Y row, for R, G, B in [0, 1]; result in 0..255 units.
_Y_COEFFS = np.array([65.481, 128.553, 24.966]) / 255.0
_Y_OFFSET = 16.0


def round_to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and clip to uint8 (0..255). uint8 input is returned unchanged.

    Float input is taken to be in 0..255 units (not [0, 1] or [-1, 1]).
    """
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    if not np.all(np.isfinite(img)):
        raise ValueError("image contains NaN or Inf")
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Luma Y of an image, float64 in 0..255 units (MATLAB ``rgb2ycbcr`` convention).

    ``img``: (H, W, 3) RGB with values 0..255 (uint8 or float) -> Y = 16 + (65.481 R +
    128.553 G + 24.966 B) / 255 with R, G, B in [0, 1], so Y lies in [16, 235].
    A single-channel image, (H, W) or (H, W, 1), is returned as its raw gray values (float64),
    *not* squeezed into [16, 235]: MATLAB-based SR evaluation only converts 3-channel images.
    """
    img = np.asarray(img)
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim == 3 and img.shape[-1] == 1:
        return img[..., 0].astype(np.float64)
    if img.ndim == 3 and img.shape[-1] == 3:
        rgb = img.astype(np.float64) / 255.0
        return _Y_OFFSET + rgb @ (_Y_COEFFS * 255.0)
    raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {img.shape}")


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from each side of the two spatial axes (a view, not a copy)."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return img
    h, w = img.shape[:2]
    if 2 * border >= min(h, w):
        raise ValueError(f"cannot shave {border} px from a {h}x{w} image")
    return img[border:-border, border:-border, ...]


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right edges so that height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    hh, ww = h - h % scale, w - w % scale
    if hh == 0 or ww == 0:
        raise ValueError(f"image of {h}x{w} px is smaller than the scale {scale}")
    return img[:hh, :ww, ...]


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("image contains NaN or Inf")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE).

    Computed in float64 over all elements; ``inf`` for identical images.
    """
    a, b = _check_pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-(x**2) / (2.0 * sigma**2))
    return w / w.sum()


def _filter_valid(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation with the symmetric 1-D window ``w``, 'valid' region only."""
    from numpy.lib.stride_tricks import sliding_window_view

    rows = sliding_window_view(img, w.size, axis=0) @ w
    return sliding_window_view(rows, w.size, axis=1) @ w


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float = 255.0,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity (Wang et al. 2004, their MATLAB ``ssim_index``), in [-1, 1].

    Gaussian window ``window_size`` x ``window_size`` with standard deviation ``sigma`` px,
    population (biased) local variances, constants C1 = (k1 L)^2, C2 = (k2 L)^2 with
    L = ``data_range``; only the 'valid' part of the SSIM map (windows fully inside the image)
    is averaged. 2-D images directly; (H, W, C) images: the mean over channels.
    Equal to ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)``.
    """
    a, b = _check_pair(a, b)
    if a.ndim == 3:
        return float(np.mean([ssim(a[..., c], b[..., c], data_range, window_size=window_size,
                                   sigma=sigma, k1=k1, k2=k2) for c in range(a.shape[-1])]))
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D or (H, W, C) image, got shape {a.shape}")
    if min(a.shape) < window_size:
        raise ValueError(f"image {a.shape} is smaller than the {window_size}x{window_size} SSIM window")
    w = _gaussian_window_1d(window_size, sigma)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    mu_a = _filter_valid(a, w)
    mu_b = _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a**2
    var_b = _filter_valid(b * b, w) - mu_b**2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


# ---- MATLAB imresize (bicubic) ---------------------------------------------------------------

def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``); support [-2, 2]."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    ) * ((ax > 1) & (ax <= 2))


def _contributions(
    in_len: int, out_len: int, scale: float, kernel: Callable[[np.ndarray], np.ndarray],
    kernel_width: float, antialias: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out_len, P) and 0-based source indices (out_len, P), as MATLAB computes them."""
    if scale < 1 and antialias:
        def h(x: np.ndarray) -> np.ndarray:
            return scale * kernel(scale * x)
        kernel_width = kernel_width / scale
    else:
        h = kernel
    x = np.arange(1, out_len + 1, dtype=np.float64)  # 1-based output coordinates
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # matching 1-based input coordinate
    left = np.floor(u - kernel_width / 2.0)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p)[None, :]  # 1-based
    weights = h(u[:, None] - idx)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding ('symmetric' boundary): mirror indices outside [1, in_len].
    idx0 = idx.astype(np.int64) - 1
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = mirror[np.mod(idx0, mirror.size)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx0[:, keep]


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    weights, idx = _contributions(img.shape[axis], out_len, scale, _cubic, 4.0, antialias)
    gathered = np.take(img, idx, axis=axis)  # axis -> (out_len, P)
    shape = [1] * gathered.ndim
    shape[axis], shape[axis + 1] = weights.shape
    return np.sum(gathered * weights.reshape(shape), axis=axis + 1)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    *,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """MATLAB ``imresize(img, scale)`` with the default bicubic kernel, in NumPy.

    ``img``: (H, W) or (H, W, C), uint8 (0..255) or float. ``scale``: the factor for both axes
    (0.25 downscales by 4; output size ``ceil(scale * size)``), or give ``output_shape`` (H, W).
    Keys cubic (a = -0.5); when shrinking and ``antialias`` the kernel is stretched by 1/scale
    (MATLAB's antialiasing); borders are mirrored (symmetric). The axis with the larger
    reduction is resized first, as MATLAB does. Computation is float64 throughout; uint8 input
    gives uint8 output, rounded and clipped once at the end; float input gives float64 output.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    in_h, in_w = img.shape[:2]
    if output_shape is None:
        if scale is None or scale <= 0:
            raise ValueError("give a positive scale or an output_shape")
        scales = (float(scale), float(scale))
        out = (int(math.ceil(scale * in_h)), int(math.ceil(scale * in_w)))
    else:
        out = (int(output_shape[0]), int(output_shape[1]))
        if min(out) < 1:
            raise ValueError(f"output_shape must be positive, got {output_shape}")
        scales = (out[0] / in_h, out[1] / in_w)
    result = img.astype(np.float64)
    for axis in np.argsort(scales, kind="stable"):
        result = _resize_axis(result, int(axis), out[axis], scales[axis], antialias)
    if img.dtype == np.uint8:
        return round_to_uint8(result)
    return result


def sr_metrics(sr: np.ndarray, hr: np.ndarray, scale: int) -> tuple[float, float]:
    """(PSNR in dB, SSIM) of a super-resolved image against its ground truth, as SR papers report.

    Both images are rounded/clipped to uint8 (0..255), converted to Y (raw gray for 1-channel
    images), shaved by ``scale`` pixels on each side, and scored in float64.
    """
    sr_u8, hr_u8 = round_to_uint8(sr), round_to_uint8(hr)
    if sr_u8.shape != hr_u8.shape:
        raise ValueError(f"SR and HR differ in shape: {sr_u8.shape} vs {hr_u8.shape}")
    y_sr = shave(rgb_to_y(sr_u8), scale)
    y_hr = shave(rgb_to_y(hr_u8), scale)
    return psnr(y_sr, y_hr, 255.0), ssim(y_sr, y_hr, 255.0)
