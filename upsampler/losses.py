"""SRGAN losses: VGG19 content loss, pixel MSE, adversarial BCE on logits with noisy labels.

Images are NHWC float32 in [-1, 1]. The discriminator returns logits; every BCE here is
computed from logits (``tf.nn.sigmoid_cross_entropy_with_logits``), which never saturates
numerically — the original study computed it from clipped sigmoid probabilities, and its
discriminator sat at D = 1.0 for 2500 epochs with no gradient.

Every loss exists in two forms: a batch mean (``bce_with_logits``, ``pixel_mse``,
``ContentLoss.__call__``) and a per-example vector (``*_per_example``). The trainer uses the
per-example forms with :func:`global_batch_mean` so that, under a ``tf.distribute`` strategy,
each replica's loss is ``sum(per-example) / global_batch``: summing the replicas' gradients
(what the optimisers do) then gives exactly the gradient of the mean over the global batch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from .config import IMAGENET, UNTRAINED, LossConfig

# VGG's "caffe" preprocessing: BGR order, ImageNet channel means subtracted, 0..255 scale.
VGG_BGR_MEANS = (103.939, 116.779, 123.68)

VGG_WEIGHTS_HELP = (
    "Could not load the ImageNet VGG19 weights for the content loss ({error}). Keras downloads them "
    "once to ~/.keras/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5; on an offline machine "
    "copy that file there. For tests or an offline demo only, choose the labelled fallback explicitly "
    "with `--set loss.vgg_weights=untrained` (results are then not comparable with SRGAN)."
)


def _reinitialise_deterministically(model: keras.Model, seed: int) -> None:
    """Glorot-uniform kernels and zero biases from a NumPy generator keyed by ``seed``.

    Independent of TensorFlow's global RNG, so the untrained fallback is the same network in
    every process (a resumed run must see the same content loss).
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        kernel, bias = layer.get_weights()
        fan_in = np.prod(kernel.shape[:-1])
        fan_out = np.prod(kernel.shape[:-2]) * kernel.shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        # He-style gain keeps activations from vanishing through 16 ReLU convolutions.
        limit *= np.sqrt(2.0)
        layer.set_weights([rng.uniform(-limit, limit, kernel.shape).astype(np.float32), np.zeros_like(bias)])


@keras.saving.register_keras_serializable(package="upsampler")
class WindowMaxPool2D(keras.layers.Layer):
    """2x2/stride-2 max pooling as reshape + ``reduce_max`` (VGG's ``MaxPooling2D``, "valid").

    Same forward values as ``MaxPooling2D``. Its gradient (``reduce_max``'s: split between
    tied maxima) is deterministic under XLA, where ``MaxPoolGrad`` has no deterministic XLA
    kernel: with it, the content loss compiles with ``jit_compile`` *and* op determinism
    (exact resume). Ties only occur between zeros after a ReLU, whose gradient is zero anyway.
    """

    def call(self, inputs):
        shape = tf.shape(inputs)
        h, w = shape[1] // 2, shape[2] // 2
        x = inputs
        static_h, static_w = inputs.shape[1], inputs.shape[2]
        if static_h is None or static_w is None or static_h % 2 or static_w % 2:
            x = inputs[:, : 2 * h, : 2 * w, :]  # "valid" pooling drops an odd last row/column
        x = tf.reshape(x, tf.stack([shape[0], h, 2, w, 2, inputs.shape[-1]]))
        return tf.reduce_max(x, axis=[2, 4])

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
    layer: str = "block5_conv4", weights: str = IMAGENET, seed: int = 0, pooling: str = "max_pool"
) -> keras.Model:
    """VGG19 truncated at ``layer`` (pre-activation ReLU output as Keras names it).

    Args:
        layer: a VGG19 layer name, e.g. ``block5_conv4`` (SRGAN's VGG54) or ``block2_conv2`` (VGG22).
        weights: ``"imagenet"`` (the default for real runs; Keras' standard download) or
            ``"untrained"``: a deterministic random network — an explicit offline fallback
            whose results must be labelled as such.
        pooling: ``"max_pool"`` (Keras' MaxPooling2D; fastest without XLA) or ``"window_max"``
            (:class:`WindowMaxPool2D`: same values, a gradient XLA can compile deterministically).
    Returns a frozen model mapping VGG-preprocessed images to feature maps.
    """
    if weights == IMAGENET:
        try:
            vgg = keras.applications.VGG19(include_top=False, weights="imagenet", input_shape=(None, None, 3))
        except Exception as exc:  # network errors surface as many exception types
            raise RuntimeError(VGG_WEIGHTS_HELP.format(error=f"{type(exc).__name__}: {exc}")) from exc
    elif weights == UNTRAINED:
        vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
        _reinitialise_deterministically(vgg, seed)
    else:
        raise ValueError(f"VGG weights must be 'imagenet' or 'untrained', got {weights!r}")
    try:
        vgg.get_layer(layer)
    except ValueError:
        names = [l.name for l in vgg.layers if "conv" in l.name]
        raise ValueError(f"unknown VGG19 layer {layer!r}; choose one of {names}") from None
    if pooling == "window_max":
        features = _with_window_max_pooling(vgg, layer, name=f"vgg19_{layer}_{weights}")
    elif pooling == "max_pool":
        features = keras.Model(vgg.input, vgg.get_layer(layer).output, name=f"vgg19_{layer}_{weights}")
    else:
        raise ValueError(f"pooling must be 'max_pool' or 'window_max', got {pooling!r}")
    features.trainable = False
    return features


def vgg_preprocess(images: tf.Tensor, mode: str = "paper") -> tf.Tensor:
    """Map [-1, 1] RGB images to VGG input. ``paper``: caffe BGR, mean-subtracted, 0..255; ``raw``: unchanged."""
    if mode == "raw":
        return images
    if mode != "paper":
        raise ValueError(f"VGG preprocessing must be 'paper' or 'raw', got {mode!r}")
    pixels = (images + 1.0) * 127.5
    bgr = pixels[..., ::-1]
    return bgr - tf.constant(VGG_BGR_MEANS, dtype=bgr.dtype)


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
            build_vgg_feature_extractor(config.content_layer, config.vgg_weights, seed, pooling=pooling)
            if self.kind == "vgg" else None
        )

    def features(self, images: tf.Tensor) -> tf.Tensor:
        feats = self.vgg(vgg_preprocess(tf.cast(images, tf.float32), self.config.vgg_preprocessing), training=False)
        return tf.cast(feats, tf.float32) * self.scale

    def __call__(self, hr: tf.Tensor, sr: tf.Tensor, hr_features: tf.Tensor | None = None) -> tf.Tensor:
        if self.kind == "mse":
            return pixel_mse(hr, sr)
        if hr_features is None:
            hr_features = tf.stop_gradient(self.features(hr))
        return tf.reduce_mean(tf.square(hr_features - self.features(sr)))

    def per_example(self, hr: tf.Tensor, sr: tf.Tensor, hr_features: tf.Tensor | None = None) -> tf.Tensor:
        """The content loss of each image, shape (batch,); its mean is ``__call__``'s value."""
        if self.kind == "mse":
            return pixel_mse_per_example(hr, sr)
        if hr_features is None:
            hr_features = tf.stop_gradient(self.features(hr))
        return _mean_per_example(tf.square(hr_features - self.features(sr)))

    def feature_shape(self, hr_size: int) -> tuple[int, ...]:
        """Shape of ``features`` of one ``hr_size`` x ``hr_size`` image (for the HR feature cache)."""
        spec = self.vgg.compute_output_shape((1, hr_size, hr_size, 3))
        return tuple(int(d) for d in spec[1:])


def pixel_mse(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
    """Mean squared error in the [-1, 1] pixel scale."""
    return tf.reduce_mean(tf.square(tf.cast(hr, tf.float32) - tf.cast(sr, tf.float32)))


def _mean_per_example(values: tf.Tensor) -> tf.Tensor:
    """Mean over every axis but the first: (batch, ...) -> (batch,)."""
    return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def pixel_mse_per_example(hr: tf.Tensor, sr: tf.Tensor) -> tf.Tensor:
    """Pixel MSE of each image, shape (batch,)."""
    return _mean_per_example(tf.square(tf.cast(hr, tf.float32) - tf.cast(sr, tf.float32)))


def global_batch_mean(per_example: tf.Tensor, global_batch_size: int | tf.Tensor) -> tf.Tensor:
    """``sum(per_example) / global_batch_size`` (``tf.nn.compute_average_loss``).

    On one device with the whole batch this is the plain mean; on each of N replicas holding
    1/N of the batch, the N values (and their gradients) add up to the global-batch mean.
    """
    per_example = tf.cast(per_example, tf.float32)
    return tf.reduce_sum(per_example) / tf.cast(global_batch_size, tf.float32)


def noisy_labels(
    batch_size: int | tf.Tensor, mean: float, std: float, seed: tf.Tensor
) -> tf.Tensor:
    """Per-sample soft labels ~ N(mean, std) clipped to [0, 1], shape (batch, 1).

    ``seed`` is a shape-(2,) int tensor (e.g. ``[run_seed, step]``): the labels of a step are a
    pure function of it, so a resumed run draws exactly the labels an uninterrupted run would.
    """
    labels = mean + std * tf.random.stateless_normal(tf.stack([batch_size, 1]), seed=seed)
    return tf.clip_by_value(labels, 0.0, 1.0)


def bce_with_logits(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean binary cross-entropy (nats) from logits; exact for soft labels in [0, 1]."""
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32), logits=logits))


def bce_with_logits_per_example(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy of each example, shape (batch,); its mean is ``bce_with_logits``."""
    logits = tf.cast(logits, tf.float32)
    values = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32), logits=logits)
    return _mean_per_example(values)


def discriminator_loss(
    real_logits: tf.Tensor, fake_logits: tf.Tensor, real_labels: tf.Tensor, fake_labels: tf.Tensor
) -> tf.Tensor:
    """BCE(real labels, D(HR)) + BCE(fake labels, D(SR)), as the original summed the two batches."""
    return bce_with_logits(real_labels, real_logits) + bce_with_logits(fake_labels, fake_logits)


def generator_adversarial_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """BCE(1, D(SR)): the generator is rewarded when D calls its output real."""
    return bce_with_logits(tf.ones_like(fake_logits, dtype=tf.float32), fake_logits)
