"""The training batches: ``(lr, hr)`` float32 in [-1, 1], a function of ``(seed, epoch)`` only.

:func:`train_batches` yields NumPy batches (every backend); :func:`make_train_dataset` serves the
same epoch through ``tf.data`` for TensorFlow. Their order, crops and flips depend only on
``(seed, epoch)``, so a resumed run sees exactly the batches it would have seen. TensorFlow is
imported only inside :func:`make_train_dataset`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf


# ---- training pipeline -----------------------------------------------------------------

def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches in one pass over ``n_images`` (the remainder is dropped)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_images < batch_size:
        raise ValueError(f"the training set has {n_images} images, fewer than one batch of {batch_size}")
    return n_images // batch_size


def epoch_order(n_images: int, *, seed: int, epoch: int, flips: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The image order and horizontal-flip flags of one epoch, a pure function of (seed, epoch).

    Returns ``(indices, flip)``: a permutation of ``range(n_images)`` from
    ``np.random.default_rng([seed, epoch])`` and a boolean per position (all False when
    ``flips`` is off) from ``np.random.default_rng([seed, epoch, 1])``.
    """
    indices = np.random.default_rng([seed, epoch]).permutation(n_images)
    if flips:
        flip = np.random.default_rng([seed, epoch, 1]).random(n_images) < 0.5
    else:
        flip = np.zeros(n_images, dtype=bool)
    return indices, flip


def crop_origins(n_images: int, lr_size: int, lr_crop: int, *, seed: int, epoch: int) -> np.ndarray:
    """LR-pixel origins ``(n_images, 2)`` of one epoch's random crops, by epoch position.

    A pure function of (seed, epoch) like :func:`epoch_order`; the HR crop starts at
    ``scale *`` the LR origin, so LR and HR crops stay exactly aligned.
    """
    return np.random.default_rng([seed, epoch, 2]).integers(0, lr_size - lr_crop + 1, size=(n_images, 2))


def train_batches(
    lr: np.ndarray,
    hr: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    flips: bool = False,
    crop: int | None = None,
    skip_batches: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of uint8 ``(lr, hr)`` NumPy batches, fully determined by (seed, epoch).

    Args:
        lr, hr: uint8 arrays ``(N, h, w, 3)`` and ``(N, H, W, 3)`` (from :func:`upsampler.data.processed.load_split`).
        batch_size: images per batch; the last partial batch is dropped, so every batch
            has this static size.
        seed, epoch: the shuffle key (see :func:`epoch_order`). Same key, same batches.
        flips: mirror left-right the same images in LR and HR, decided per (seed, epoch,
            position).
        crop: HR side of a random crop per image (its LR crop is ``crop / scale`` at the
            matching origin; see :func:`crop_origins`); None: whole images.
        skip_batches: start at this batch of the epoch (a run resumed mid-epoch);
            ``0 <= skip_batches <= steps_per_epoch``.

    Knows nothing of the model or the backend: every engine (TensorFlow's ``tf.data`` wrapper
    :func:`make_train_dataset`, the JAX step) eats these arrays. Raises ValueError when there are
    fewer images than ``batch_size``.
    """
    lr = np.asarray(lr)
    hr = np.asarray(hr)
    if lr.ndim != 4 or hr.ndim != 4 or len(lr) != len(hr):
        raise ValueError(f"lr and hr must be (N, h, w, C) arrays of equal N, got {lr.shape} and {hr.shape}")
    if lr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise ValueError(f"lr and hr must be uint8, got {lr.dtype} and {hr.dtype}")
    n_batches = steps_per_epoch(len(lr), batch_size)
    if not 0 <= skip_batches <= n_batches:
        raise ValueError(f"skip_batches must be in [0, {n_batches}] for this epoch, got {skip_batches}")
    indices, flip = epoch_order(len(lr), seed=seed, epoch=epoch, flips=flips)
    scale = hr.shape[1] // lr.shape[1]
    lr_crop = None
    if crop is not None and crop < hr.shape[1]:
        if crop % scale or crop > min(hr.shape[1:3]):
            raise ValueError(f"crop {crop} must be a multiple of the scale {scale} and at most the HR size {hr.shape[1:3]}")
        lr_crop = crop // scale
        origins = crop_origins(len(lr), min(lr.shape[1:3]), lr_crop, seed=seed, epoch=epoch)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for b in range(skip_batches, n_batches):
            window = slice(b * batch_size, (b + 1) * batch_size)
            chosen = indices[window]
            if lr_crop is None:
                lr_batch, hr_batch = lr[chosen], hr[chosen]
            else:
                lr_batch = np.stack([lr[i, y:y + lr_crop, x:x + lr_crop]
                                     for i, (y, x) in zip(chosen, origins[window])])
                hr_batch = np.stack([hr[i, scale * y:scale * (y + lr_crop), scale * x:scale * (x + lr_crop)]
                                     for i, (y, x) in zip(chosen, origins[window])])
            mirrored = flip[window]
            if mirrored.any():
                lr_batch[mirrored] = lr_batch[mirrored, :, ::-1]
                hr_batch[mirrored] = hr_batch[mirrored, :, ::-1]
            yield lr_batch, hr_batch

    return batches()


def make_train_dataset(
    lr: np.ndarray,
    hr: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    flips: bool = False,
    crop: int | None = None,
    shuffle_buffer: int = 4096,
    skip_batches: int = 0,
) -> "tf.data.Dataset":
    """TensorFlow only: :func:`train_batches` as a ``tf.data.Dataset`` of float32 batches in [-1, 1].

    ``shuffle_buffer`` is kept for configuration compatibility; unused, because the order is a
    full permutation of the epoch (what an unbounded shuffle buffer would give). The uint8 ->
    float conversion (``x / 127.5 - 1``) happens on the fly; batches are prefetched.
    """
    import tensorflow as tf

    if shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
    epoch_batches = functools.partial(train_batches, lr, hr, batch_size=batch_size, seed=seed, epoch=epoch,
                                      flips=flips, crop=crop, skip_batches=skip_batches)
    epoch_batches()  # validates eagerly, before any tf.data
    lr, hr = np.asarray(lr), np.asarray(hr)
    scale = hr.shape[1] // lr.shape[1]
    cropped = crop is not None and crop < hr.shape[1]
    lr_shape = lr.shape[1:] if not cropped else (crop // scale, crop // scale, lr.shape[3])
    hr_shape = hr.shape[1:] if not cropped else (crop, crop, hr.shape[3])
    signature = (
        tf.TensorSpec((batch_size, *lr_shape), tf.uint8),
        tf.TensorSpec((batch_size, *hr_shape), tf.uint8),
    )

    def to_unit_range(lr_batch: "tf.Tensor", hr_batch: "tf.Tensor") -> tuple["tf.Tensor", "tf.Tensor"]:
        return (
            tf.cast(lr_batch, tf.float32) / 127.5 - 1.0,
            tf.cast(hr_batch, tf.float32) / 127.5 - 1.0,
        )

    dataset = tf.data.Dataset.from_generator(epoch_batches, output_signature=signature)
    dataset = dataset.map(to_unit_range, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
