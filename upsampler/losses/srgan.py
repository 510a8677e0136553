"""SRGAN losses: VGG19 content loss, pixel MSE, adversarial BCE on logits with noisy labels.

Images are NHWC float32 in [-1, 1]. Everything here is ``keras.ops``, so it runs on every Keras
backend (TensorFlow, JAX). The discriminator returns logits; every BCE here is computed from
logits (``max(x, 0) - x z + log(1 + exp(-|x|))``, as ``tf.nn.sigmoid_cross_entropy_with_logits``), which never saturates
numerically — the original study computed it from clipped sigmoid probabilities, and its
discriminator sat at D = 1.0 for 2500 epochs with no gradient.

Every loss exists in two forms: a batch mean (``bce_with_logits``, ``pixel_mse``,
``ContentLoss.__call__``) and a per-example vector (``*_per_example``). The trainer uses the
per-example forms with :func:`global_batch_mean` so that, under a ``tf.distribute`` strategy,
each replica's loss is ``sum(per-example) / global_batch``: summing the replicas' gradients
(what the optimisers do) then gives exactly the gradient of the mean over the global batch.

The noisy labels of a step are drawn on the host by :func:`noisy_labels_numpy` from
``(seed, step)``; the TensorFlow step's own stateless draw is :func:`noisy_labels` (TensorFlow only).
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from upsampler.archs import vgg as backbones
from upsampler.config import LossConfig

# VGG's "caffe" preprocessing: BGR order, ImageNet channel means subtracted, 0..255 scale.
VGG_BGR_MEANS = backbones.BGR_MEANS[backbones.VGG19]


@keras.saving.register_keras_serializable(package="upsampler")
class WindowMaxPool2D(keras.layers.Layer):
    """2x2/stride-2 max pooling as reshape + ``reduce_max`` (VGG's ``MaxPooling2D``, "valid").

    Same forward values as ``MaxPooling2D``. Its gradient (``reduce_max``'s: split between
    tied maxima) is deterministic under XLA, where ``MaxPoolGrad`` has no deterministic XLA
    kernel: with it, the content loss compiles with ``jit_compile`` *and* op determinism
    (exact resume). Ties only occur between zeros after a ReLU, whose gradient is zero anyway.
    """

    def call(self, inputs):
        shape = ops.shape(inputs)
        h, w = shape[1] // 2, shape[2] // 2
        x = inputs
        static_h, static_w = inputs.shape[1], inputs.shape[2]
        if static_h is None or static_w is None or static_h % 2 or static_w % 2:
            x = inputs[:, : 2 * h, : 2 * w, :]  # "valid" pooling drops an odd last row/column
        x = ops.reshape(x, (shape[0], h, 2, w, 2, inputs.shape[-1]))
        return ops.max(x, axis=(2, 4))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h // 2, None if w is None else w // 2, c)


def _with_window_max_pooling(vgg: keras.Model, last_layer: str, name: str) -> keras.Model:
    """The chain of ``vgg`` up to ``last_layer`` with every MaxPooling2D replaced by
    :class:`WindowMaxPool2D` (the convolution layers, and so the weights, are shared)."""
    inputs = keras.Input(shape=(None, None, 3), name="vgg_input")
    x = inputs
    for layer in vgg.layers[1:]:
        if isinstance(layer, keras.layers.MaxPooling2D):
            x = WindowMaxPool2D(name=layer.name)(x)
        else:
            x = layer(x)
        if layer.name == last_layer:
            break
    return keras.Model(inputs, x, name=name)


def build_vgg_feature_extractor(
    layer: str = "block5_conv4", network: str = backbones.VGG19, seed: int = 0, pooling: str = "max_pool"
) -> keras.Model:
    """A VGG trunk (:mod:`upsampler.archs.vgg`) truncated at ``layer`` (post-ReLU, as Keras names it).

    Args:
        layer: e.g. ``block5_conv4`` (VGG19's VGG54), ``block5_conv3`` (VGG16's analogue) or
            ``block2_conv2`` (VGG22).
        network: ``"vgg19"`` (ImageNet; Keras' standard download), ``"vgg16-hed"``
            (pretrained, offline) or ``"untrained"`` (random VGG19; tests only, labelled).
        pooling: ``"max_pool"`` (Keras' MaxPooling2D; fastest without XLA) or ``"window_max"``
            (:class:`WindowMaxPool2D`: same values, a gradient XLA can compile deterministically).
    Returns a frozen model mapping caffe-preprocessed images (:func:`vgg_preprocess`) to feature maps.
    """
    vgg = backbones.build_vgg(network, seed)
    names = backbones.conv_layer_names(vgg)
    if layer not in names:
        raise ValueError(f"unknown {network} layer {layer!r}; choose one of {names}")
    name = f"{network.replace('-', '_')}_{layer}"
    if pooling == "window_max":
        features = _with_window_max_pooling(vgg, layer, name=name)
    elif pooling == "max_pool":
        features = keras.Model(vgg.input, vgg.get_layer(layer).output, name=name)
    else:
        raise ValueError(f"pooling must be 'max_pool' or 'window_max', got {pooling!r}")
    features.trainable = False
    return features


def vgg_preprocess(images, mode: str = "paper", network: str = backbones.VGG19):
    """Map [-1, 1] RGB images to VGG input. ``paper``: caffe BGR, mean-subtracted, 0..255 (the
    network's own means); ``raw``: unchanged (the original study's)."""
    if mode == "raw":
        return images
    if mode != "paper":
        raise ValueError(f"VGG preprocessing must be 'paper' or 'raw', got {mode!r}")
    return backbones.preprocess(images, network)


class ContentLoss:
    """MSE between VGG19 features of SR and HR (SRGAN's VGG loss), or pixel MSE.

    ``features(hr)`` can be computed once and passed in (``hr_features=``) so HR features are
    never differentiated through or recomputed.
    """

    def __init__(self, config: LossConfig, seed: int = 0, xla: bool = False):
        self.config = config
        self.kind = config.content
        self.scale = config.feature_scale if config.vgg_preprocessing == "paper" else 1.0
        pooling = "window_max" if xla else "max_pool"  # MaxPoolGrad has no deterministic XLA kernel
        self.vgg = (
            build_vgg_feature_extractor(config.content_layer, config.content_network, seed, pooling=pooling)
            if self.kind == "vgg" else None
        )

    def features(self, images, vgg_call=None):
        """Scaled VGG features of [-1, 1] images. ``vgg_call(x)`` replaces ``self.vgg(x)`` (the JAX
        step passes the VGG's stateless call with its weights as arguments)."""
        x = vgg_preprocess(ops.cast(images, "float32"), self.config.vgg_preprocessing, self.config.content_network)
        feats = vgg_call(x) if vgg_call is not None else self.vgg(x, training=False)
        return ops.cast(feats, "float32") * self.scale

    def __call__(self, hr, sr, hr_features=None, vgg_call=None):
        return ops.mean(self.per_example(hr, sr, hr_features=hr_features, vgg_call=vgg_call))

    def per_example(self, hr, sr, hr_features=None, vgg_call=None):
        """The content loss of each image, shape (batch,); its mean is ``__call__``'s value."""
        if self.kind == "mse":
            return pixel_mse_per_example(hr, sr)
        if hr_features is None:
            hr_features = ops.stop_gradient(self.features(hr, vgg_call))
        return _mean_per_example(ops.square(hr_features - self.features(sr, vgg_call)))

    def feature_shape(self, hr_size: int) -> tuple[int, ...]:
        """Shape of ``features`` of one ``hr_size`` x ``hr_size`` image (for the HR feature cache)."""
        spec = self.vgg.compute_output_shape((1, hr_size, hr_size, 3))
        return tuple(int(d) for d in spec[1:])


def pixel_mse(hr, sr):
    """Mean squared error in the [-1, 1] pixel scale."""
    return ops.mean(ops.square(ops.cast(hr, "float32") - ops.cast(sr, "float32")))


def _mean_per_example(values):
    """Mean over every axis but the first: (batch, ...) -> (batch,)."""
    return ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)


def pixel_mse_per_example(hr, sr):
    """Pixel MSE of each image, shape (batch,)."""
    return _mean_per_example(ops.square(ops.cast(hr, "float32") - ops.cast(sr, "float32")))


def global_batch_mean(per_example, global_batch_size):
    """``sum(per_example) / global_batch_size`` (``tf.nn.compute_average_loss``).

    On one device with the whole batch this is the plain mean; on each of N replicas holding
    1/N of the batch, the N values (and their gradients) add up to the global-batch mean.
    """
    per_example = ops.cast(per_example, "float32")
    return ops.sum(per_example) / ops.cast(global_batch_size, "float32")


def noisy_labels(batch_size, mean: float, std: float, seed):
    """TensorFlow only: per-sample soft labels ~ N(mean, std) clipped to [0, 1], shape (batch, 1).

    ``seed`` is a shape-(2,) int tensor (e.g. ``[run_seed, step]``): the labels of a step are a
    pure function of it, so a resumed run draws exactly the labels an uninterrupted run would.
    """
    import tensorflow as tf

    labels = mean + std * tf.random.stateless_normal(tf.stack([batch_size, 1]), seed=seed)
    return tf.clip_by_value(labels, 0.0, 1.0)


def noisy_labels_numpy(batch_size: int, mean: float, std: float, seed: int, step: int, stream: int) -> np.ndarray:
    """Soft labels ~ N(mean, std) clipped to [0, 1], shape (batch, 1), float32, drawn on the host
    from ``np.random.default_rng([seed, step, stream])`` (stream 0: real, 1: fake): the same labels
    on every backend and device count, a pure function of the run seed and the step."""
    draws = np.random.default_rng([int(seed), int(step), int(stream)]).standard_normal((int(batch_size), 1))
    return np.clip(mean + std * draws, 0.0, 1.0).astype(np.float32)


def sigmoid_cross_entropy_with_logits(labels, logits):
    """Elementwise BCE from logits, ``max(x, 0) - x z + log1p(exp(-|x|))`` (TensorFlow's formula)."""
    logits = ops.cast(logits, "float32")
    labels = ops.cast(labels, "float32")
    return ops.relu(logits) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))


def bce_with_logits(labels, logits):
    """Mean binary cross-entropy (nats) from logits; exact for soft labels in [0, 1]."""
    return ops.mean(sigmoid_cross_entropy_with_logits(labels, logits))


def bce_with_logits_per_example(labels, logits):
    """Binary cross-entropy of each example, shape (batch,); its mean is ``bce_with_logits``."""
    return _mean_per_example(sigmoid_cross_entropy_with_logits(labels, logits))


def discriminator_loss(real_logits, fake_logits, real_labels, fake_labels):
    """BCE(real labels, D(HR)) + BCE(fake labels, D(SR)), as the original summed the two batches."""
    return bce_with_logits(real_labels, real_logits) + bce_with_logits(fake_labels, fake_logits)


def generator_adversarial_loss(fake_logits):
    """BCE(1, D(SR)): the generator is rewarded when D calls its output real."""
    return bce_with_logits(ops.ones_like(ops.cast(fake_logits, "float32")), fake_logits)


def calibrate_feature_scale(
    network: str, layer: str, hr: np.ndarray, scale: int = 4, batch_size: int = 16
) -> dict[str, float]:
    """The feature scale at which the content loss of bicubic upscales equals their pixel MSE.

    The SRGAN paper scales VGG19 features by 1/12.75 "to obtain VGG losses of a scale that is
    comparable to the MSE loss"; this applies that rule to any network and layer, so the content
    and adversarial (weight 1e-3) terms keep the paper's balance. For each HR image (uint8,
    NHWC), the bicubic downscale-upscale pair gives a pixel MSE m_i ([-1, 1] scale) and an
    unscaled feature MSE f_i; the returned ``scale`` is sqrt(median(m_i / f_i)).
    """
    from upsampler.data.images import bicubic_downscale, bicubic_upscale

    extractor = build_vgg_feature_extractor(layer, network)
    up = np.stack([bicubic_upscale(bicubic_downscale(h, scale), scale) for h in hr])
    ratios = []
    for first in range(0, len(hr), batch_size):
        a = hr[first:first + batch_size].astype(np.float32) / 127.5 - 1.0
        b = up[first:first + batch_size].astype(np.float32) / 127.5 - 1.0
        fa = ops.convert_to_numpy(extractor(vgg_preprocess(ops.convert_to_tensor(a), "paper", network), training=False))
        fb = ops.convert_to_numpy(extractor(vgg_preprocess(ops.convert_to_tensor(b), "paper", network), training=False))
        feature_mse = np.mean(np.square(fa.astype(np.float64) - fb), axis=(1, 2, 3))
        pixel_mse = np.mean(np.square(a.astype(np.float64) - b), axis=(1, 2, 3))
        ratios.extend((pixel_mse / np.maximum(feature_mse, 1e-30)).tolist())
    ratios = np.asarray(ratios)
    return {"scale": float(np.sqrt(np.median(ratios))), "n": int(len(ratios)),
            "ratio_iqr": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]}
