"""Population BatchNorm statistics ("precise BN"), recomputed before a generator is exported.

During training each BatchNormalization layer keeps an exponential moving average of its batch
statistics. With a momentum near 1 and few steps, that average lags far behind the weights (the
``study-cpu`` generators stored variances 4.6-7.2x the recomputed ones), so a model in inference
mode computes something other than the model that was trained. :func:`recompute_batchnorm_statistics`
replaces every moving mean and variance by the population statistics of the layer's inputs over a
fixed set of batches, each layer's computed with the layers before it already in inference mode on
their new statistics - what inference will actually feed it. One pass through the graph: each BN
layer sets its statistics from the input that reaches it and then normalises with them, and the
pass stops after the last BN layer. Backend-neutral (``keras`` only); the training state is not
touched when called on an export copy.
"""

from __future__ import annotations

import itertools
from typing import Iterable

import numpy as np

PRECISE_BN_EPOCH_KEY = 3_000_000  # the data key of the batches precise BN statistics are computed on


def batchnorm_layers(model) -> list:
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


class _AfterLastBatchNorm(Exception):
    """Raised inside the graph walk once every BatchNormalization layer has its statistics."""


def recompute_batchnorm_statistics(model, batches: Iterable[np.ndarray]) -> dict:
    """Set each BatchNormalization layer's moving mean and variance of ``model`` (a functional
    Keras model with one input) to the mean and biased variance of its inputs over ``batches``
    (model inputs as NumPy arrays, all stacked into one pass), in inference mode. Returns
    ``{"layers": n, "images": m, "max_variance_ratio": r}``: r is the largest ratio, over channels
    and layers, of the old stored variance to the new one (or its inverse), a measure of how
    stale the statistics were."""
    from keras import ops
    from keras.src.models.functional import operation_fn  # the call-context wrapper Functional.call uses

    batches = [np.asarray(b) for b in batches]
    if not batches:
        raise ValueError("recompute_batchnorm_statistics needs at least one batch")
    if not hasattr(model, "_run_through_graph"):
        raise TypeError(f"recompute_batchnorm_statistics needs a functional Keras model, got {type(model).__name__}")
    layers = batchnorm_layers(model)
    pending, worst = set(map(id, layers)), [1.0]

    def set_statistics(layer, x) -> None:
        x = ops.cast(x, "float32")
        axes = tuple(range(len(x.shape) - 1))
        mean = ops.mean(x, axis=axes)
        variance = ops.mean(ops.square(x - mean), axis=axes)  # two-pass: no cancellation in float32
        old = ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
        new = ops.convert_to_numpy(variance).astype(np.float64)
        ratio = np.maximum(old, 1e-12) / np.maximum(new, 1e-12)
        worst[0] = max(worst[0], float(np.max(np.maximum(ratio, 1.0 / ratio))))
        layer.moving_mean.assign(ops.cast(mean, layer.moving_mean.dtype))
        layer.moving_variance.assign(ops.cast(variance, layer.moving_variance.dtype))

    def wrap(op):
        call = operation_fn(op, training=False)
        if id(op) not in pending:
            return call

        def call_batchnorm(x, *args, **kwargs):
            set_statistics(op, x)
            pending.discard(id(op))
            y = call(x, *args, **kwargs)
            if not pending:
                raise _AfterLastBatchNorm
            return y

        return call_batchnorm

    if layers:
        try:
            model._run_through_graph([ops.convert_to_tensor(np.concatenate(batches))], operation_fn=wrap)
        except _AfterLastBatchNorm:
            pass
        if pending:
            raise ValueError(f"{len(pending)} BatchNormalization layers of {model.name} were not reached from its input")
    return {"layers": len(layers), "images": int(sum(len(b) for b in batches)), "max_variance_ratio": worst[0]}


def training_crops(train_lr: np.ndarray, train_hr: np.ndarray, *, n_batches: int, batch_size: int, seed: int,
                   flips: bool, crop: int | None) -> list[np.ndarray]:
    """The fixed LR inputs (in [-1, 1]) precise BN is computed on: the first ``n_batches`` batches
    of the training pipeline under data key :data:`PRECISE_BN_EPOCH_KEY` with the run's seed,
    crops and flips - the same for every export of a run, and other crops than any epoch's."""
    from upsampler.data import pipeline
    from upsampler.data.images import to_float

    batches = pipeline.train_batches(train_lr, train_hr, batch_size=batch_size, seed=seed,
                                     epoch=PRECISE_BN_EPOCH_KEY, flips=flips, crop=crop)
    return [to_float(lr) for lr, _ in itertools.islice(batches, n_batches)]
