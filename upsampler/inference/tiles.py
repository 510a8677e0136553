"""Tiled upscaling of images of any size with a trained generator, and the generator's geometry.

**Tiling.** :func:`upscale_image` cuts the LR image into ``tile`` x ``tile`` pieces, runs them
through the generator in batches, and writes each piece's SR pixels straight into a
preallocated ``uint8`` output, so memory is bounded by the tile size, not the image size.
Every tile is fed with up to ``overlap`` pixels of real context on each side and nothing
beyond the image border, where the generator zero-pads exactly as it does on a whole image
(in training and in ``upsampler evaluate``); the margin's output is discarded. An SR pixel
depends only on LR pixels within the generator's receptive field, so when ``overlap`` covers
it the tiles reproduce the whole-image output ``G(x)`` (up to float rounding), and an image no
larger than a tile - a 44x44 study input - goes through whole: the pixels a user gets are the
pixels the evaluation scores (tested).

**Receptive field.** :func:`receptive_field_radius` walks the generator's layers: the study's
16-block generator reaches 40 LR pixels to each side (head 9x9: 4; 16 blocks x two 3x3: 32;
trunk 3x3: 1; the x2 upsampling convs: 1 + 0.5; the 9x9 output conv at x4: 1 - with the
nearest-neighbour alignment of the two x2 steps, exactly 40). The default ``overlap=None``
uses that radius, so tiled output equals whole-image output. Its *effective* field is much
smaller - 99.6% of the gradient mass of an output pixel lies within 16 LR pixels (random
weights) - so ``--overlap 16`` is a cheaper approximation: 1.56x the work of untiled inference
at tile 128 instead of 2.64x, at a measured 65.8 dB PSNR against the whole-image output
(random-weight 16-block generator, 96x112 LR, tile 32; overlap 8 gives 39.0 dB, 24 gives
88.4 dB, 40 is exact). A trained generator's field may be wider; the default stays exact.

**Memory.** Tiles run through one ``tf.function`` (graph execution frees each activation as
soon as it is used; Keras' eager call held them all, 3x the peak), and ``batch_size=None``
feeds about four 160x160 LR tiles' worth of pixels per call (two tiles at overlap 40).
Measured on CPU, 1000x1000 -> 4000x4000 with the study's generator: peak RSS 2.17 GB for the
whole process (0.6 GB of it TensorFlow before the first call; 231 s on 2 shared cores);
with ``overlap=16`` (four tiles per call) 2.42 GB, 144 s.

TensorFlow is imported only when a generator is run.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Iterator

import numpy as np


# ---- the generator's geometry ---------------------------------------------------------------

def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def receptive_field_radius(generator) -> int:
    """How many LR pixels to each side of an LR pixel can influence its SR output.

    Sums ``(kernel - 1) / 2 * dilation`` of every convolution or pooling layer, in LR pixels
    (layers after a x2 upsampling count half, and so on), and rounds up. For a chain of
    convolutions with residual skips - the SRResNet generator - the skips never reach further
    than the chain, so this is the exact radius (the study's generator: 40; with 2 blocks: 12).
    """
    radius = 0.0
    scale = 1.0
    for layer in _flat_layers(generator):
        kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        if type(layer).__name__ == "Conv2DTranspose":  # upsamples by its strides (the portable pixel shuffle)
            k, stride = max(_pair(kernel)), max(_pair(layer.strides))
            radius += max(0, k - stride) / 2 / scale
            scale *= stride
            continue
        if kernel is not None:
            k = max(_pair(kernel))
            dilation = max(_pair(getattr(layer, "dilation_rate", 1) or 1))
            radius += (k - 1) / 2 * dilation / scale
            strides = max(_pair(getattr(layer, "strides", 1) or 1))
            scale /= strides
        factor = getattr(layer, "factor", None)  # upsampler.archs.srgan.PixelShuffle
        if factor is None and type(layer).__name__ == "UpSampling2D":
            factor = max(_pair(layer.size))
        if factor is not None:
            scale *= int(factor)
    return int(math.ceil(radius - 1e-9))


def _flat_layers(model) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and layer is not model:
            yield from _flat_layers(layer)
        else:
            yield layer


def _fixed_input_size(generator) -> tuple[int | None, int | None]:
    shape = generator.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    return shape[1], shape[2]


def infer_scale(generator) -> int:
    """The generator's upscaling factor: output side / input side on a small zero probe.

    Raises:
        ValueError: the ratio is not a positive integer, or differs between height and width.
    """
    h, w = _fixed_input_size(generator)
    probe_h, probe_w = h or 8, w or 8
    probe = np.zeros((1, probe_h, probe_w, 3), np.float32)
    out = np.asarray(generator(probe, training=False))
    if out.ndim != 4 or out.shape[-1] != 3:
        raise ValueError(f"the model does not produce (N, H, W, 3) images: output shape {out.shape}")
    sy, sx = out.shape[1] / probe_h, out.shape[2] / probe_w
    if sy != sx or sy < 1 or not float(sy).is_integer():
        raise ValueError(f"the model maps {probe_h}x{probe_w} to {out.shape[1]}x{out.shape[2]}: not an integer upscale")
    return int(sy)


# ---- tiled upscaling --------------------------------------------------------------------------

def tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of ``tile``-long windows covering ``0..length``; the last one is shifted
    back to end at ``length`` (overlapping its neighbour) so that every window is full-size."""
    if tile >= length:
        return [0]
    starts = list(range(0, length - tile + 1, tile))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


# LR pixels fed to the generator per call when batch_size is automatic: four 160x160 tiles
# (tile 128 + 2 x 16). With the study's generator (64 filters) one call peaks at about 1.7 GB
# (measured, graph mode, CPU), whatever the overlap.
LR_PIXELS_PER_CALL = 4 * 160 * 160

_COMPILED: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _predict_fn(generator):
    """``generator(x, training=False)`` as one ``tf.function``, traced once per input shape (on
    other backends Keras' own compiled ``predict_on_batch``).

    Graph execution frees each activation as soon as it is consumed; Keras' eager call keeps
    them alive to the end of the call (measured: 3x the peak memory). Shapes stay concrete (a
    tiled image has a handful of window shapes): Keras' UpSampling2D, the original study's
    upsampling, cannot be traced with unknown height and width.
    """
    try:
        return _COMPILED[generator]
    except (KeyError, TypeError):
        pass
    import keras

    model_ref = weakref.ref(generator)  # the cache must not keep the model alive
    if keras.backend.backend() != "tensorflow":  # Keras compiles the call per shape (jax.jit on JAX)
        fn = lambda x: model_ref().predict_on_batch(x)  # noqa: E731
    else:
        import tensorflow as tf

        fn = tf.function(lambda x: model_ref()(x, training=False), reduce_retracing=False)
    try:
        _COMPILED[generator] = fn
    except TypeError:
        pass
    return fn


def upscale_batch(generator, lr_uint8: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """Super-resolve a stack of equal-size ``uint8`` images, ``batch_size`` whole images per call.

    The same call as :func:`upscale_image` with ``tile=None`` (one compiled function, [-1, 1] in and
    out, the same rounding), for sets of small images such as a test split: on a CPU one call of
    16 44x44 faces costs about as much as two calls of one. Results equal one-image calls up to
    float rounding (a batch changes the order of the sums; at most one level of 255, in few pixels).
    """
    from upsampler.data.images import to_float, to_uint8

    lr = np.asarray(lr_uint8)
    if lr.dtype != np.uint8 or lr.ndim != 4 or lr.shape[-1] != 3:
        raise ValueError(f"upscale_batch expects (N, H, W, 3) uint8 images, got {lr.dtype} {lr.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predict = _predict_fn(generator)
    parts = []
    for first in range(0, len(lr), batch_size):
        sr = np.asarray(predict(to_float(lr[first: first + batch_size])))
        parts.append(to_uint8(sr))
    if not parts:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.concatenate(parts)


def auto_batch_size(tile_height: int, tile_width: int, overlap: int) -> int:
    """Tiles per call so that one call sees about :data:`LR_PIXELS_PER_CALL` LR pixels (>= 1)."""
    return max(1, LR_PIXELS_PER_CALL // ((tile_height + 2 * overlap) * (tile_width + 2 * overlap)))


def upscale_image(
    generator,
    lr_uint8: np.ndarray,
    *,
    scale: int | None = None,
    tile: int | None = 128,
    overlap: int | None = None,
    batch_size: int | None = None,
    progress: bool | None = False,
) -> np.ndarray:
    """Super-resolve one ``uint8`` image of any size, tile by tile.

    Args:
        generator: a Keras model mapping ``(N, h, w, 3)`` float32 in [-1, 1] to
            ``(N, scale*h, scale*w, 3)`` in [-1, 1] (any ``h, w``).
        lr_uint8: the LR image, ``(H, W, 3)`` uint8 (0..255).
        scale: the generator's factor; None asks :func:`infer_scale`.
        tile: side of the LR tiles (pixels); None, or an image no larger than a tile, runs
            the whole image at once.
        overlap: LR pixels of real context added on every side of a tile (none beyond the image
            border, where the generator zero-pads as on the whole image); None uses
            :func:`receptive_field_radius`: then the result equals the generator on the whole
            image (the pixels `upsampler evaluate` scores).
        batch_size: tiles per generator call; None picks :func:`auto_batch_size` (4 tiles of
            128 + 2 x 16, 2 tiles of 128 + 2 x 40), which bounds the memory of a call.
        progress: a tqdm bar over the tiles (None: only on a terminal; shown for images of more
            than 4 tiles).

    Returns:
        the SR image, ``(scale*H, scale*W, 3)`` uint8.

    Peak memory is about ``batch_size`` generator activations of a ``(tile + 2*overlap)``
    LR tile plus the uint8 output; no float array of the full output is ever built
    (a 1000x1000 -> 4000x4000 upscale with the study's generator peaks at 2.2 GB; see the
    module docstring).
    """
    from upsampler.data.images import to_float, to_uint8

    lr = np.asarray(lr_uint8)
    if lr.dtype != np.uint8 or lr.ndim != 3 or lr.shape[-1] != 3:
        raise ValueError(f"upscale_image expects an (H, W, 3) uint8 image, got {lr.dtype} {lr.shape}")
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be >= 1 or None, got {tile}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if scale is None:
        scale = infer_scale(generator)
    if overlap is None:
        overlap = receptive_field_radius(generator)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    fixed = _fixed_input_size(generator)
    if any(fixed):
        raise ValueError(f"the generator only accepts {fixed[0]}x{fixed[1]} inputs; tiled inference needs a "
                         "generator built with input_size=None")

    height, width = lr.shape[:2]
    th = height if tile is None else min(tile, height)
    tw = width if tile is None else min(tile, width)
    image = to_float(lr)  # float32 at LR size only
    out = np.empty((height * scale, width * scale, 3), np.uint8)

    # Each tile is run with up to `overlap` real neighbouring pixels around it and nothing beyond
    # the image: at the image border the generator pads with zeros exactly as on the whole image
    # (and as in training and `upsampler evaluate`), so with overlap >= the receptive field the
    # tiles reproduce G(whole image). Windows of equal shape are batched together.
    s, o = scale, overlap
    windows: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
    for y in tile_starts(height, th):
        for x in tile_starts(width, tw):
            y0, x0 = max(0, y - o), max(0, x - o)
            y1, x1 = min(height, y + th + o), min(width, x + tw + o)
            windows.setdefault((y1 - y0, x1 - x0), []).append((y, x, y0, x0))
    predict = _predict_fn(generator)
    from tqdm import tqdm

    total = sum(len(group) for group in windows.values())
    bar = tqdm(total=total, desc="tiles", unit="tile", leave=False,
               disable=(progress is False) or total <= 4 or (None if progress is None else False))
    for (wh, ww), group in windows.items():
        per_call = batch_size or auto_batch_size(wh, ww, 0)
        for first in range(0, len(group), per_call):
            chunk = group[first: first + per_call]
            batch = np.stack([image[y0: y0 + wh, x0: x0 + ww] for _, _, y0, x0 in chunk])
            sr = predict(batch)
            expected = (len(chunk), s * wh, s * ww, 3)
            if tuple(sr.shape) != expected:
                raise ValueError(f"the generator mapped {batch.shape} to {tuple(sr.shape)}, expected {expected} "
                                 f"(scale {scale})")
            sr = np.asarray(sr)
            for (y, x, y0, x0), piece in zip(chunk, sr):
                top, left = s * (y - y0), s * (x - x0)
                out[s * y: s * (y + th), s * x: s * (x + tw)] = to_uint8(piece[top: top + s * th, left: left + s * tw])
            bar.update(len(chunk))
            del sr, batch
    bar.close()
    return out
