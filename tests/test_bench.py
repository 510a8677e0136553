"""The benchmark: analytic FLOP counts, the JSON report, and the speed-ups that must not change the maths.

No test here asserts a speed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import require_module

tf = require_module("tensorflow")
import keras  # noqa: E402

from upsampler.tools import bench  # noqa: E402
from upsampler.tools.flops import count_model, step_flops  # noqa: E402
from upsampler.tools.measure import TensorFlowMatmul, choose_yardstick, measure_matmul, synthetic_arrays  # noqa: E402
from upsampler.config import get_profile  # noqa: E402


def _tiny_model(size=None):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="valid", name="c2")(x)
    # A fixed size can be flattened; an unknown one is pooled (3x3x6 -> 6) before the Dense layers.
    x = keras.layers.Flatten(name="flat")(x) if size else keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(5, name="d1")(x)
    x = keras.layers.Dense(1, name="d2")(x)
    return keras.Model(inputs, x)


# Hand count for an 8x8x3 input:
#   c1: 8*8 outputs x 3*3*3 taps x 4 filters            = 6912 MACs
#   c2: valid, stride 2 -> 3x3 outputs x 3*3*4 x 6      = 1944
#   d1: 3*3*6 = 54 inputs x 5                           =  270   (pooled: 6 x 5 = 30)
#   d2: 5 x 1                                           =    5
TINY_MACS = {"c1": 6912, "c2": 1944, "d1": 270, "d2": 5}
TINY_MACS_POOLED = {**TINY_MACS, "d1": 30}


@pytest.mark.parametrize("size", [8, None])
def test_flop_counter_matches_a_hand_count(size):
    model = _tiny_model(size)
    expected = TINY_MACS if size else TINY_MACS_POOLED
    count = count_model(model, (1, 8, 8, 3))
    assert {l.name: l.macs for l in count.layers} == expected
    assert {l.name: l.kind for l in count.layers} == {"c1": "Conv", "c2": "Conv", "d1": "Dense", "d2": "Dense"}
    total = sum(expected.values())
    assert count.forward_flops == 2 * total
    assert count.backward_flops == 2 * 2 * total  # trainable: input and weight gradients
    frozen = count_model(model, (1, 8, 8, 3), trainable=False)
    assert frozen.backward_flops == 2 * total  # frozen: input gradient only
    assert count_model(model, (3, 8, 8, 3)).macs == 3 * total  # linear in the batch


def test_flop_counter_walks_nested_models_and_unknown_sizes():
    inner = _tiny_model(None)
    inner.trainable = False
    inputs = keras.Input((None, None, 3))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs)))
    count = count_model(outer, (1, 8, 8, 3))
    assert {l.name: l.macs for l in count.layers} == {**TINY_MACS_POOLED, "head": 2}
    assert not any(l.trainable for l in count.layers if l.name != "head")


def test_discriminator_count_matches_the_architecture():
    from upsampler.archs.srgan import DISCRIMINATOR_BLOCKS, build_discriminator

    size, cin, trunk = 32, 3, 0
    trunk += size * size * 9 * cin * 8
    cin = 8
    for multiple, stride in DISCRIMINATOR_BLOCKS:
        size = math.ceil(size / stride)
        trunk += size * size * 9 * cin * 8 * multiple
        cin = 8 * multiple
    pooled = build_discriminator(hr_size=32, filters=8, dense_units=16)
    assert count_model(pooled, (1, 32, 32, 3)).macs == trunk + cin * 16 + 16 * 1
    flatten = build_discriminator(hr_size=32, filters=8, dense_units=16, head="flatten")
    assert count_model(flatten, (1, 32, 32, 3)).macs == trunk + size * size * cin * 16 + 16 * 1


def test_step_flops_follow_the_documented_convention():
    from upsampler.losses.srgan import build_vgg_feature_extractor
    from upsampler.archs.srgan import build_discriminator, build_generator

    g = build_generator(num_blocks=1, filters=8)
    d = build_discriminator(hr_size=32, filters=8, dense_units=16)
    v = build_vgg_feature_extractor("block2_conv2", "untrained")
    f = step_flops(g, d, v, lr_size=8, hr_size=32, batch=4)
    G = count_model(g, (1, 8, 8, 3)).forward_flops
    D = count_model(d, (1, 32, 32, 3)).forward_flops
    V = count_model(v, (1, 32, 32, 3)).forward_flops
    assert f["adversarial_gflop_per_image"] * 1e9 == pytest.approx(3 * G + 6 * D + 3 * V)
    assert f["adversarial_gflop_per_step"] == pytest.approx(4 * f["adversarial_gflop_per_image"])
    assert f["pretrain_gflop_per_step"] * 1e9 == pytest.approx(4 * 3 * G)


def test_paper_step_is_about_134_gflop_per_image():
    """44 -> 176, 16 blocks, VGG54: G 8.6 + D 5.8 (5.9 with the study's Flatten head) + VGG 24.1 GFLOP
    forward per image."""
    from upsampler.losses.srgan import build_vgg_feature_extractor
    from upsampler.archs.srgan import build_discriminator, build_generator

    f = step_flops(build_generator(), build_discriminator(head="flatten"), build_vgg_feature_extractor("block5_conv4", "untrained"),
                         lr_size=44, hr_size=176, batch=8)
    assert f["generator_forward_gflop_per_image"] == pytest.approx(8.589, abs=1e-3)
    assert f["discriminator_forward_gflop_per_image"] == pytest.approx(5.943, abs=1e-3)
    assert f["vgg_forward_gflop_per_image"] == pytest.approx(24.087, abs=1e-3)
    assert f["adversarial_gflop_per_step"] == pytest.approx(1069.5, abs=0.1)
    pooled = step_flops(build_generator(), build_discriminator(), build_vgg_feature_extractor("block5_conv4", "untrained"),
                              lr_size=44, hr_size=176, batch=8)
    assert pooled["discriminator_forward_gflop_per_image"] == pytest.approx(5.818, abs=1e-3)
    assert pooled["adversarial_gflop_per_step"] == pytest.approx(1063.5, abs=0.1)


def test_matmul_measurement_is_positive():
    values = measure_matmul(n=128, reps=2, warmup=1)
    assert len(values) == 2 and all(v > 0 and math.isfinite(v) for v in values)
    for dtype in ("float32", "bfloat16"):
        matmul = TensorFlowMatmul(dtype, "/CPU:0", n=128)
        assert matmul.a.dtype == dtype and all(matmul() > 0 for _ in range(2))


def test_the_yardstick_is_the_faster_median_and_says_which():
    name, value = choose_yardstick({"numpy": [200.0, 240.0, 236.0], "tensorflow": [460.0, 455.0, 300.0]})
    assert (name, value) == ("tensorflow", 455.0)
    assert choose_yardstick({"numpy": [10.0], "tensorflow": []}) == ("numpy", 10.0)
    with pytest.raises(ValueError):
        choose_yardstick({"numpy": []})


class _FakeExtractor:
    """Stands in for the (slow to build) untrained InceptionV3: the timing code is what is tested."""

    name, input_size = "inception-untrained", 299

    def __call__(self, images):
        assert images.dtype == np.uint8 and images.ndim == 4
        return np.zeros((len(images), 2048))


def test_benchmark_json_has_the_numeric_keys(capsys, monkeypatch):
    from upsampler.cli import main
    from upsampler.metrics import extractors

    monkeypatch.setattr(extractors, "get_extractor", lambda name, **kw: _FakeExtractor())
    code = main(["benchmark", "--profile", "smoke", "--json", "--steps", "1", "--warmup", "1", "--pipeline-seconds", "0.2",
                 "--matmul-size", "256", "--fid-batch", "2", "--inference-size", "24", "--tile", "16"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])  # one JSON object on stdout
    for key in ("train_images_per_s", "useful_gflops", "matmul_gflops", "ratio_to_matmul", "pipeline_images_per_s",
                "pretrain_images_per_s", "train_step_seconds", "executed_gflops", "ratio_executed_to_matmul",
                "matmul_tensorflow_gflops", "matmul_numpy_gflops"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, key
    # The yardstick is the faster same-precision matmul of the run, and the JSON says which.
    assert result["precision"] == "float32" and result["matmul_dtype"] == "float32"
    assert result["matmul_gflops"] == max(result["matmul_tensorflow_gflops"], result["matmul_numpy_gflops"])
    assert result["matmul_gflops"] == result[f"matmul_{result['matmul_yardstick']}_gflops"]
    # Cached HR VGG features count as useful work, not as executed work.
    assert result["hr_feature_cache"] and result["executed_gflops"] < result["useful_gflops"]
    for key in ("device", "precision", "tensorflow_version"):
        assert isinstance(result[key], str) and result[key]
    assert isinstance(result["xla"], bool)
    assert result["content_network"] == "untrained" and any("untrained" in n for n in result["notes"])
    if "inference_megapixels_per_s" in result:
        assert result["inference_output_size"] == [96, 96]  # 24 px LR, x4
    # Sections written by other modules are measured, or skipped with a reason - never a crash.
    for section, key in (("inference", "inference_megapixels_per_s"), ("fid", "fid_images_per_s")):
        assert (isinstance(result.get(key), float) and result[key] > 0) or section in result["skipped"]


def test_useful_flops_are_counted_at_the_training_crop(capsys):
    from upsampler.cli import main

    def flops(*extra: str) -> tuple[dict, float]:
        assert main(["benchmark", "--profile", "smoke", "--json", "--steps", "1", "--warmup", "1", "--matmul-size", "256",
                     "--skip", "inference,fid,pipeline,pretrain", *extra]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        return result, result["flops"]["adversarial_gflop_per_step"]

    whole, whole_gflop = flops()
    cropped, cropped_gflop = flops("--set", f"data.train_crop={whole['hr_size'] // 2}")
    assert cropped["train_hr_size"] == whole["hr_size"] // 2 and whole["train_hr_size"] == whole["hr_size"]
    # convolutions scale with the area (1/4); only the D head's Dense layers do not
    assert 0.2 * whole_gflop < cropped_gflop < 0.3 * whole_gflop


def test_skip_leaves_sections_out_and_unavailable_sections_are_reported(capsys, monkeypatch):
    from upsampler.cli import main
    from upsampler.metrics import extractors

    def unavailable(name, **kwargs):
        raise extractors.ExtractorUnavailableError("no weights here")

    monkeypatch.setattr(extractors, "get_extractor", unavailable)
    assert main(["benchmark", "--profile", "smoke", "--json", "--steps", "1", "--warmup", "0", "--pipeline-seconds", "0.2",
                 "--skip", "train,pretrain,inference", "--skip", "matmul"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "train_images_per_s" not in result and "ratio_to_matmul" not in result
    assert set(result["skipped"]) == {"train", "pretrain", "inference", "fid", "matmul"}
    assert "no weights here" in result["skipped"]["fid"]
    assert result["pipeline_images_per_s"] > 0
    assert main(["benchmark", "--profile", "smoke", "--skip", "warp"]) == 2


# ---- speed-ups that must not change the maths ---------------------------------------------

def _smoke_trainer(**sets):
    from upsampler.training.trainer import SRGANTrainer

    config = get_profile("smoke").override([f"{k}={v}" for k, v in sets.items()])
    lr, hr = synthetic_arrays(8, config.data.lr_size, config.data.hr_size, seed=5)
    return SRGANTrainer(config, arrays=(lr, hr))


def test_cached_hr_features_give_the_same_step_as_computing_them():
    # At the study's Adam epsilon 1e-8: with no conv biases in front of BatchNorm no gradient is
    # zero-but-for-rounding, so Adam's lr * g / (|g| + eps) has no noise to amplify.
    assert get_profile("smoke").train.epsilon == 1e-8
    cached = _smoke_trainer(**{"train.cache_hr_features": "on"})
    fresh = _smoke_trainer(**{"train.cache_hr_features": "off"})
    assert cached.feed.use_hr_feature_cache and not fresh.feed.use_hr_feature_cache
    (lr_a, (hr_a, feats)), (lr_b, hr_b) = next(iter(cached.feed.dataset(1))), next(iter(fresh.feed.dataset(1)))
    np.testing.assert_array_equal(hr_a.numpy(), hr_b.numpy())
    reference = fresh.steps.content_loss.features(hr_b).numpy()
    np.testing.assert_allclose(feats.numpy(), reference, rtol=0, atol=1e-5 * np.abs(reference).max())
    a = cached.steps.adversarial_step(lr_a, (hr_a, feats), tf.constant(1, tf.int64)).numpy()
    b = fresh.steps.adversarial_step(lr_b, hr_b, tf.constant(1, tf.int64)).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for x, y in zip(cached.generator.weights, fresh.generator.weights):
        np.testing.assert_allclose(np.array(x), np.array(y), atol=1e-5)


def test_flips_turn_the_feature_cache_off():
    trainer = _smoke_trainer(**{"data.flips": "true"})
    assert not trainer.feed.use_hr_feature_cache and "flips" in trainer.feed.hr_feature_cache_reason


def test_fused_layers_and_fused_adam_match_keras():
    from upsampler.archs.srgan import FastPReLU, FusedBatchNormalization
    from upsampler.training.steps_tf import fused_adam_class

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 5, 5, 6)).astype(np.float32))
    ours, ref = FusedBatchNormalization(momentum=0.5), keras.layers.BatchNormalization(momentum=0.5)
    for layer in (ours, ref):
        layer.build(x.shape)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours, y_ref = ours(x, training=True), ref(x, training=True)
        loss_ours, loss_ref = tf.reduce_sum(y_ours * x), tf.reduce_sum(y_ref * x)
    np.testing.assert_allclose(y_ours.numpy(), y_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss_ours, x).numpy(), tape.gradient(loss_ref, x).numpy(), atol=1e-4)
    for a, b in zip(ours.weights, ref.weights):  # gamma, beta, moving mean, moving (biased) variance
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours(x, training=False).numpy(), ref(x, training=False).numpy(), atol=1e-5)

    prelu, stock = FastPReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.Constant(0.3)), \
        keras.layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.Constant(0.3))
    np.testing.assert_array_equal(prelu(x).numpy(), stock(x).numpy())

    w0 = rng.normal(size=(40, 7)).astype(np.float32)
    results = []
    for cls in (keras.optimizers.Adam, fused_adam_class()):
        var = keras.Variable(w0.copy())
        opt = cls(learning_rate=1e-2)
        grads = np.random.default_rng(1)
        for _ in range(3):
            opt.apply([tf.constant(grads.normal(size=w0.shape).astype(np.float32))], [var])
        results.append(np.array(var))
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)
    assert np.abs(results[0] - w0).max() > 1e-3


def test_space_to_depth_output_conv_matches_conv2d():
    from upsampler.archs.srgan import SpaceToDepthConv2D

    rng = np.random.default_rng(2)
    for k, cin, cout in [(9, 16, 3), (3, 5, 2), (5, 4, 7)]:
        ours, ref = SpaceToDepthConv2D(cout, k, padding="same"), keras.layers.Conv2D(cout, k, padding="same")
        x = tf.constant(rng.normal(size=(2, 12, 10, cin)).astype(np.float32))
        ours.build(x.shape)
        ref.build(x.shape)
        ref.set_weights(ours.get_weights())
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y_ours, y_ref = ours(x), ref(x)
            l_ours, l_ref = tf.reduce_sum(y_ours ** 2), tf.reduce_sum(y_ref ** 2)
        np.testing.assert_allclose(y_ours.numpy(), y_ref.numpy(), rtol=0, atol=1e-5 * np.abs(y_ref.numpy()).max())
        for a, b in zip(tape.gradient(l_ours, [x, ours.kernel]), tape.gradient(l_ref, [x, ref.kernel])):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-5 * np.abs(b.numpy()).max())
        odd = tf.constant(rng.normal(size=(1, 7, 9, cin)).astype(np.float32))  # falls back to the plain conv
        np.testing.assert_allclose(ours(odd).numpy(), ref(odd).numpy(), atol=1e-5)


def test_mixed_float16_step_uses_loss_scaling_and_stays_finite():
    """The GPU precision path (LossScaleOptimizer), exercised on the CPU with smoke shapes."""
    from upsampler.training.trainer import SRGANTrainer

    config = get_profile("smoke")
    lr, hr = synthetic_arrays(8, config.data.lr_size, config.data.hr_size, seed=6)
    trainer = SRGANTrainer(config, arrays=(lr, hr), precision="mixed_float16")
    assert trainer.steps.loss_scaling and isinstance(trainer.steps.g_optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.generator.get_layer("res_block_0_conv_1").compute_dtype == "float16"
    assert trainer.generator.get_layer("sr").compute_dtype == "float32"  # output layer stays float32
    assert all(v.dtype == "float32" for v in trainer.generator.trainable_variables)
    before = [np.array(v) for v in trainer.generator.trainable_variables]
    lr_b, hr_b = next(iter(trainer.feed.dataset(1)))
    metrics = trainer.steps.adversarial_step(lr_b, hr_b, tf.constant(1, tf.int64)).numpy()
    assert np.all(np.isfinite(metrics))
    assert any(np.abs(np.array(v) - b).max() > 0 for v, b in zip(trainer.generator.trainable_variables, before))
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is restored


def test_content_loss_and_output_conv_compile_under_xla_with_op_determinism():
    """XLA is the GPU default; MaxPoolGrad has no deterministic XLA kernel, so under XLA the VGG
    uses WindowMaxPool2D (same values) and the output conv builds its kernel without a gather."""
    from upsampler.config import LossConfig
    from upsampler.losses.srgan import ContentLoss, WindowMaxPool2D
    from upsampler.archs.srgan import SpaceToDepthConv2D

    tf.config.experimental.enable_op_determinism()
    config = LossConfig(content_layer="block2_conv2", content_network="untrained")
    loss_xla, loss_graph = ContentLoss(config, xla=True), ContentLoss(config, xla=False)
    assert any(isinstance(l, WindowMaxPool2D) for l in loss_xla.vgg.layers)
    conv = SpaceToDepthConv2D(3, 9, padding="same")
    rng = np.random.default_rng(4)
    x = tf.constant(rng.uniform(-1, 1, (2, 16, 16, 8)).astype(np.float32))
    hr = tf.constant(rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32))
    conv.build(x.shape)

    def grads(loss_fn):
        with tf.GradientTape() as tape:
            sr = tf.tanh(conv(x))
            value = loss_fn(hr, sr)
        return [value, *tape.gradient(value, [conv.kernel])]

    compiled = tf.function(lambda: grads(loss_xla), jit_compile=True)()
    reference = tf.function(lambda: grads(loss_graph))()
    for a, b in zip(compiled, reference):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6 * float(np.abs(b.numpy()).max()))


def test_fused_adam_takes_the_fused_update_and_checkpoints_like_keras_adam(monkeypatch, tmp_path):
    from upsampler.training.steps_tf import fused_adam_class

    calls = []
    original = tf.raw_ops.ResourceApplyAdam

    def counting(**kwargs):
        calls.append(1)
        return original(**kwargs)

    monkeypatch.setattr(tf.raw_ops, "ResourceApplyAdam", counting)
    var = keras.Variable(np.ones((3, 2), np.float32), name="w")
    fused = fused_adam_class()(learning_rate=1e-2)
    fused.apply([tf.ones((3, 2))], [var])
    assert calls, "the fused optimiser fell back to the Keras update"
    # The same slots as keras.optimizers.Adam: a checkpoint of one restores into the other.
    stock_var = keras.Variable(np.ones((3, 2), np.float32), name="w")
    stock = keras.optimizers.Adam(learning_rate=1e-2)
    stock.apply([tf.ones((3, 2))], [stock_var])
    path = tf.train.Checkpoint(opt=stock).save(str(tmp_path / "ckpt"))
    other = fused_adam_class()(learning_rate=1e-2)
    other.build([keras.Variable(np.zeros((3, 2), np.float32), name="w")])
    tf.train.Checkpoint(opt=other).restore(path).assert_consumed()
    assert int(other.iterations.numpy()) == 1
    assert len(other.variables) == len(stock.variables)


def test_write_result_puts_the_json_and_the_table_side_by_side(tmp_path):
    target = tmp_path / "new" / "cpu-run.json"
    bench.write_result(target, {"train_step_seconds": 1.5, "samples": [1, 2]}, "table line")
    assert json.loads(target.read_text()) == {"train_step_seconds": 1.5, "samples": [1, 2]}
    assert (tmp_path / "new" / "cpu-run.txt").read_text() == "table line\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["cpu-run.json", "cpu-run.txt"]
