"""SRGAN generator and discriminator (Ledig et al., CVPR 2017), as used by the study.

Builders return ``keras.Model`` objects whose keyword defaults are the study's settings, and
name every layer so code can address them by name (``model.get_layer("res_block_3_conv_1")``).
Images enter and leave the generator in [-1, 1] (``x / 127.5 - 1``), NHWC.

Custom layers are registered with Keras, so ``keras.models.load_model("generator.keras")``
reloads a saved generator after ``import upsampler.archs.srgan`` without ``safe_mode=False``.
"""

from __future__ import annotations

import math

import keras
from keras import layers

PACKAGE = "upsampler"


def depth_to_space(x, factor: int):
    """``tf.nn.depth_to_space`` (NHWC, DCR order) through ``keras.ops``, on every backend:
    channel ``(i * r + j) * C + c`` goes to sub-pixel ``(i, j)`` of output channel ``c``."""
    from keras import ops

    r = int(factor)
    _, h, w, c = x.shape
    c_out = c // (r * r)
    n = ops.shape(x)[0]
    h = ops.shape(x)[1] if h is None else h
    w = ops.shape(x)[2] if w is None else w
    x = ops.reshape(x, (n, h, w, r, r, c_out))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (n, h * r, w * r, c_out))


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelShuffle(layers.Layer):
    """Sub-pixel convolution's rearrangement: (H, W, C * r^2) -> (H * r, W * r, C)."""

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, inputs):
        return depth_to_space(inputs, self.factor)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        r = self.factor
        return (b, None if h is None else h * r, None if w is None else w * r, None if c is None else c // (r * r))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training-mode call is one fused kernel.

    Keras 3 normalises with separate moments / normalise ops (and as many again in the
    backward pass); TensorFlow's ``FusedBatchNormV3`` (oneDNN on CPU, cuDNN on GPU) does the
    same maths in one op each way. Same weights, same moving-average update (the biased batch
    variance, as Keras), same inference path. Falls back to the Keras implementation for
    cross-replica (``synchronized``) statistics on several replicas, masks, renorm, or a
    channel axis other than the last of a 4-D input.
    """

    def _fusable(self, inputs) -> bool:
        import tensorflow as tf

        if len(inputs.shape) != 4 or self.axis not in (-1, 3) or self.renorm or not (self.center and self.scale):
            return False
        if self.synchronized and tf.distribute.get_replica_context() is not None \
                and tf.distribute.get_replica_context().num_replicas_in_sync > 1:
            return False
        return keras.backend.backend() == "tensorflow"

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or not self._fusable(inputs):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)  # as Keras: statistics in float32 under mixed precision
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32), epsilon=self.epsilon,
            is_training=True,
        )
        # The fused op returns the Bessel-corrected batch variance; Keras averages the biased one.
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FastPReLU(layers.PReLU):
    """``keras.layers.PReLU`` computed as ``relu(x) + alpha * min(x, 0)``: bit-identical values
    (Keras computes ``relu(x) - alpha * relu(-x)``) with fewer elementwise ops each way."""

    def call(self, inputs):
        import tensorflow as tf

        return tf.nn.relu(inputs) + self.alpha * tf.minimum(inputs, tf.zeros([], inputs.dtype))


def space_to_depth_kernel(kernel):
    """The (t, t, 4 cin, 4 cout) kernel that, applied ("same") to ``space_to_depth(x, 2)``, gives
    ``space_to_depth(conv_same(x, kernel), 2)`` for an odd k x k x cin x cout ``kernel``.

    Built from static pads, slices, reshapes and transposes only (no gather), so its gradient
    is deterministic and compiles under XLA. Coarse tap ``ty`` with input phase ``ai`` and
    output phase ``ao`` uses fine row ``dy = 2 ty + ai - ao + s0``.
    """
    import tensorflow as tf

    k, cin, cout = int(kernel.shape[0]), int(kernel.shape[2]), int(kernel.shape[3])
    p = k // 2
    lo = -((p + 1) // 2)
    t = 2 * ((p + 1) // 2) + 1
    s0 = p + 2 * lo
    before = 1 - s0
    after = 2 * t + 1 - k - before
    padded = tf.pad(kernel, [[before, after], [before, after], [0, 0], [0, 0]])  # (2t + 1)^2
    blocks = []
    for ao in range(2):
        for bo in range(2):
            part = padded[1 - ao: 1 - ao + 2 * t, 1 - bo: 1 - bo + 2 * t]  # rows 2 ty + ai
            part = tf.reshape(part, [t, 2, t, 2, cin, cout])
            part = tf.transpose(part, [0, 2, 1, 3, 4, 5])  # (ty, tx, ai, bi, c, o)
            blocks.append(tf.reshape(part, [t, t, 4 * cin, cout]))
    return tf.reshape(tf.stack(blocks, axis=3), [t, t, 4 * cin, 4 * cout])  # channel (ao * 2 + bo) * cout + o


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpaceToDepthConv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` (stride 1, "same", odd kernel) computed on the 2x2
    space-to-depth grid when the input's height and width are even and known.

    Meant for convolutions with very few output channels on large maps - the generator's final
    9x9, 64 -> 3 layer at 176 x 176, which CPU convolution kernels run at a fraction of their
    speed because they vectorise over output channels. On the space-to-depth grid it is a
    5x5, 256 -> 12 convolution over a quarter of the positions: the same sums (23% more
    multiplications by structural zeros), about twice as fast forward and backward on CPU.
    Same weights (the stored kernel stays k x k x cin x cout; the coarse kernel is rebuilt
    from it every call by :func:`space_to_depth_kernel`, so gradients flow to it); any other
    input uses the plain convolution.
    """

    def _coarse_ok(self, inputs) -> bool:
        h, w = inputs.shape[1], inputs.shape[2]
        k = self.kernel_size[0]
        return (keras.backend.backend() == "tensorflow" and self.rank == 2 and self.data_format == "channels_last"
                and self.padding == "same" and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1)
                and self.groups == 1 and self.kernel_size[1] == k and k % 2 == 1
                and h is not None and w is not None and h % 2 == 0 and w % 2 == 0)

    def convolution_op(self, inputs, kernel):
        if not self._coarse_ok(inputs):
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        coarse = space_to_depth_kernel(tf.cast(kernel, inputs.dtype))
        y = tf.nn.conv2d(tf.nn.space_to_depth(inputs, 2), coarse, strides=1, padding="SAME")
        return tf.nn.depth_to_space(y, 2)


# Layer variants of the builders (``variant=``): "stock" - stock Keras layers (and the registered
# PixelShuffle); "fast" - the fused training-time layers above (same weights, names and values);
# "portable" - stock layers only, the shuffle as a fixed transposed convolution, so a saved file
# loads with plain Keras in a process that never imports upsampler. Saved files of any kind load here.
VARIANTS = ("stock", "fast", "portable")


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return variant


def _bn(variant: str, **kwargs):
    return (FusedBatchNormalization if variant == "fast" else layers.BatchNormalization)(**kwargs)


def _prelu(variant: str, **kwargs):
    return (FastPReLU if variant == "fast" else layers.PReLU)(**kwargs)


def _output_conv(variant: str, *args, **kwargs):
    return (SpaceToDepthConv2D if variant == "fast" else layers.Conv2D)(*args, **kwargs)


def shuffle_kernel(channels: int):
    """The (2, 2, C, 4 C) one-hot kernel that makes a 2x2, stride-2 transposed convolution a pixel
    shuffle (``depth_to_space(x, 2)``): input channel ``(2 i + j) C + c`` goes to output channel
    ``c`` at sub-pixel ``(i, j)``. Each output is one product ``1.0 * x`` plus exact zeros, so the
    result equals the shuffle bit for bit."""
    import numpy as np

    kernel = np.zeros((2, 2, channels, 4 * channels), np.float32)
    for i in range(2):
        for j in range(2):
            kernel[i, j, np.arange(channels), (2 * i + j) * channels + np.arange(channels)] = 1.0
    return kernel


def _shuffle(variant: str, channels: int, name: str):
    if variant == "portable":
        return layers.Conv2DTranspose(channels, 2, strides=2, padding="valid", use_bias=False, trainable=False,
                                      name=name)
    return PixelShuffle(2, name=name)


def _upsample_steps(scale: int) -> int:
    steps = int(round(math.log2(scale)))
    if scale < 2 or 2**steps != scale:
        raise ValueError(f"scale must be a power of two >= 2, got {scale}")
    return steps


def build_generator(
    *,
    scale: int = 4,
    num_blocks: int = 16,
    filters: int = 64,
    upsample: str = "pixel_shuffle",
    bn_momentum: float = 0.5,
    input_size: int | None = None,
    bias_before_bn: bool = False,
    name: str = "generator",
    variant: str = "stock",
) -> keras.Model:
    """SRResNet generator: LR image in [-1, 1] -> SR image in [-1, 1] (``scale`` times larger).

    Conv9x9 -> PReLU; ``num_blocks`` residual blocks (Conv3x3-BN-PReLU-Conv3x3-BN + skip);
    Conv3x3-BN + long skip; log2(scale) upsampling blocks; Conv9x9 -> tanh.

    Args:
        scale: upscaling factor, a power of two (the study: 4).
        num_blocks: residual blocks (the study: 16).
        filters: feature maps in the trunk (the study: 64).
        upsample: ``"pixel_shuffle"`` (the SRGAN paper: Conv 4*filters -> PixelShuffle(2) ->
            PReLU; ~1.55 M parameters at the defaults) or ``"nearest"`` (the original study:
            Conv 256 -> UpSampling2D(2) -> LeakyReLU(0.2); ~2.04 M parameters).
        bn_momentum: BatchNormalization momentum (the original's 0.5).
        input_size: fixes the LR side; ``None`` (default) accepts any size, which tiled
            inference relies on.
        bias_before_bn: give the convolutions in front of a BatchNormalization a bias (the
            original's Keras default). BatchNorm subtracts the batch mean, so such a bias has no
            effect and a zero gradient in exact arithmetic; its float noise only feeds Adam.
        variant: ``"stock"``, ``"fast"`` (fused training-time layers; the trainer's choice) or
            ``"portable"`` (plain Keras only; see :func:`portable_generator`). Same weights and
            layer names in all three.
    """
    _check_variant(variant)
    if upsample not in ("pixel_shuffle", "nearest"):
        raise ValueError(f"upsample must be 'pixel_shuffle' or 'nearest', got {upsample!r}")
    steps = _upsample_steps(scale)

    lr = keras.Input(shape=(input_size, input_size, 3), name="lr")
    x = layers.Conv2D(filters, 9, padding="same", name="head_conv")(lr)
    x = _prelu(variant, shared_axes=[1, 2], name="head_prelu")(x)
    head = x
    for b in range(num_blocks):
        skip = x
        x = layers.Conv2D(filters, 3, padding="same", use_bias=bias_before_bn, name=f"res_block_{b}_conv_1")(x)
        x = _bn(variant, momentum=bn_momentum, name=f"res_block_{b}_bn_1")(x)
        x = _prelu(variant, shared_axes=[1, 2], name=f"res_block_{b}_prelu")(x)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=bias_before_bn, name=f"res_block_{b}_conv_2")(x)
        x = _bn(variant, momentum=bn_momentum, name=f"res_block_{b}_bn_2")(x)
        x = layers.Add(name=f"res_block_{b}_add")([skip, x])
    x = layers.Conv2D(filters, 3, padding="same", use_bias=bias_before_bn, name="trunk_conv")(x)
    x = _bn(variant, momentum=bn_momentum, name="trunk_bn")(x)
    x = layers.Add(name="trunk_add")([head, x])
    for u in range(steps):
        if upsample == "pixel_shuffle":
            x = layers.Conv2D(filters * 4, 3, padding="same", name=f"upsample_{u}_conv")(x)
            x = _shuffle(variant, filters, f"upsample_{u}_shuffle")(x)
            x = _prelu(variant, shared_axes=[1, 2], name=f"upsample_{u}_prelu")(x)
        else:
            x = layers.Conv2D(256, 3, padding="same", name=f"upsample_{u}_conv")(x)
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"upsample_{u}_nearest")(x)
            x = layers.LeakyReLU(negative_slope=0.2, name=f"upsample_{u}_lrelu")(x)
    sr = _output_conv(variant, 3, 9, padding="same", activation="tanh", name="sr", dtype="float32")(x)
    model = keras.Model(lr, sr, name=name)
    if variant == "portable":
        for u in range(steps if upsample == "pixel_shuffle" else 0):
            model.get_layer(f"upsample_{u}_shuffle").set_weights([shuffle_kernel(filters)])
    return model


DISCRIMINATOR_BLOCKS = ((1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2))  # (filter multiple, stride)
DISCRIMINATOR_HEADS = ("pooled", "flatten")


def build_discriminator(
    *,
    hr_size: int = 176,
    filters: int = 64,
    dense_units: int = 1024,
    head: str = "pooled",
    bn_momentum: float = 0.5,
    bias_before_bn: bool = False,
    name: str = "discriminator",
    variant: str = "stock",
) -> keras.Model:
    """SRGAN discriminator: HR-sized image in [-1, 1] -> one real/fake **logit** per image.

    Conv3x3(64)-LeakyReLU, then seven Conv3x3-BN-LeakyReLU blocks with (filters, stride)
    (64,2) (128,1) (128,2) (256,1) (256,2) (512,1) (512,2), the head, Dense(1024)-LeakyReLU,
    Dense(1). The sigmoid of the study is not part of the model: losses are computed on
    logits (numerically stable; the original's clipped probabilities saturated and passed no
    gradient).

    Args:
        head: ``"pooled"`` (default): global average pooling of the 512 final maps before the
            Dense(1024), ~5.2 M parameters at any size. ``"flatten"``: the paper's and the
            study's Flatten, whose Dense(1024) alone has (hr_size/16)^2 x 512 x 1024
            parameters - 63.4 M of the 68.1 M at 176x176 - read, differentiated and updated by
            Adam every step.
        bias_before_bn: as in :func:`build_generator` (the seven convolutions in front of BN).
    """
    _check_variant(variant)
    if hr_size % 16:
        raise ValueError(f"hr_size must be divisible by 16 (four stride-2 blocks), got {hr_size}")
    if head not in DISCRIMINATOR_HEADS:
        raise ValueError(f"head must be one of {DISCRIMINATOR_HEADS}, got {head!r}")
    hr = keras.Input(shape=(hr_size, hr_size, 3), name="image")
    x = layers.Conv2D(filters, 3, padding="same", name="conv_0")(hr)
    x = layers.LeakyReLU(negative_slope=0.2, name="lrelu_0")(x)
    for i, (multiple, stride) in enumerate(DISCRIMINATOR_BLOCKS, start=1):
        x = layers.Conv2D(filters * multiple, 3, strides=stride, padding="same", use_bias=bias_before_bn,
                          name=f"conv_{i}")(x)
        x = _bn(variant, momentum=bn_momentum, name=f"bn_{i}")(x)
        x = layers.LeakyReLU(negative_slope=0.2, name=f"lrelu_{i}")(x)
    if head == "flatten":
        x = layers.Flatten(name="flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(dense_units, name="dense_0")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name="dense_lrelu")(x)
    logit = layers.Dense(1, name="logit", dtype="float32")(x)
    return keras.Model(hr, logit, name=name)


def build_models_from_config(config, variant: str = "stock") -> tuple[keras.Model, keras.Model]:
    """Generator and discriminator for an :class:`upsampler.config.Config`."""
    m, d = config.model, config.data
    generator = build_generator(
        scale=d.scale, num_blocks=m.num_blocks, filters=m.filters, upsample=m.upsample, bn_momentum=m.bn_momentum,
        bias_before_bn=m.bias_before_bn, variant=variant,
    )
    discriminator = build_discriminator(
        hr_size=d.train_hr_size, filters=m.disc_filters, dense_units=m.disc_dense_units, head=m.disc_head,
        bn_momentum=m.bn_momentum, bias_before_bn=m.bias_before_bn, variant=variant if variant != "portable" else "stock",
    )
    return generator, discriminator


def generator_settings(generator: keras.Model) -> dict:
    """The :func:`build_generator` arguments of a built generator, read from its named layers."""
    names = [layer.name for layer in generator.layers]
    steps = sum(1 for n in names if n.startswith("upsample_") and n.endswith("_conv"))
    bn = generator.get_layer("trunk_bn")
    return {
        "scale": 2 ** steps,
        "num_blocks": sum(1 for n in names if n.startswith("res_block_") and n.endswith("_conv_1")),
        "filters": int(generator.get_layer("head_conv").filters),
        "upsample": "nearest" if "upsample_0_nearest" in names else "pixel_shuffle",
        "bn_momentum": float(bn.momentum),
        "bias_before_bn": bool(generator.get_layer("trunk_conv").use_bias),
    }


def portable_generator(generator: keras.Model, target: keras.Model | None = None) -> keras.Model:
    """A plain-Keras copy of ``generator`` (any variant) with its weights: saved, it loads with
    ``keras.models.load_model`` without importing upsampler, and computes the same outputs
    (bit for bit on the same code path). ``target``: an earlier result to refill in place."""
    if target is None:
        previous = keras.mixed_precision.dtype_policy()
        keras.mixed_precision.set_dtype_policy("float32")
        try:
            target = build_generator(**generator_settings(generator), variant="portable", name=generator.name)
        finally:
            keras.mixed_precision.set_dtype_policy(previous)
    for layer in target.layers:
        if layer.weights and not layer.name.endswith("_shuffle"):
            layer.set_weights(generator.get_layer(layer.name).get_weights())
    return target


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Trainable, non-trainable and total parameter counts."""
    import numpy as np

    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    frozen = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    return {"trainable": trainable, "non_trainable": frozen, "total": trainable + frozen}


def load_generator(path) -> keras.Model:
    """Load a saved ``generator.keras``, or a shipped generator by name (``"model_b"``; see
    :mod:`upsampler.pretrained`). Custom layers are registered by this module."""
    from upsampler.pretrained import resolve

    path = resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such generator file")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for a bad archive
        raise ValueError(f"{path}: not a loadable Keras model ({exc})") from exc
