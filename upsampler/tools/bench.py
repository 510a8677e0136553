"""``upsampler benchmark``: throughput and useful GFLOP/s, measured in one process.

Sections (each can be skipped with ``--skip``):

``train``     the trainer's compiled adversarial step (G, D, VGG content loss, both Adam
              updates) on a fixed synthetic batch: images/s and *useful* GFLOP/s;
``matmul``    the yardstick: the best dense 4096x4096 matmul this machine reaches in the
              step's compute precision, measured interleaved with the training repetitions
              (same load, same run) with TensorFlow (``tf.matmul`` on the step's device) and,
              in float32 on a CPU, with NumPy's BLAS; the faster median is the yardstick
              (``matmul_yardstick`` names it) and ``ratio_to_matmul = useful_gflops /
              matmul_gflops``;
``pretrain``  the generator-only (pixel MSE) step;
``inference`` ``upsampler.inference.upscale.upscale_image`` with tiling: output megapixels/s;
``pipeline``  the trainer's input pipeline (``make_train_dataset`` + cached HR features),
              images/s, which must exceed what the training step consumes;
``fid``       ``inception-untrained`` feature extraction (299 px), images/s.

Every figure is the median of ``--steps`` repetitions after ``--warmup`` untimed ones.

Useful FLOPs (the convention; :func:`step_flops`): multiply-accumulates of every Conv and
Dense layer, counted from the layer shapes by walking the Keras graph, x2 FLOPs each.
Backward = 2x forward for layers with trainable weights (input and weight gradients),
1x for frozen layers (input gradient only: the VGG19 backward through SR). A straightforward
adversarial step needs, per image::

    G forward + G backward                       (3 x G)
    D forward + backward, on HR and on SR        (2 x 3 x D)
    VGG forward on SR and on HR + backward (SR)  (3 x VGG)

Normalisation, activations, losses and the optimiser updates are not counted. Work the
trainer skips (HR VGG features computed once per dataset by the feature cache) is still
counted in ``useful_gflops``, so skipping or caching raises that figure; ``executed_gflops``
beside it counts only the work the step does (without the cached HR VGG forward), and
``ratio_executed_to_matmul`` is its ratio. Work the step does beyond the convention (the
generator's extra input-gradient pass back through D on SR) is counted in neither. The VGG weights
default to ``untrained`` here: weights change the values, never the speed.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from upsampler.utils import hardware
from upsampler.utils.argtypes import integer, number

SECTIONS = ("train", "matmul", "pretrain", "inference", "pipeline", "fid")
UNTRAINED_NOTE = ("content network: untrained VGG19 (benchmark default; the weights change the values, not the speed "
                  "- use --content-network vgg19 or vgg16-hed to load real ones)")
FLOP_CONVENTION = (
    "useful FLOPs = 2 x MACs of every Conv/Dense layer from the layer shapes; backward = 2 x forward for layers "
    "with trainable weights, 1 x (input gradient only) for the frozen VGG; adversarial step per image = "
    "3 G + 6 D (HR and SR) + 3 VGG (forward SR and HR, backward SR); normalisation, activations and optimiser "
    "updates not counted; work skipped by caching still counted"
)


# ---- FLOP counting ---------------------------------------------------------------------------

@dataclass
class LayerCount:
    name: str
    kind: str
    macs: int  # multiply-accumulates of one forward pass of the counted input
    trainable: bool

    @property
    def forward_flops(self) -> int:
        return 2 * self.macs

    @property
    def backward_flops(self) -> int:
        """2x forward with trainable weights (input + weight gradients), else 1x (input gradient)."""
        return (2 if self.trainable else 1) * self.forward_flops


@dataclass
class ModelCount:
    name: str
    input_shape: tuple
    layers: list[LayerCount] = field(default_factory=list)

    @property
    def forward_flops(self) -> int:
        return sum(layer.forward_flops for layer in self.layers)

    @property
    def backward_flops(self) -> int:
        return sum(layer.backward_flops for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _layer_macs(layer, input_shapes: list[tuple], output_shape: tuple) -> tuple[str, int] | None:
    """(kind, MACs) of a Conv/Dense layer for concrete input/output shapes, else None."""
    import keras

    if not input_shapes:
        return None
    in_shape = tuple(input_shapes[0])
    if isinstance(layer, keras.layers.Dense):
        return "Dense", _prod(in_shape[:-1]) * int(in_shape[-1]) * int(layer.units)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        # output channels = cin * depth_multiplier, each one k-tap filter of one input channel
        return "DepthwiseConv", _prod(output_shape[:-1]) * _prod(layer.kernel_size) * int(output_shape[-1])
    transposed = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    if isinstance(layer, transposed):
        return "ConvTranspose", _prod(in_shape[:-1]) * _prod(layer.kernel_size) * int(in_shape[-1]) * int(layer.filters)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"{layer.name}: only channels_last (NHWC) convolutions are counted")
        groups = int(getattr(layer, "groups", 1) or 1)
        return "Conv", _prod(output_shape[:-1]) * _prod(layer.kernel_size) * (int(in_shape[-1]) // groups) * int(layer.filters)
    return None


def _shape_of(x) -> tuple:
    return tuple(x.shape)


def count_model(model, input_shape: tuple, *, trainable: bool | None = None) -> ModelCount:
    """Forward MACs of every Conv/Dense layer of ``model`` for an input of ``input_shape``.

    ``input_shape`` includes the batch (``(1, 176, 176, 3)`` gives per-image counts). Models
    with unknown spatial sizes (the generator, VGG) are fine: the concrete shapes are
    propagated through the functional graph with each layer's ``compute_output_spec``.
    Nested models are walked recursively. ``trainable`` overrides each layer's own flag.
    """
    import keras

    result = ModelCount(model.name, tuple(input_shape))

    def record(op, args, kwargs, output):
        shapes = [_shape_of(a) for a in keras.tree.flatten((args, kwargs)) if isinstance(a, keras.KerasTensor)]
        out_shape = _shape_of(keras.tree.flatten(output)[0])
        counted = _layer_macs(op, shapes, out_shape)
        if counted is not None:
            kind, macs = counted
            flag = bool(op.trainable) if trainable is None else trainable
            result.layers.append(LayerCount(op.name, kind, int(macs), flag))

    def walk(functional, spec, model_trainable):
        def operation_fn(op):
            def run(*args, **kwargs):
                kwargs.pop("training", None)
                if isinstance(op, keras.Model) and hasattr(op, "_run_through_graph"):
                    return walk(op, args[0], model_trainable and op.trainable)
                output = op.compute_output_spec(*args, **kwargs)
                record(op, args, kwargs, output)
                return output

            return run

        outputs = functional._run_through_graph(spec, operation_fn=operation_fn)
        return outputs

    spec = keras.KerasTensor(tuple(input_shape), dtype="float32")
    if hasattr(model, "_run_through_graph"):
        walk(model, spec, model.trainable)
    else:  # a subclassed model or a bare Sequential: walk its layers in order
        x = spec
        for layer in model.layers:
            y = layer.compute_output_spec(x)
            record(layer, (x,), {}, y)
            x = y
    return result


def step_flops(generator, discriminator, vgg, *, lr_size: int, hr_size: int, batch: int) -> dict[str, Any]:
    """Useful FLOPs of one adversarial and one pre-training step (see the module docstring)."""
    g = count_model(generator, (1, lr_size, lr_size, 3))
    d = count_model(discriminator, (1, hr_size, hr_size, 3))
    v = count_model(vgg, (1, hr_size, hr_size, 3), trainable=False) if vgg is not None else None
    g_step = g.forward_flops + g.backward_flops
    d_step = 2 * (d.forward_flops + d.backward_flops)
    v_step = 2 * v.forward_flops + v.backward_flops if v is not None else 0
    per_image = g_step + d_step + v_step
    return {
        "convention": FLOP_CONVENTION,
        "generator_forward_gflop_per_image": g.forward_flops / 1e9,
        "discriminator_forward_gflop_per_image": d.forward_flops / 1e9,
        "vgg_forward_gflop_per_image": (v.forward_flops / 1e9) if v is not None else 0.0,
        "adversarial_gflop_per_image": per_image / 1e9,
        "adversarial_gflop_per_step": per_image * batch / 1e9,
        "hr_vgg_forward_gflop_per_step": (v.forward_flops * batch / 1e9) if v is not None else 0.0,
        "pretrain_gflop_per_image": g_step / 1e9,
        "pretrain_gflop_per_step": g_step * batch / 1e9,
    }


# ---- timing helpers --------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def time_calls(fn: Callable[[], Any], reps: int, warmup: int) -> list[float]:
    """Wall-clock seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def matmul_gflops_once(a: np.ndarray, b: np.ndarray) -> float:
    n = a.shape[0]
    start = time.perf_counter()
    np.matmul(a, b)
    return 2.0 * n ** 3 / (time.perf_counter() - start) / 1e9


def matmul_operands(n: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def measure_matmul(n: int = 4096, reps: int = 5, warmup: int = 1) -> list[float]:
    """NumPy float32 ``n x n`` matmul GFLOP/s, one value per repetition."""
    a, b = matmul_operands(n)
    for _ in range(warmup):
        np.matmul(a, b)
    return [matmul_gflops_once(a, b) for _ in range(reps)]


class TensorFlowMatmul:
    """``tf.matmul`` of two ``n x n`` operands of ``dtype`` on ``device``, compiled once; each
    call returns one GFLOP/s sample (the result stays on the device: a scalar comes back)."""

    def __init__(self, dtype: str = "float32", device: str = "/CPU:0", n: int = 4096):
        import tensorflow as tf

        self.n, self.dtype, self.device = n, dtype, device
        a, b = matmul_operands(n)
        with tf.device(device):
            self.a = tf.cast(tf.constant(a), dtype)
            self.b = tf.cast(tf.constant(b), dtype)
            self.fn = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
            self.fn(self.a, self.b).numpy()

    def __call__(self) -> float:
        import tensorflow as tf

        with tf.device(self.device):
            start = time.perf_counter()
            self.fn(self.a, self.b).numpy()
        return 2.0 * self.n ** 3 / (time.perf_counter() - start) / 1e9


def choose_yardstick(samples: dict[str, list[float]]) -> tuple[str, float]:
    """(name, median GFLOP/s) of the fastest matmul by median among ``samples`` (name -> GFLOP/s samples)."""
    medians = {name: _median(values) for name, values in samples.items() if values}
    if not medians:
        raise ValueError("no matmul samples")
    name = max(medians, key=medians.get)
    return name, medians[name]


# ---- environment -----------------------------------------------------------------------------

def blas_info() -> str:
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy: no dict mode
        return "unknown"


def device_info() -> dict[str, Any]:
    import tensorflow as tf

    info: dict[str, Any] = {
        "cpu": hardware.cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpus": [gpu["name"] for gpu in hardware.gpus()],
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "onednn": hardware.onednn_enabled(),
    }
    info["device"] = (f"GPU: {', '.join(info['gpus'])}" if info["gpus"]
                      else f"CPU: {info['cpu']} ({info['cpu_cores']} cores)")
    return info


# ---- the benchmark ---------------------------------------------------------------------------

def synthetic_arrays(n: int, lr_size: int, hr_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random uint8 HR images of ``hr_size`` and their box-downscaled LR images (benchmark input)."""
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (n, hr_size, hr_size, 3), dtype=np.uint8)
    scale = hr_size // lr_size
    lr = hr.reshape(n, lr_size, scale, lr_size, scale, 3).mean(axis=(2, 4)).astype(np.uint8)
    return lr, hr


def build_config(profile: str, *, batch_size: int | None, xla: str, precision: str | None, content_network: str,
                 hr_cache: str, strategy: str, deterministic: bool | None, overrides: list[str]):
    from upsampler.config import get_profile

    sets = [f"train.jit_compile={xla}", *([f"train.precision={precision}"] if precision else []),
            f"loss.content_network={content_network}", f"train.cache_hr_features={hr_cache}", f"train.strategy={strategy}",
            "train.progress=false"]
    if batch_size is not None:
        sets.append(f"train.batch_size={batch_size}")
    if deterministic is not None:
        sets.append(f"train.deterministic={'true' if deterministic else 'false'}")
    config = get_profile(profile).override(sets + list(overrides))
    config.train.steps_per_epoch = None  # one pass over the synthetic set per epoch
    return config


def measure_pipeline(feed, n_images: int, min_seconds: float = 1.0) -> dict[str, Any]:
    """Images/s of ``feed.dataset`` (a :class:`upsampler.training.feed.TrainingFeed`: uint8 -> float batches,
    plus cached HR features when on) over a synthetic training set of ``n_images``, a new dataset per epoch as in training."""
    d = feed.config.data
    saved = feed.train_lr, feed.train_hr, feed.hr_features
    try:
        feed.train_lr, feed.train_hr = synthetic_arrays(n_images, d.lr_size, d.hr_size, seed=1)
        if feed.use_hr_feature_cache:  # the values do not matter here, only the bytes moved
            shape = feed.steps.content_loss.feature_shape(d.hr_size)
            feed.hr_features = np.zeros((n_images, *shape), np.float32)
        epoch = [0]

        def one_epoch() -> int:
            epoch[0] += 1
            return sum(int(lr.shape[0]) for lr, _hr in feed.dataset(epoch[0]))

        one_epoch()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            count += one_epoch()
        return {"pipeline_images_per_s": count / (time.perf_counter() - start), "pipeline_images": n_images}
    finally:
        feed.train_lr, feed.train_hr, feed.hr_features = saved


def run(config, *, steps: int = 5, warmup: int = 1, skip: tuple[str, ...] = (), inference_size: int = 176,
        tile: int = 88, fid_batch: int = 16, matmul_size: int = 4096, pipeline_seconds: float = 2.0,
        fast: bool = True, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Run the benchmark sections for ``config`` and return the result dict (see the module docstring)."""
    import keras
    import tensorflow as tf

    from upsampler.training import distribute
    from upsampler.training.steps_tf import Speedups
    from upsampler.training.train import SRGANTrainer

    t, d = config.train, config.data
    batch = t.batch_size
    result: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "profile": config.profile,
        "batch_size": batch,
        "steps": steps,
        "warmup": warmup,
        "lr_size": d.lr_size,
        "hr_size": d.hr_size,
        "train_hr_size": d.train_hr_size,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "blas": blas_info(),
        "content_network": config.loss.content_network,
        "notes": [],
        "skipped": {},
    }
    result.update(device_info())
    if config.loss.content == "vgg" and config.loss.content_network == "untrained":
        result["notes"].append(UNTRAINED_NOTE)

    n_images = max(2 * batch, 32)
    lr_arr, hr_arr = synthetic_arrays(n_images, d.lr_size, d.hr_size)
    log(f"building the trainer ({config.profile}, batch {batch}) ...")
    trainer = SRGANTrainer(config, arrays=(lr_arr, hr_arr), speedups=Speedups() if fast else Speedups.none())
    steps_, feed = trainer.steps, trainer.feed
    result.update({
        "precision": steps_.precision,
        "xla": bool(steps_.jit_compile),
        "strategy": distribute.describe(steps_.strategy),
        "replicas": steps_.num_replicas,
        "hr_feature_cache": bool(feed.use_hr_feature_cache),
        "fast_paths": bool(fast),
        "deterministic": bool(t.deterministic),
        "trainer": trainer.describe(),
    })
    vgg = steps_.content_loss.vgg
    # The step trains on data.train_crop-px crops where the profile draws them (study-cpu), not on whole images.
    flops = step_flops(trainer.generator, trainer.discriminator, vgg, lr_size=d.train_hr_size // d.scale,
                       hr_size=d.train_hr_size, batch=batch)
    result["flops"] = flops

    # The yardstick candidates, all in the step's compute precision on the step's device.
    from upsampler.training.precision import compute_dtype

    matmul_dtype = compute_dtype(steps_.precision)
    on_gpu = bool(result.get("gpus"))
    matmuls: dict[str, Callable[[], float]] = {}
    if "matmul" not in skip:
        matmuls["tensorflow"] = TensorFlowMatmul(matmul_dtype, "/GPU:0" if on_gpu else "/CPU:0", matmul_size)
        if not on_gpu and matmul_dtype == "float32":  # NumPy has no BLAS matmul in 16 bits
            a, b = matmul_operands(matmul_size)
            np.matmul(a, b)
            matmuls["numpy"] = lambda: matmul_gflops_once(a, b)
    matmul_samples: dict[str, list[float]] = {name: [] for name in matmuls}

    def interleaved_matmul():
        for name, fn in matmuls.items():
            matmul_samples[name].append(fn())

    # -- training step -------------------------------------------------------------------
    if "train" not in skip:
        if feed.use_hr_feature_cache:
            start = time.perf_counter()
            feed.prepare_hr_features()
            result["hr_feature_cache_seconds"] = time.perf_counter() - start
            result["hr_feature_cache_images"] = n_images
        lr_batch, hr_batch = next(iter(feed.dataset(1)))
        counter = [0]

        def adversarial():
            counter[0] += 1
            steps_.adversarial_step(lr_batch, hr_batch, tf.constant(counter[0], tf.int64)).numpy()

        log(f"training step: {warmup} warm-up + {steps} timed (interleaved with the matmul) ...")
        for _ in range(warmup):
            adversarial()
        times = []
        for _ in range(steps):
            interleaved_matmul()
            start = time.perf_counter()
            adversarial()
            times.append(time.perf_counter() - start)
            log(f"  step {times[-1]:.3f} s")
        interleaved_matmul()
        seconds = _median(times)
        result["train_step_seconds"] = seconds
        result["train_step_seconds_all"] = times
        result["train_images_per_s"] = batch / seconds
        result["useful_gflops"] = flops["adversarial_gflop_per_step"] / seconds
        result["useful_gflops_best"] = flops["adversarial_gflop_per_step"] / min(times)
        skipped = flops["hr_vgg_forward_gflop_per_step"] if feed.use_hr_feature_cache else 0.0
        result["executed_gflop_per_step"] = flops["adversarial_gflop_per_step"] - skipped
        result["executed_gflops"] = result["executed_gflop_per_step"] / seconds
    else:
        result["skipped"]["train"] = "--skip"

    if "matmul" not in skip:
        while min(len(v) for v in matmul_samples.values()) < max(steps, 5):
            interleaved_matmul()
        yardstick, median = choose_yardstick(matmul_samples)
        result["matmul_size"] = matmul_size
        result["matmul_dtype"] = matmul_dtype
        result["matmul_device"] = "GPU" if on_gpu else "CPU"
        result["matmul_yardstick"] = yardstick
        result["matmul_gflops"] = median
        result["matmul_gflops_all"] = matmul_samples[yardstick]
        result["matmul_gflops_best"] = max(matmul_samples[yardstick])
        for name, values in matmul_samples.items():
            result[f"matmul_{name}_gflops"] = _median(values)
            result[f"matmul_{name}_gflops_all"] = values
        if "useful_gflops" in result:
            result["ratio_to_matmul"] = result["useful_gflops"] / result["matmul_gflops"]
            result["ratio_executed_to_matmul"] = result["executed_gflops"] / result["matmul_gflops"]
            # Best against best: on a machine shared with other jobs both figures swing by 2x;
            # the fastest step over the fastest matmul estimates the ratio on a quiet machine.
            result["ratio_to_matmul_best"] = result["useful_gflops_best"] / result["matmul_gflops_best"]
        if on_gpu:
            import tensorflow as tf

            result["gpu_matmul_tf32"] = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    else:
        result["skipped"]["matmul"] = "--skip"

    # -- generator-only pre-training step -------------------------------------------------
    if "pretrain" not in skip:
        lr_p, hr_p = next(iter(feed.dataset(1, phase="pretrain")))
        counter = [0]

        def pretrain():
            counter[0] += 1
            steps_.pretrain_step(lr_p, hr_p, tf.constant(counter[0], tf.int64)).numpy()

        log("pre-training step ...")
        times = time_calls(pretrain, steps, warmup)
        result["pretrain_step_seconds"] = _median(times)
        result["pretrain_images_per_s"] = batch / _median(times)
        result["pretrain_useful_gflops"] = flops["pretrain_gflop_per_step"] / _median(times)
    else:
        result["skipped"]["pretrain"] = "--skip"

    # -- tiled inference -------------------------------------------------------------------
    if "inference" not in skip:
        try:
            from upsampler.inference.upscale import upscale_image
        except ImportError as exc:
            result["skipped"]["inference"] = f"upsampler.inference.upscale.upscale_image unavailable ({exc})"
        else:
            try:
                image = synthetic_arrays(1, inference_size, inference_size * d.scale)[0][0]  # the LR image
                log(f"tiled inference ({inference_size}x{inference_size} LR, tile {tile}) ...")
                shapes = []
                times = time_calls(lambda: shapes.append(
                    upscale_image(trainer.generator, image, scale=d.scale, tile=tile).shape), max(3, min(steps, 5)), 1)
                megapixels = shapes[-1][0] * shapes[-1][1] / 1e6  # output pixels
                result["inference_output_size"] = list(shapes[-1][:2])
                result["inference_lr_size"] = inference_size
                result["inference_tile"] = tile
                result["inference_seconds"] = _median(times)
                result["inference_megapixels_per_s"] = megapixels / _median(times)
            except Exception as exc:  # another engineer's module: report, do not crash
                result["skipped"]["inference"] = f"{type(exc).__name__}: {exc}"
    else:
        result["skipped"]["inference"] = "--skip"

    # -- input pipeline ---------------------------------------------------------------------
    if "pipeline" not in skip:
        log("input pipeline ...")
        result.update(measure_pipeline(feed, n_images=max(256, 8 * batch), min_seconds=pipeline_seconds))
        if "train_images_per_s" in result:
            result["pipeline_margin"] = result["pipeline_images_per_s"] / result["train_images_per_s"]
    else:
        result["skipped"]["pipeline"] = "--skip"

    # -- FID feature extraction ---------------------------------------------------------------
    if "fid" not in skip:
        try:
            from upsampler.metrics.extractors import get_extractor

            extractor = get_extractor("inception-untrained")
        except Exception as exc:
            result["skipped"]["fid"] = f"inception-untrained extractor unavailable ({type(exc).__name__}: {exc})"
        else:
            images = synthetic_arrays(fid_batch, d.lr_size, d.hr_size)[1]
            log(f"FID features ({fid_batch} images of {d.hr_size} px -> {extractor.input_size} px) ...")
            times = time_calls(lambda: extractor(images), max(3, min(steps, 5)), 1)
            result["fid_extractor"] = extractor.name
            result["fid_batch"] = fid_batch
            result["fid_images_per_s"] = fid_batch / _median(times)
    else:
        result["skipped"]["fid"] = "--skip"
    return result


# ---- output --------------------------------------------------------------------------------

def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table of a :func:`run` result."""
    rows = [
        ("device", result.get("device")),
        ("TensorFlow / Keras", f"{result.get('tensorflow_version')} / {result.get('keras_version')}"),
        ("oneDNN CPU kernels", hardware.onednn_word(result.get("onednn"))),
        ("precision / XLA", f"{result.get('precision')} / {'on' if result.get('xla') else 'off'}"),
        ("strategy", f"{result.get('strategy')}"),
        ("threads intra / inter", f"{result.get('intra_op_threads') or 'auto'} / {result.get('inter_op_threads') or 'auto'}"),
        ("profile / batch", f"{result.get('profile')} / {result.get('batch_size')} "
                            f"({result.get('lr_size')}->{result.get('hr_size')} px)"),
        ("HR VGG feature cache", "on" if result.get("hr_feature_cache") else "off"),
        ("step implementation", "fast paths" if result.get("fast_paths", True) else "baseline (straightforward)"),
        ("useful GFLOP per step", _fmt(result.get("flops", {}).get("adversarial_gflop_per_step"), 4)),
        ("train step (median)", f"{_fmt(result.get('train_step_seconds'), 4)} s"),
        ("train images/s", _fmt(result.get("train_images_per_s"))),
        ("useful GFLOP/s", _fmt(result.get("useful_gflops"))),
        ("executed GFLOP/s (cached work not counted)", _fmt(result.get("executed_gflops"))),
        (f"matmul GFLOP/s ({result.get('matmul_dtype')} {result.get('matmul_size', 4096)}, "
         f"{result.get('matmul_device')})",
         f"{_fmt(result.get('matmul_gflops'))} = {result.get('matmul_yardstick')}"
         f" (TensorFlow {_fmt(result.get('matmul_tensorflow_gflops'))}, NumPy "
         f"{_fmt(result.get('matmul_numpy_gflops'))} {result.get('blas')})"),
        ("ratio useful / matmul (medians)", _fmt(result.get("ratio_to_matmul"))),
        ("ratio executed / matmul (medians)", _fmt(result.get("ratio_executed_to_matmul"))),
        ("  best step / best matmul", f"{_fmt(result.get('useful_gflops_best'))} / {_fmt(result.get('matmul_gflops_best'))}"
                                      f" = {_fmt(result.get('ratio_to_matmul_best'))}"),
        ("pretrain images/s", _fmt(result.get("pretrain_images_per_s"))),
        ("pretrain useful GFLOP/s", _fmt(result.get("pretrain_useful_gflops"))),
        ("inference output MP/s (tiled)", f"{_fmt(result.get('inference_megapixels_per_s'))} "
                                          f"({result.get('inference_lr_size')} px LR -> "
                                          f"{(result.get('inference_output_size') or ['?'])[0]} px, tile "
                                          f"{result.get('inference_tile')})"),
        ("pipeline images/s", f"{_fmt(result.get('pipeline_images_per_s'))} "
                              f"({_fmt(result.get('pipeline_margin'))} x training)"),
        ("FID features images/s", _fmt(result.get("fid_images_per_s"))),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    for section, reason in result.get("skipped", {}).items():
        lines.append(f"skipped {section}: {reason}")
    lines.extend(f"note: {n}" for n in result.get("notes", []))
    return "\n".join(lines)


# ---- command line --------------------------------------------------------------------------

def _parse_skip(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item not in SECTIONS:
                raise ValueError(f"--skip: unknown section {item!r}; choose from {', '.join(SECTIONS)}")
            out.append(item)
    return tuple(out)


def configure_benchmark_parser(p) -> None:
    p.add_argument("--profile", default="paper", help="config profile: paper (default), demo or smoke")
    p.add_argument("--batch-size", type=integer(1), help="global batch (default: the profile's)")
    p.add_argument("--steps", type=integer(1), default=5, help="timed repetitions per section (default %(default)s)")
    p.add_argument("--warmup", type=integer(0), default=1, help="untimed repetitions first (default %(default)s)")
    p.add_argument("--xla", choices=["on", "off", "auto"], default="auto", help="XLA: auto = on GPU only")
    p.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                   help="train.precision (default: the profile's; paper: auto = bf16 where the hardware has it, "
                        "else float32 on CPU / float16 on older GPUs; upsampler.training.precision)")
    p.add_argument("--content-network", choices=["untrained", "vgg19", "vgg16-hed"], default="untrained",
                   help="content-loss network (default untrained VGG19: weights change values, not speed)")
    p.add_argument("--hr-cache", choices=["auto", "on", "off"],
                   help="precompute HR VGG features once per dataset (train.cache_hr_features; "
                        "default auto, off with --baseline)")
    p.add_argument("--baseline", action="store_true",
                   help="the straightforward step: stock Keras layers and Adam, two D calls, no HR feature "
                        "cache (what the speed-ups are measured against)")
    p.add_argument("--strategy", choices=["default", "mirrored", "auto"], default="default",
                   help="tf.distribute strategy (train.strategy)")
    p.add_argument("--nondeterministic", action="store_true", help="train.deterministic=false")
    p.add_argument("--intra-op-threads", type=integer(0), help="TensorFlow intra-op threads (default: TF's)")
    p.add_argument("--inter-op-threads", type=integer(0), help="TensorFlow inter-op threads (default: TF's)")
    p.add_argument("--inference-size", type=integer(1), default=176, help="LR side of the inference image (default %(default)s)")
    p.add_argument("--tile", type=integer(1), default=88, help="inference tile, LR pixels (default %(default)s)")
    p.add_argument("--pipeline-seconds", type=number(0, low_open=True), default=2.0,
                   help="measure the input pipeline for at least this long (default %(default)s)")
    p.add_argument("--fid-batch", type=integer(1), default=16, help="images per FID feature batch (default %(default)s)")
    p.add_argument("--matmul-size", type=integer(1), default=4096, help="side of the NumPy matmul (default %(default)s)")
    p.add_argument("--skip", action="append", default=[], metavar="SECTIONS",
                   help=f"comma-separated sections to skip: {', '.join(SECTIONS)}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    p.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    p.add_argument("--output", help="also write the JSON here (and the table beside it as .txt)")


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_result(path: str | Path, result: dict[str, Any], table: str) -> None:
    """``result`` as JSON at ``path`` and ``table`` beside it (same name, ``.txt``); folders created."""
    from upsampler.utils.files import write_atomically

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, json.dumps(result, indent=2) + "\n")
    write_atomically(out.with_suffix(".txt"), table + "\n")


def run_benchmark(args) -> int:
    skip = _parse_skip(args.skip)
    if args.steps < 1 or args.warmup < 0:
        raise ValueError("--steps must be >= 1 and --warmup >= 0")
    if args.intra_op_threads or args.inter_op_threads:
        import tensorflow as tf

        if args.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
        if args.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    config = build_config(
        args.profile, batch_size=args.batch_size, xla=args.xla, precision=args.precision,
        content_network=args.content_network, hr_cache=args.hr_cache or ("off" if args.baseline else "auto"),
        strategy=args.strategy,
        deterministic=False if args.nondeterministic else None, overrides=args.set,
    )

    def log(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    result = _json_ready(run(config, steps=args.steps, warmup=args.warmup, skip=skip,
                             inference_size=args.inference_size, tile=args.tile, fid_batch=args.fid_batch,
                             matmul_size=args.matmul_size, pipeline_seconds=args.pipeline_seconds,
                             fast=not args.baseline, log=log))
    table = format_table(result)
    if args.output:
        write_result(args.output, result, table)
    if args.json:
        print(json.dumps(result))
    else:
        print(table)
    return 0
