"""tf.distribute: one step on two replicas == one step on one device with the same global batch.

Runs in a subprocess because the two logical CPU devices must be configured before
TensorFlow initialises (the rest of the suite has long since initialised it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import require_module

require_module("tensorflow")

SCRIPT = textwrap.dedent(
    r'''
    import json, sys, tempfile
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from upsampler.training import distribute
    from upsampler.tools.measure import synthetic_arrays
    from upsampler.config import get_profile
    from upsampler.training.trainer import SRGANTrainer

    out = {}
    # At the study's Adam epsilon 1e-8. Adam's first step is lr * g / (|g| + eps): a gradient that
    # is zero in exact arithmetic but not in floats (a conv bias in front of BatchNorm) would turn
    # the replicas' different summation order into differences up to lr. The networks have no such
    # biases (models.build_*: bias_before_bn=False), so nothing is amplified.
    config = get_profile("smoke").override(["train.batch_size=4", "train.steps_per_epoch=2"])
    assert config.train.epsilon == 1e-8 and not config.model.bias_before_bn
    lr, hr = synthetic_arrays(8, config.data.lr_size, config.data.hr_size, seed=3)

    def weights(trainer):
        return [np.array(v) for v in trainer.generator.weights + trainer.discriminator.weights]

    def weight_diff(a, b):
        """Max |difference| over every weight of G and D (BN moving statistics included)."""
        return max(float(np.abs(x - y).max()) for x, y in zip(weights(a), weights(b)))

    one = SRGANTrainer(config, arrays=(lr, hr), strategy=distribute.make_strategy("default"))
    mirrored = distribute.make_strategy("mirrored")
    two = SRGANTrainer(config, arrays=(lr, hr), strategy=mirrored)
    out["replicas"] = [one.steps.num_replicas, two.steps.num_replicas]
    out["strategy"] = distribute.describe(two.steps.strategy)
    out["synchronized_bn"] = all(l.synchronized for l in two.discriminator.layers if "bn_" in l.name)
    initial = weights(one)
    out["initial_max_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(initial, weights(two)))

    # The distributed dataset hands replica r rows [2r, 2r + 2) of the global batch.
    lr1, hr1 = next(iter(one.feed.dataset(1)))
    lr2, hr2 = next(iter(two.feed.dataset(1)))
    hr1_images = hr1[0] if isinstance(hr1, tuple) else hr1
    hr2_images = hr2[0] if isinstance(hr2, tuple) else hr2  # (hr, features) per replica, or a tuple of them
    parts = [p[0] if isinstance(p, tuple) else p for p in mirrored.experimental_local_results(hr2_images)]
    out["split_is_consecutive"] = bool(np.array_equal(np.concatenate([np.array(p) for p in parts]), np.array(hr1_images)))
    out["feature_cache"] = [one.feed.use_hr_feature_cache, two.feed.use_hr_feature_cache]

    step = tf.constant(1, tf.int64)
    m1 = one.steps.adversarial_step(lr1, hr1, step).numpy()
    m2 = two.steps.adversarial_step(lr2, hr2, step).numpy()
    out["metrics_one"], out["metrics_two"] = m1.tolist(), m2.tolist()
    out["adversarial_weight_max_diff"] = weight_diff(one, two)
    out["adversarial_weight_max_change"] = max(float(np.abs(a - b).max()) for a, b in zip(initial, weights(one)))

    p1 = one.steps.pretrain_step(lr1, hr1, tf.constant(2, tf.int64)).numpy()
    p2 = two.steps.pretrain_step(lr2, hr2, tf.constant(2, tf.int64)).numpy()
    out["pretrain_loss"] = [float(p1[1]), float(p2[1])]
    out["pretrain_weight_max_diff"] = weight_diff(one, two)
    out["optimizer_iterations"] = [int(t.iterations.numpy()) for t in (
        one.steps.g_optimizer, two.steps.g_optimizer, one.steps.pretrain_optimizer, two.steps.pretrain_optimizer)]

    # A checkpoint written on two replicas resumes on one device, and the reverse; training
    # then continues identically.
    with tempfile.TemporaryDirectory() as tmp:
        for v in one.generator.weights:  # scramble, then restore from the two-replica checkpoint
            v.assign(v * 0.5 + 1.0)
        one.checkpoint.read(two.checkpoint.write(f"{tmp}/two")).assert_existing_objects_matched()
        out["restore_2_to_1_max_diff"] = weight_diff(one, two)
        for v in two.generator.weights:  # scramble, then restore from the one-device checkpoint
            v.assign(v * 0.5 + 1.0)
        two.checkpoint.read(one.checkpoint.write(f"{tmp}/one")).assert_existing_objects_matched()
        out["restore_1_to_2_max_diff"] = weight_diff(one, two)
        lr_b, hr_b = next(iter(one.feed.dataset(2)))
        lr_c, hr_c = next(iter(two.feed.dataset(2)))
        a = one.steps.adversarial_step(lr_b, hr_b, tf.constant(3, tf.int64)).numpy()
        b = two.steps.adversarial_step(lr_c, hr_c, tf.constant(3, tf.int64)).numpy()
        out["resumed_step_metric_max_diff"] = float(np.abs(a - b).max())
        out["resumed_weight_max_diff"] = weight_diff(one, two)
    print("RESULT " + json.dumps(out))
    '''
)


@pytest.fixture(scope="module")
def two_replica_result():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_two_logical_cpus_make_a_two_replica_mirrored_strategy_with_synchronized_bn(two_replica_result):
    r = two_replica_result
    assert r["replicas"] == [1, 2]
    assert r["strategy"].startswith("MirroredStrategy x2")
    assert r["synchronized_bn"]
    assert r["initial_max_diff"] == 0.0  # same seed, same initial weights
    assert r["split_is_consecutive"]  # replica r gets rows [r*b, (r+1)*b) of the global batch
    assert r["feature_cache"] == [True, True]


def test_one_adversarial_step_on_two_replicas_equals_one_device(two_replica_result):
    r = two_replica_result
    m1, m2 = r["metrics_one"], r["metrics_two"]
    for a, b in zip(m1, m2):  # d_loss, g_loss, content, adversarial, D(hr), D(sr)
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (m1, m2)
    assert r["adversarial_weight_max_diff"] <= 1e-5
    assert r["adversarial_weight_max_change"] > 1e-5  # the step did move the weights


def test_one_pretrain_step_on_two_replicas_equals_one_device(two_replica_result):
    r = two_replica_result
    a, b = r["pretrain_loss"]
    assert abs(a - b) <= 1e-5 * max(1.0, abs(a))
    assert r["pretrain_weight_max_diff"] <= 1e-5
    assert r["optimizer_iterations"] == [1, 1, 1, 1]


def test_checkpoints_resume_under_a_different_number_of_devices(two_replica_result):
    r = two_replica_result
    assert r["restore_2_to_1_max_diff"] == 0.0  # the checkpoint holds one copy of each variable
    assert r["restore_1_to_2_max_diff"] == 0.0
    assert r["resumed_step_metric_max_diff"] <= 1e-5
    assert r["resumed_weight_max_diff"] <= 1e-5
