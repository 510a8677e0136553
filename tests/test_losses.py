"""Losses: noisy labels, BCE on logits, VGG content loss, gradient flow."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_module

tf = require_module("tensorflow")

from upsampler.losses import srgan as losses  # noqa: E402
from upsampler.config import LossConfig  # noqa: E402
from upsampler.archs.srgan import build_discriminator, build_generator  # noqa: E402


def test_noisy_labels_have_the_study_distribution_and_are_reproducible():
    seed = tf.constant([7, 3], tf.int32)
    real = losses.noisy_labels(20000, 0.9, 0.05, seed).numpy()
    assert real.shape == (20000, 1)
    assert abs(real.mean() - 0.9) < 0.002 and abs(real.std() - 0.05) < 0.002
    assert real.min() >= 0.0 and real.max() <= 1.0
    np.testing.assert_array_equal(real, losses.noisy_labels(20000, 0.9, 0.05, seed).numpy())
    other = losses.noisy_labels(20000, 0.9, 0.05, tf.constant([7, 4], tf.int32)).numpy()
    assert not np.array_equal(real, other)


def test_noisy_labels_are_clipped_to_unit_interval():
    labels = losses.noisy_labels(1000, 0.99, 0.5, tf.constant([0, 0], tf.int32)).numpy()
    assert labels.min() >= 0.0 and labels.max() <= 1.0


def test_bce_with_logits_matches_the_formula():
    logits = np.array([[-3.0], [0.0], [2.5]], np.float32)
    labels = np.array([[0.1], [0.9], [0.95]], np.float32)
    p = 1 / (1 + np.exp(-logits))
    expected = np.mean(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    assert float(losses.bce_with_logits(labels, logits)) == pytest.approx(expected, rel=1e-6)


def test_a_confident_discriminator_still_gets_gradient_unlike_the_originals_clipped_bce():
    """The original's D output 1.0 for everything; clipped BCE then has zero gradient."""
    logits = tf.Variable([[30.0], [30.0]])
    labels = tf.constant([[0.1], [0.1]])  # fake images that D calls real with certainty
    with tf.GradientTape() as tape:
        loss = losses.bce_with_logits(labels, logits)
    grad = tape.gradient(loss, logits).numpy()
    assert np.isfinite(float(loss)) and float(loss) > 20
    assert np.all(np.abs(grad) > 0.4)  # d/dlogit = sigmoid(30) - 0.1 ~ 0.9, halved by the mean

    with tf.GradientTape() as tape:
        p = tf.clip_by_value(tf.sigmoid(logits), 1e-7, 1 - 1e-7)
        clipped = -tf.reduce_mean(labels * tf.math.log(p) + (1 - labels) * tf.math.log(1 - p))
    assert np.all(tape.gradient(clipped, logits).numpy() == 0.0)


def test_adversarial_term_sends_gradient_to_both_generator_and_discriminator():
    g = build_generator(num_blocks=1, filters=8)
    d = build_discriminator(hr_size=32, filters=8, dense_units=16)
    rng = np.random.default_rng(0)
    lr = tf.constant(rng.uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32))
    hr = tf.constant(rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32))
    real_labels = losses.noisy_labels(4, 0.9, 0.05, tf.constant([0, 1]))
    fake_labels = losses.noisy_labels(4, 0.1, 0.05, tf.constant([0, 2]))
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
        sr = g(lr, training=True)
        fake = d(sr, training=True)
        real = d(hr, training=True)
        adversarial = losses.generator_adversarial_loss(fake)
        d_loss = losses.discriminator_loss(real, fake, real_labels, fake_labels)
    g_grads = g_tape.gradient(adversarial, g.trainable_variables)
    d_grads = d_tape.gradient(d_loss, d.trainable_variables)
    assert all(gr is not None for gr in g_grads) and all(gr is not None for gr in d_grads)
    # Every generator kernel receives signal from the adversarial term alone.
    kernels = [gr for v, gr in zip(g.trainable_variables, g_grads) if "kernel" in v.path]
    assert kernels and all(float(tf.norm(gr)) > 0 for gr in kernels)
    assert all(float(tf.norm(gr)) > 0 for v, gr in zip(d.trainable_variables, d_grads) if "kernel" in v.path)


def test_vgg_paper_preprocessing_is_caffe_bgr_minus_means():
    white = tf.ones((1, 1, 1, 3))
    out = losses.vgg_preprocess(white, "paper").numpy().ravel()
    np.testing.assert_allclose(out, 255.0 - np.array(losses.VGG_BGR_MEANS), rtol=1e-6)
    red = tf.constant([[[[1.0, -1.0, -1.0]]]])
    out = losses.vgg_preprocess(red, "paper").numpy().ravel()
    assert out[2] == pytest.approx(255.0 - 123.68)  # red lands in the last (BGR) channel
    np.testing.assert_array_equal(losses.vgg_preprocess(red, "raw").numpy(), red.numpy())


def test_untrained_vgg_content_loss_is_deterministic_and_discriminative():
    config = LossConfig(content_layer="block2_conv2", content_network="untrained")
    a, b = losses.ContentLoss(config, seed=3), losses.ContentLoss(config, seed=3)
    rng = np.random.default_rng(0)
    hr = tf.constant(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))
    sr = tf.constant(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32))
    assert float(a(hr, hr)) == 0.0
    value = float(a(hr, sr))
    assert value > 0 and value == float(b(hr, sr))
    assert float(losses.ContentLoss(config, seed=4)(hr, sr)) != value


def test_imagenet_vgg_unavailable_gives_a_clear_message(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.applications, "VGG19", offline)
    with pytest.raises(RuntimeError, match="content_network=vgg16-hed"):
        losses.build_vgg_feature_extractor("block5_conv4", "vgg19")


def test_unknown_vgg_layer_is_named():
    with pytest.raises(ValueError, match="block9_conv1"):
        losses.build_vgg_feature_extractor("block9_conv1", "untrained")


def test_pixel_mse():
    assert float(losses.pixel_mse(tf.zeros((1, 2, 2, 3)), tf.ones((1, 2, 2, 3)))) == 1.0
