"""Features for the set distances: images -> an extractor's activations -> their statistics.

The first two steps of pytorch-fid's composition (activations -> statistics -> distance):
:func:`activations` runs an extractor of :mod:`upsampler.metrics.extractors` over images in
batches; :func:`activation_statistics` gives their mean and covariance for the Fréchet distance
(:mod:`upsampler.metrics.fid`); KID (:mod:`upsampler.metrics.kid`) works on the activations.
NumPy only; TensorFlow is imported by the extractors when they run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np


# ---- features ---------------------------------------------------------------------------------

def _iter_batches(items: Sequence[Any], batch_size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


def _extract_uint8(batch: Sequence[np.ndarray], extractor: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Run the extractor on a list of uint8 images that may differ in size (grouped by shape)."""
    out: list[np.ndarray | None] = [None] * len(batch)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(batch):
        by_shape.setdefault(img.shape, []).append(i)
    for idxs in by_shape.values():
        feats = np.asarray(extractor(np.stack([batch[i] for i in idxs])), dtype=np.float64)
        for j, i in enumerate(idxs):
            out[i] = feats[j]
    return np.stack(out)  # type: ignore[arg-type]


def activations(
    images: np.ndarray | Sequence[str | Path],
    extractor: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """Features of a set of images, float64 array of shape (N, D).

    ``images``: a uint8 array (N, H, W, 3) with values 0..255, or a list of image file paths
    (decoded with Pillow and converted to RGB). ``extractor``: a
    :class:`~upsampler.metrics.extractors.FeatureExtractor` (or any callable mapping a uint8
    NHWC batch to (n, D) features). ``batch_size``: images per forward pass (small on CPU).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be a uint8 (N, H, W, 3) array, got {images.dtype} {images.shape}")
        items: Sequence[Any] = images
        from_paths = False
    else:
        items = [Path(p) for p in images]
        from_paths = True
    if len(items) == 0:
        raise ValueError("no images given")
    batches = _iter_batches(items, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=math.ceil(len(items) / batch_size), desc=getattr(extractor, "name", "features"),
                       unit="batch")
    chunks = []
    for batch in batches:
        if from_paths:
            from upsampler.metrics.srbench import read_image

            chunks.append(_extract_uint8([read_image(p, mode="RGB") for p in batch], extractor))
        else:
            chunks.append(np.asarray(extractor(np.asarray(batch)), dtype=np.float64))
    feats = np.concatenate(chunks, axis=0).astype(np.float64, copy=False)
    if not np.all(np.isfinite(feats)):
        raise ValueError("the extractor produced NaN or Inf features")
    return feats


def _check_features(feats: np.ndarray, name: str = "features") -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 images for a covariance, got {feats.shape[0]}")
    if not np.all(np.isfinite(feats)):
        raise ValueError(f"{name} contain NaN or Inf")
    return feats


def activation_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), float64; covariance with ddof=1 (N >= 2)."""
    feats = _check_features(feats)
    mu = feats.mean(axis=0)
    sigma = np.cov(feats, rowvar=False, ddof=1)
    return mu, np.atleast_2d(sigma)
