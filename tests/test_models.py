"""Generator and discriminator: shapes, parameter counts, names, save/reload."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_module

keras = require_module("keras")

from upsampler.models import (  # noqa: E402
    PixelShuffle,
    build_discriminator,
    build_generator,
    load_generator,
    parameter_counts,
)


def test_generator_parameter_count_pixel_shuffle_is_about_1_55_million():
    counts = parameter_counts(build_generator())
    # 9x9 head + 16 residual blocks + trunk + two (conv 256, shuffle, PReLU) + 9x9 tail.
    assert counts["total"] == 1_554_883
    assert abs(counts["total"] - 1.55e6) / 1.55e6 < 0.01


def test_generator_parameter_count_original_nearest_is_about_2_04_million():
    counts = parameter_counts(build_generator(upsample="nearest"))
    assert abs(counts["total"] - 2.04e6) / 2.04e6 < 0.01


def test_discriminator_parameter_count_at_176_is_about_68_1_million():
    model = build_discriminator(hr_size=176)
    counts = parameter_counts(model)
    assert abs(counts["total"] - 68.1e6) / 68.1e6 < 0.005
    dense = model.get_layer("dense_0")
    assert dense.count_params() == 11 * 11 * 512 * 1024 + 1024  # the 63.4 M Dense layer


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
    out = np.asarray(d(np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32) * 100))
    assert out.shape == (3, 1)
    # Logits, not probabilities: unbounded.
    assert np.abs(out).max() > 1.0


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
