"""The measurements behind ``upsampler benchmark`` (:mod:`upsampler.tools.bench`): :func:`run` and its
sections, their synthetic input and config, the timing helpers, the matmul yardstick and the
description of the machine. Useful FLOPs are counted by :mod:`upsampler.tools.flops`.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np

from upsampler.tools.flops import step_flops
from upsampler.utils import hardware

UNTRAINED_NOTE = ("content network: untrained VGG19 (benchmark default; the weights change the values, not the speed "
                  "- use --content-network vgg19 or vgg16-hed to load real ones)")


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


class JaxMatmul:
    """``jnp.matmul`` of two ``n x n`` operands of ``dtype`` on JAX's default device, jitted once;
    each call returns one GFLOP/s sample (only a scalar comes back)."""

    def __init__(self, dtype: str = "float32", n: int = 4096):
        import jax
        import jax.numpy as jnp

        self.n = n
        a, b = matmul_operands(n)
        self.a, self.b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
        self.fn = jax.jit(lambda x, y: jnp.sum(jnp.matmul(x, y), dtype=jnp.float32))
        self.fn(self.a, self.b).block_until_ready()

    def __call__(self) -> float:
        start = time.perf_counter()
        self.fn(self.a, self.b).block_until_ready()
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


def backend_info() -> dict[str, Any]:
    """The Keras backend and the versions of it, Keras and the engine underneath."""
    import keras

    backend = keras.backend.backend()
    info: dict[str, Any] = {"backend": backend, "keras_version": keras.__version__}
    if backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow_version"] = info["backend_version"] = tf.__version__
    elif backend == "jax":
        import jax

        info["jax_version"] = info["backend_version"] = jax.__version__
    return info


def device_info() -> dict[str, Any]:
    import keras

    info: dict[str, Any] = {
        "cpu": hardware.cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpus": [gpu["name"] for gpu in hardware.gpus()],
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        info.update(intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
                    inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(),
                    onednn=hardware.onednn_enabled())
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

    config = get_profile(profile).with_values({
        "train.jit_compile": xla, "train.precision": precision, "loss.content_network": content_network,
        "train.cache_hr_features": hr_cache, "train.strategy": strategy, "train.progress": False,
        "train.batch_size": batch_size, "train.deterministic": deterministic,
    }).override(overrides)
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
    """Run the benchmark sections for ``config`` and return the result dict (see :mod:`upsampler.tools.bench`)."""
    import keras

    from upsampler.training import distribute
    from upsampler.training.steps_tf import Speedups
    from upsampler.training.trainer import SRGANTrainer

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def step_number(k: int):
            return tf.constant(k, tf.int64)
    else:
        def step_number(k: int):
            return k

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
        **backend_info(),
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
        "strategy": distribute.describe(steps_.strategy) if backend == "tensorflow" else
                    f"jax data parallel over {steps_.num_replicas} device(s)",
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
        if backend == "tensorflow":
            matmuls["tensorflow"] = TensorFlowMatmul(matmul_dtype, "/GPU:0" if on_gpu else "/CPU:0", matmul_size)
        else:
            matmuls["jax"] = JaxMatmul(matmul_dtype, matmul_size)
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
            np.asarray(steps_.adversarial_step(lr_batch, hr_batch, step_number(counter[0])))  # waits for the device

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
        if on_gpu and backend == "tensorflow":
            result["gpu_matmul_tf32"] = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    else:
        result["skipped"]["matmul"] = "--skip"

    # -- generator-only pre-training step -------------------------------------------------
    if "pretrain" not in skip:
        lr_p, hr_p = next(iter(feed.dataset(1, phase="pretrain")))
        counter = [0]

        def pretrain():
            counter[0] += 1
            np.asarray(steps_.pretrain_step(lr_p, hr_p, step_number(counter[0])))

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
            from upsampler.inference.tiles import upscale_image
        except ImportError as exc:
            result["skipped"]["inference"] = f"upsampler.inference.tiles.upscale_image unavailable ({exc})"
        else:
            try:
                if hasattr(steps_, "sync_to_models"):  # JAX: the jitted steps own the weights until written back
                    steps_.sync_to_models()
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
    if "fid" not in skip and backend != "tensorflow":
        result["skipped"]["fid"] = "the FID Inception and its resize run on TensorFlow"
    elif "fid" not in skip:
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
