"""Generator and discriminator: shapes, parameter counts, names, save/reload."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import require_module

keras = require_module("keras")

from upsampler.archs.srgan import (  # noqa: E402
    PixelShuffle,
    build_discriminator,
    build_generator,
    load_generator,
    parameter_counts,
)


def test_generator_parameter_count_pixel_shuffle_is_about_1_55_million():
    counts = parameter_counts(build_generator())
    # 9x9 head + 16 residual blocks + trunk + two (conv 256, shuffle, PReLU) + 9x9 tail; no biases in
    # front of BatchNorm (16 x 2 x 64 + 64 = 2,112 fewer than the original's Keras defaults).
    assert counts["total"] == 1_552_771
    assert parameter_counts(build_generator(bias_before_bn=True))["total"] == 1_552_771 + 2_112
    assert abs(counts["total"] - 1.55e6) / 1.55e6 < 0.01


def test_generator_parameter_count_original_nearest_is_about_2_04_million():
    counts = parameter_counts(build_generator(upsample="nearest", bias_before_bn=True))
    assert abs(counts["total"] - 2.04e6) / 2.04e6 < 0.01


def test_discriminator_with_the_studys_flatten_head_has_68_1_million_parameters_at_176():
    model = build_discriminator(hr_size=176, head="flatten", bias_before_bn=True)
    counts = parameter_counts(model)
    assert abs(counts["total"] - 68.1e6) / 68.1e6 < 0.005
    dense = model.get_layer("dense_0")
    assert dense.count_params() == 11 * 11 * 512 * 1024 + 1024  # the 63.4 M Dense layer


def test_discriminator_pooled_head_drops_the_63_million_dense_weights_and_is_size_independent():
    pooled = build_discriminator(hr_size=176)
    assert pooled.get_layer("dense_0").count_params() == 512 * 1024 + 1024
    total = parameter_counts(pooled)["total"]
    assert total == parameter_counts(build_discriminator(hr_size=96))["total"]  # any input size, same weights
    flatten = parameter_counts(build_discriminator(hr_size=176, head="flatten"))["total"]
    assert flatten - total == (11 * 11 - 1) * 512 * 1024  # only the Dense kernel differs
    assert 5.0e6 < total < 5.4e6
    with pytest.raises(ValueError, match="head must be one of"):
        build_discriminator(head="patch")


def test_no_convolution_in_front_of_batch_norm_has_a_bias_unless_asked():
    import keras

    for model in (build_generator(num_blocks=2, filters=8), build_discriminator(hr_size=32, filters=8, dense_units=16)):
        layers = model.layers
        for before, after in zip(layers, layers[1:]):
            if isinstance(after, keras.layers.BatchNormalization):
                assert isinstance(before, keras.layers.Conv2D) and not before.use_bias, (model.name, before.name)
    d = build_discriminator(hr_size=32, filters=8, dense_units=16, bias_before_bn=True)
    assert d.get_layer("conv_3").use_bias


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_scales_any_input_size(scale):
    model = build_generator(scale=scale, num_blocks=1, filters=8)
    out = model(np.zeros((2, 13, 7, 3), np.float32))
    assert out.shape == (2, 13 * scale, 7 * scale, 3)


def test_generator_output_is_in_tanh_range():
    model = build_generator(num_blocks=1, filters=8)
    out = np.asarray(model(np.random.default_rng(0).uniform(-1, 1, (1, 11, 11, 3)).astype(np.float32) * 50))
    assert out.min() >= -1.0 and out.max() <= 1.0


@pytest.mark.parametrize("scale", [3, 6, 1])
def test_generator_rejects_scales_that_are_not_powers_of_two(scale):
    with pytest.raises(ValueError, match="power of two"):
        build_generator(scale=scale)


def test_layers_are_named():
    g = build_generator(num_blocks=2, filters=8)
    assert g.get_layer("res_block_1_conv_2").filters == 8
    assert isinstance(g.get_layer("upsample_0_shuffle"), PixelShuffle)
    d = build_discriminator(hr_size=32, filters=8, dense_units=16)
    assert d.get_layer("conv_7").strides == (2, 2)


def test_discriminator_returns_one_logit_per_image():
    d = build_discriminator(hr_size=32, filters=8, dense_units=16)
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    out = np.asarray(d(x))
    assert out.shape == (3, 1)
    # Logits, not probabilities: a large last layer gives values far outside [0, 1].
    kernel, bias = d.get_layer("logit").get_weights()
    d.get_layer("logit").set_weights([np.full_like(kernel, 50.0), bias + 20.0])
    assert np.abs(np.asarray(d(x))).max() > 1.0


def test_pixel_shuffle_matches_depth_to_space_layout():
    x = np.arange(1 * 1 * 1 * 12, dtype=np.float32).reshape(1, 1, 1, 12)
    y = np.asarray(PixelShuffle(2)(x))
    assert y.shape == (1, 2, 2, 3)
    # Channel block k of the input goes to sub-pixel position (k // 2, k % 2).
    np.testing.assert_array_equal(y[0, 0, 1], [3, 4, 5])
    np.testing.assert_array_equal(y[0, 1, 0], [6, 7, 8])


def test_saved_generator_reloads_without_unsafe_mode_and_gives_identical_outputs(tmp_path):
    model = build_generator()
    x = np.random.default_rng(1).uniform(-1, 1, (2, 20, 16, 3)).astype(np.float32)
    before = np.asarray(model(x, training=False))
    path = tmp_path / "generator.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # safe_mode stays at its default (True)
    np.testing.assert_array_equal(np.asarray(reloaded(x, training=False)), before)
    np.testing.assert_array_equal(np.asarray(load_generator(path)(x, training=False)), before)


def test_load_generator_names_a_missing_or_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        load_generator(tmp_path / "nope.keras")
    bad = tmp_path / "bad.keras"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="bad.keras"):
        load_generator(bad)


def test_pixel_shuffle_kernel_is_depth_to_space():
    import tensorflow as tf

    from upsampler.archs.srgan import shuffle_kernel

    x = np.random.default_rng(0).normal(size=(2, 5, 7, 12)).astype(np.float32)
    conv = keras.layers.Conv2DTranspose(3, 2, strides=2, padding="valid", use_bias=False)
    conv.build((None, None, None, 12))
    conv.set_weights([shuffle_kernel(3)])
    np.testing.assert_array_equal(np.asarray(conv(x)), tf.nn.depth_to_space(x, 2).numpy())


def test_portable_generator_has_stock_layers_and_the_same_outputs(tmp_path):
    from upsampler.utils import hardware
    from upsampler.archs.srgan import build_generator, generator_settings, portable_generator

    keras.utils.set_random_seed(1)
    fast = build_generator(num_blocks=2, filters=8, bn_momentum=0.9, variant="fast")
    stock = build_generator(num_blocks=2, filters=8, bn_momentum=0.9, variant="stock")
    stock.set_weights(fast.get_weights())
    assert generator_settings(fast) == {"scale": 4, "num_blocks": 2, "filters": 8, "upsample": "pixel_shuffle",
                                        "bn_momentum": 0.9, "bias_before_bn": False}
    portable = portable_generator(fast)
    assert all(type(layer).__module__.startswith("keras") for layer in portable.layers)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 11, 13, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(portable(x)), np.asarray(stock(x)))
    np.testing.assert_allclose(np.asarray(portable(x)), np.asarray(fast(x)), atol=1e-5)
    path = tmp_path / "g.keras"
    portable.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(portable(x)))
    script = (
        "import sys, numpy as np, keras\n"
        "m = keras.models.load_model(sys.argv[1], compile=False)\n"
        "assert not any(k.startswith('upsampler') for k in sys.modules), 'upsampler was imported'\n"
        "y = np.asarray(m(np.load(sys.argv[2])))\n"
        "np.testing.assert_array_equal(y, np.load(sys.argv[3]))\n"
        "print('ok')\n"
    )
    # Bit for bit needs the CPU kernels this process runs (oneDNN's and Eigen's round differently),
    # chosen here by the variable, since the loading process must not import upsampler.
    kernels = {hardware.ONEDNN_ENV: "1" if hardware.onednn_enabled() else "0"}
    result = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **kernels})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
