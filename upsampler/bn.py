"""Population BatchNorm statistics ("precise BN"), recomputed before a generator is exported.

During training each BatchNormalization layer keeps an exponential moving average of its batch
statistics. With a momentum near 1 and few steps, that average lags far behind the weights (the
``study-cpu`` generators stored variances 4.6-7.2x the recomputed ones), so a model in inference
mode computes something other than the model that was trained. :func:`recompute_batchnorm_statistics`
replaces every moving mean and variance by the population statistics of the layer's inputs over a
fixed set of batches, layer by layer in graph order, each computed with the layers before it
already in inference mode on their new statistics - what inference will actually feed it.
Backend-neutral (``keras`` only); the training state is not touched when called on an export copy.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def batchnorm_layers(model) -> list:
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def recompute_batchnorm_statistics(model, batches: Iterable[np.ndarray]) -> dict:
    """Set each BatchNormalization layer's moving mean and variance of ``model`` (a functional
    Keras model) to the mean and biased variance of its inputs over ``batches`` (model inputs as
    NumPy arrays), in inference mode. Returns ``{"layers": n, "images": m, "max_variance_ratio":
    r}``: r is the largest ratio, over channels and layers, of the old stored variance to the new
    one (or its inverse), a measure of how stale the statistics were."""
    import keras
    from keras import ops

    batches = [np.asarray(b) for b in batches]
    if not batches:
        raise ValueError("recompute_batchnorm_statistics needs at least one batch")
    layers = batchnorm_layers(model)
    worst = 1.0
    for layer in layers:
        probe = keras.Model(model.inputs, layer.input)
        total = count = None
        for batch in batches:
            x = ops.convert_to_numpy(probe(ops.convert_to_tensor(batch), training=False)).astype(np.float64)
            x = x.reshape(-1, x.shape[-1])
            s, s2 = x.sum(axis=0), np.square(x).sum(axis=0)
            total = (s, s2) if total is None else (total[0] + s, total[1] + s2)
            count = len(x) if count is None else count + len(x)
        mean = total[0] / count
        variance = np.maximum(total[1] / count - np.square(mean), 0.0)
        old = ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
        ratio = np.maximum(old, 1e-12) / np.maximum(variance, 1e-12)
        worst = max(worst, float(np.max(np.maximum(ratio, 1.0 / ratio))))
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return {"layers": len(layers), "images": int(sum(len(b) for b in batches)), "max_variance_ratio": worst}
