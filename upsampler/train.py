"""SRGAN training with exact resume.

A run directory holds::

    config.json      the full resolved config (read back on resume)
    loss.csv         one row per epoch and phase, appended exactly once each
    train.log        human-readable log (appended, never truncated)
    checkpoints/     one tf.train.Checkpoint: G, D, all optimisers, epochs done, step, metrics
    generator.keras  the latest generator, for inference
    samples/         a fixed small test batch rendered every few epochs

``train(...)`` runs (or continues) to ``config.train.epochs`` adversarial epochs after
``config.train.pretrain_epochs`` generator-only MSE epochs. Running it again resumes from the
latest checkpoint; a larger ``epochs`` continues a finished run. The data order, the noisy
labels and the flips of every step are pure functions of (seed, epoch, step), so a run that
is killed and resumed reproduces an uninterrupted one exactly (with ``deterministic=True``).

Speed (measured with ``upsampler benchmark``; see ``benchmarks/README.md``): the steps are
``tf.function`` graphs (XLA per ``train.jit_compile``: auto = on GPUs only; it is slower on
CPU); HR VGG features are never differentiated and, with fixed crops, are computed once per
dataset (``train.cache_hr_features``, ``run_dir/cache/``); Adam is TensorFlow's fused update;
D's SR logits serve both losses and its Flatten->Dense head runs once over HR and SR;
``train.mixed_precision`` is mixed_float16 with loss scaling on GPUs (mixed_bfloat16 on CPUs).

Several devices: ``train.strategy`` (``--strategy``) runs the same step under a
``tf.distribute`` strategy with global-batch semantics; see :mod:`upsampler.distribute`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Config, get_profile

LOSS_COLUMNS = [
    "phase", "epoch", "step", "d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake", "seconds",
]
# The metrics the checkpoint keeps of the last finished epoch, so loss.csv can be completed
# exactly once even if the process dies between saving the checkpoint and appending the row.
_METRIC_NAMES = ["d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake", "seconds"]
PRETRAIN_EPOCH_KEY_OFFSET = 1_000_000
# Test hook: SIGKILL this process when the global step reaches this value (exact-resume test).
FAULT_ENV = "UPSAMPLER_FAULT_AT_STEP"
# Fields that may change between invocations on the same run directory.
_RESUMABLE_FIELDS = {
    "train": {"epochs", "pretrain_epochs", "progress", "sample_every", "checkpoint_every", "keep_checkpoints",
              "saturation_patience", "saturation_threshold", "jit_compile", "strategy", "cache_hr_features"},
}
# The HR VGG feature cache is used in "auto" mode only below this size (bytes, in host memory).
HR_FEATURE_CACHE_LIMIT = 4 * 2**30


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    pretrain_epochs_done: int
    epochs_done: int
    step: int
    saturation_warning: str | None = None
    summary: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.summary)


# ---- run directory bookkeeping ------------------------------------------------------------

def resolve_run_config(requested: Config, run_dir: Path) -> Config:
    """The config to use in ``run_dir``: ``requested``, checked against a saved one on resume.

    Only schedule fields (epochs, sampling, checkpoint cadence) may differ from the saved
    config; anything that changes the model or the data raises a ValueError naming the field.
    """
    saved_path = run_dir / "config.json"
    if not saved_path.exists():
        return requested
    saved = Config.from_json(saved_path)
    saved_dict, requested_dict = saved.to_dict(), requested.to_dict()
    differences = []
    for section, values in requested_dict.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if saved_dict[section].get(key) != value and key not in _RESUMABLE_FIELDS.get(section, set()):
                differences.append(f"{section}.{key}: saved {saved_dict[section].get(key)!r}, requested {value!r}")
    if differences:
        raise ValueError(
            f"{saved_path}: the run was made with a different configuration; use another run directory or "
            "the same settings. Differences: " + "; ".join(differences)
        )
    return requested


def read_loss_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_loss_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in LOSS_COLUMNS})
        f.flush()
        os.fsync(f.fileno())


def _log(run_dir: Path, message: str, echo: bool = True) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with (run_dir / "train.log").open("a") as f:
        f.write(f"[{stamp}] {message}\n")
    if echo:
        print(message, flush=True)


# ---- the optimiser ----------------------------------------------------------------------------

_FUSED_ADAM = None


def fused_adam_class():
    """``keras.optimizers.Adam`` whose per-variable update is TensorFlow's fused ``ResourceApplyAdam``.

    Keras 3's Adam updates each variable with about ten separate elementwise ops; on the
    discriminator's 63 M-parameter Dense kernel that is several GB of memory traffic per
    step. ``ResourceApplyAdam`` does the same update (``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``,
    ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``, ``w -= lr_t m / (sqrt(v) + eps)``) in
    one pass. Same slots, so checkpoints are interchangeable with ``keras.optimizers.Adam``.
    Distributed (mirrored) slots and amsgrad fall back to the Keras update.
    """
    global _FUSED_ADAM
    if _FUSED_ADAM is not None:
        return _FUSED_ADAM
    import keras
    import tensorflow as tf

    class FusedAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            index = self._get_variable_index(variable)
            m, v = self._momentums[index].value, self._velocities[index].value
            if (self.amsgrad or isinstance(m, tf.distribute.DistributedValues)
                    or isinstance(variable, tf.distribute.DistributedValues) or not hasattr(variable, "handle")):
                return super().update_step(gradient, variable, learning_rate)
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            beta_1 = tf.cast(self.beta_1, dtype)
            beta_2 = tf.cast(self.beta_2, dtype)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle,
                beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False,
            )

    _FUSED_ADAM = FusedAdam
    return FusedAdam


# ---- the trainer ----------------------------------------------------------------------------

class SRGANTrainer:
    """Owns the models, optimisers, checkpoint and compiled steps of one run directory.

    Args:
        config: the run's :class:`Config`.
        data_dir: a processed data folder (``upsampler preprocess``); or None with ``arrays``.
        run_dir: the run directory (checkpoints, HR feature cache); None for a trainer that
            never saves (benchmarks).
        arrays: ``(train_lr, train_hr)`` uint8 arrays instead of ``data_dir`` (benchmarks,
            tests); the sample batch is then taken from them.
        strategy: a ``tf.distribute.Strategy``; default: ``make_strategy(config.train.strategy)``.
            Models, optimisers and counters are created in its scope; ``config.train.batch_size``
            is the global batch (see :mod:`upsampler.distribute`).
        precision: force a Keras dtype policy ("float32", "mixed_float16", "mixed_bfloat16");
            default from ``train.mixed_precision``: mixed_float16 (with loss scaling) on a GPU,
            mixed_bfloat16 elsewhere, float32 when off.
        fast: the speed-ups that keep the maths (fused BatchNorm/PReLU layers, the
            space-to-depth output convolution, fused Adam, one D head pass for HR and SR).
            ``False`` gives the straightforward step (stock Keras layers and Adam, two D
            calls) - the benchmark's baseline.
        fused_layers: the fused layers alone (default: ``fast``); the exported
            ``generator.keras`` always has stock layers (:func:`upsampler.models.portable_generator`).

    Performance notes (see ``benchmarks/README.md``): the steps are ``tf.function`` graphs
    (XLA per ``train.jit_compile``); HR VGG features never enter a gradient tape and, when the
    training crops are fixed (``data.flips`` off), are computed once per dataset and fed with
    the batches (``train.cache_hr_features``), stored under ``run_dir/cache/``.
    """

    def __init__(self, config: Config, data_dir: str | Path | None = None, run_dir: str | Path | None = None, *,
                 arrays=None, strategy=None, precision: str | None = None, fast: bool = True,
                 fused_layers: bool | None = None):
        import tensorflow as tf
        import keras

        from . import data as data_lib
        from . import distribute
        from .losses import ContentLoss
        from .models import build_models_from_config

        self.tf, self.keras = tf, keras
        self.fast = bool(fast)
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        t = config.train

        if t.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(t.seed)

        if arrays is not None:
            self.train_lr, self.train_hr = (np.asarray(a) for a in arrays[:2])
        else:
            if self.data_dir is None:
                raise ValueError("SRGANTrainer needs data_dir or arrays")
            self.train_lr, self.train_hr, _ = data_lib.load_split(self.data_dir, "train")
        expected = (config.data.lr_size, config.data.hr_size)
        if self.train_hr.shape[1] != expected[1] or self.train_lr.shape[1] != expected[0]:
            raise ValueError(
                f"{self.data_dir}: images are {self.train_lr.shape[1]}->{self.train_hr.shape[1]} px but the config "
                f"expects {expected[0]}->{expected[1]}; preprocess with --hr-size {config.data.hr_size} "
                f"--scale {config.data.scale} or change data.hr_size"
            )
        self.steps_per_epoch = t.steps_per_epoch or data_lib.steps_per_epoch(len(self.train_hr), t.batch_size)
        self.sample_lr, self.sample_hr = self._sample_batch(data_lib) if arrays is None else (
            self.train_lr[: t.num_samples], self.train_hr[: t.num_samples])

        self.strategy = strategy if strategy is not None else distribute.make_strategy(t.strategy)
        self.num_replicas = distribute.num_replicas(self.strategy)
        if t.batch_size % self.num_replicas:
            raise ValueError(
                f"train.batch_size ({t.batch_size}) is the global batch and must be divisible by the number of "
                f"replicas ({self.num_replicas}, {distribute.describe(self.strategy)})"
            )
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
        if precision is None:
            precision = ("mixed_float16" if on_gpu else "mixed_bfloat16") if t.mixed_precision else "float32"
        if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
            raise ValueError(f"precision must be float32, mixed_float16 or mixed_bfloat16, got {precision!r}")
        self.precision = precision
        self.loss_scaling = self.precision == "mixed_float16"
        jit = {"on": True, "off": False}.get(t.jit_compile, on_gpu)
        if self.num_replicas > 1:
            jit = False  # see upsampler.distribute: XLA only on a single replica
        self.jit_compile = jit

        previous_policy = keras.mixed_precision.dtype_policy()
        keras.mixed_precision.set_dtype_policy(self.precision)
        self.fused_layers = self.fast if fused_layers is None else bool(fused_layers)
        try:
            with self.strategy.scope():
                self.generator, self.discriminator = build_models_from_config(
                    config, variant="fast" if self.fused_layers else "stock")
                if self.num_replicas > 1:
                    distribute.set_synchronized_batch_norm(self.generator, True)
                    distribute.set_synchronized_batch_norm(self.discriminator, True)
                self.content_loss = ContentLoss(config.loss, seed=t.seed, xla=jit)
                adam = dict(beta_1=t.beta_1, beta_2=t.beta_2, epsilon=t.epsilon)
                self.g_optimizer = self._optimizer(t.learning_rate, adam)
                self.d_optimizer = self._optimizer(t.learning_rate, adam)
                self.pretrain_optimizer = self._optimizer(t.pretrain_learning_rate, adam)
                # Build optimiser slots now so a restore fills them instead of deferring.
                self.g_optimizer.build(self.generator.trainable_variables)
                self.d_optimizer.build(self.discriminator.trainable_variables)
                self.pretrain_optimizer.build(self.generator.trainable_variables)

                self.pretrain_epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="pretrain_epochs_done")
                self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
                self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
                self.last_metrics = tf.Variable(np.zeros(len(_METRIC_NAMES)), dtype=tf.float64, trainable=False,
                                                name="last_epoch_metrics")
        finally:
            keras.mixed_precision.set_dtype_policy(previous_policy)
        self.checkpoint = tf.train.Checkpoint(
            generator=self.generator, discriminator=self.discriminator,
            g_optimizer=self.g_optimizer, d_optimizer=self.d_optimizer, pretrain_optimizer=self.pretrain_optimizer,
            pretrain_epochs_done=self.pretrain_epochs_done, epochs_done=self.epochs_done,
            global_step=self.global_step, last_epoch_metrics=self.last_metrics,
        )
        self.manager = None
        if self.run_dir is not None:
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, str(self.run_dir / "checkpoints"), max_to_keep=t.keep_checkpoints
            )
        self._adversarial_step = self._compile(lambda *a: self._adversarial_step_impl(*a))
        self._pretrain_step = self._compile(lambda *a: self._pretrain_step_impl(*a))
        self.hr_features = None  # (N, h, w, c) float32 once computed; see prepare_hr_features
        self.hr_feature_cache_reason = ""
        self.use_hr_feature_cache = self._decide_hr_feature_cache()

    def _optimizer(self, learning_rate, adam):
        adam_class = fused_adam_class() if self.fast else self.keras.optimizers.Adam
        opt = adam_class(learning_rate=learning_rate, name="adam", **adam)
        if self.loss_scaling:
            opt = self.keras.optimizers.LossScaleOptimizer(opt)
        return opt

    def describe(self) -> str:
        from . import distribute

        parts = [f"device strategy {distribute.describe(self.strategy)}", f"precision {self.precision}",
                 f"XLA {'on' if self.jit_compile else 'off'}"]
        if not self.fast:
            parts.append("straightforward step (stock layers and Adam)")
        cache = "on" if self.use_hr_feature_cache else "off"
        parts.append(f"HR feature cache {cache}" + (f" ({self.hr_feature_cache_reason})" if self.hr_feature_cache_reason else ""))
        return ", ".join(parts)

    # -- data --------------------------------------------------------------------------------
    def _sample_batch(self, data_lib):
        n = self.config.train.num_samples
        try:
            lr, hr, _ = data_lib.load_split(self.data_dir, "test")
        except (FileNotFoundError, ValueError):
            lr, hr = self.train_lr, self.train_hr
        if len(hr) == 0:
            lr, hr = self.train_lr, self.train_hr
        return lr[:n], hr[:n]

    def _decide_hr_feature_cache(self) -> bool:
        """Whether the HR VGG features are precomputed once (fixed crops: flips off)."""
        mode = self.config.train.cache_hr_features
        if self.content_loss.kind != "vgg":
            self.hr_feature_cache_reason = "pixel content loss"
            return False
        if mode == "off":
            return False
        if self.config.data.flips or self.config.data.train_crop:
            if mode == "on":
                raise ValueError("train.cache_hr_features=on needs fixed crops; data.flips or data.train_crop is on")
            self.hr_feature_cache_reason = "random flips or crops change the HR images every epoch"
            return False
        shape = self.content_loss.feature_shape(self.config.data.hr_size)
        nbytes = len(self.train_hr) * int(np.prod(shape)) * 4
        if mode == "auto" and nbytes > HR_FEATURE_CACHE_LIMIT:
            self.hr_feature_cache_reason = f"{nbytes / 2**30:.1f} GiB > {HR_FEATURE_CACHE_LIMIT / 2**30:.0f} GiB limit"
            return False
        self.hr_feature_cache_reason = f"{nbytes / 2**20:.0f} MiB"
        return True

    def _hr_feature_cache_path(self) -> Path | None:
        if self.run_dir is None:
            return None
        import hashlib

        l = self.config.loss
        key = hashlib.sha256()
        key.update(np.ascontiguousarray(self.train_hr).tobytes())
        key.update(json.dumps([l.content_layer, l.content_network, l.vgg_preprocessing, l.feature_scale,
                               self.config.train.seed, self.precision, list(self.train_hr.shape)]).encode())
        return self.run_dir / "cache" / f"hr_features_{key.hexdigest()[:16]}.npy"

    def prepare_hr_features(self, batch_size: int | None = None) -> np.ndarray | None:
        """Compute (or load from ``run_dir/cache``) the VGG features of every training HR image.

        A pure function of the HR images and the frozen VGG, so a resumed run gets the same
        values (bit for bit when loaded from the cache file). Returns None when the cache is off.
        """
        if not self.use_hr_feature_cache:
            return None
        if self.hr_features is not None:
            return self.hr_features
        tf = self.tf
        path = self._hr_feature_cache_path()
        if path is not None and path.exists():
            try:
                features = np.load(path, mmap_mode=None)
                if features.shape[0] == len(self.train_hr):
                    self.hr_features = features
                    return features
            except (OSError, ValueError):
                pass  # a truncated cache file is recomputed
        batch_size = batch_size or max(1, self.config.train.batch_size // self.num_replicas)
        extract = tf.function(lambda x: self.content_loss.features(tf.cast(x, tf.float32) / 127.5 - 1.0),
                              jit_compile=self.jit_compile)
        shape = self.content_loss.feature_shape(self.config.data.hr_size)
        features = np.empty((len(self.train_hr), *shape), np.float32)
        for first in range(0, len(self.train_hr), batch_size):
            chunk = self.train_hr[first: first + batch_size]
            if len(chunk) < batch_size:  # keep one traced shape
                padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
                features[first:] = extract(tf.constant(padded)).numpy()[: len(chunk)]
            else:
                features[first: first + batch_size] = extract(tf.constant(chunk)).numpy()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, features)
            os.replace(tmp, path)
        self.hr_features = features
        return features

    def dataset(self, epoch: int, skip_batches: int = 0, *, phase: str = "adversarial"):
        """One epoch of ``(lr, hr)`` batches, or ``(lr, (hr, hr_features))`` with the feature cache.

        The images come from :func:`upsampler.data.make_train_dataset`; the cached features
        follow the same ``epoch_order`` permutation, so batch k carries the features of its own
        HR images.
        """
        tf = self.tf
        from . import data as data_lib

        d, t = self.config.data, self.config.train
        ds = data_lib.make_train_dataset(
            self.train_lr, self.train_hr, batch_size=t.batch_size, seed=t.seed, epoch=epoch, flips=d.flips,
            crop=d.train_crop, shuffle_buffer=d.shuffle_buffer, skip_batches=skip_batches,
        )
        features = self.prepare_hr_features() if phase == "adversarial" else None
        if features is not None:
            indices, _ = data_lib.epoch_order(len(self.train_hr), seed=t.seed, epoch=epoch, flips=False)
            n_batches = len(indices) // t.batch_size
            b = t.batch_size

            def feature_batches():
                for k in range(skip_batches, n_batches):
                    yield features[indices[k * b:(k + 1) * b]]

            fds = tf.data.Dataset.from_generator(
                feature_batches, output_signature=tf.TensorSpec((b, *features.shape[1:]), tf.float32))
            ds = tf.data.Dataset.zip((ds, fds)).map(lambda pair, f: (pair[0], (pair[1], f)))
            ds = ds.prefetch(tf.data.AUTOTUNE)
        if t.steps_per_epoch:
            ds = ds.repeat().take(t.steps_per_epoch - skip_batches)
        if self.num_replicas > 1:
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            ds = self.strategy.experimental_distribute_dataset(ds.with_options(options))
        elif tf.config.list_logical_devices("GPU"):
            ds = ds.apply(tf.data.experimental.prefetch_to_device(tf.config.list_logical_devices("GPU")[0].name))
        return ds

    # -- compiled steps --------------------------------------------------------------------
    def _compile(self, replica_step):
        """``tf.function`` running ``replica_step`` on every replica and summing the results.

        Each replica returns its share of the global-batch means (see ``global_batch_mean``),
        so the sum over replicas is the global value; on one device it is the value itself.
        """
        tf = self.tf
        strategy = self.strategy

        def step(lr, hr, step_number):
            per_replica = strategy.run(replica_step, args=(lr, hr, step_number))
            if self.num_replicas == 1:
                return strategy.experimental_local_results(per_replica)[0]
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return tf.function(step, jit_compile=self.jit_compile, reduce_retracing=True, autograph=False)

    def _replica_slice(self, values):
        """This replica's rows of a global-batch tensor (consecutive slices in replica order)."""
        tf = self.tf
        ctx = tf.distribute.get_replica_context()
        n = ctx.num_replicas_in_sync
        if n == 1:
            return values
        per_replica = self.config.train.batch_size // n
        start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * per_replica
        return values[start: start + per_replica]

    def _apply(self, optimizer, grads, variables):
        """``optimizer.apply`` that skips a non-finite loss-scaled step on every replica alike."""
        tf = self.tf
        if self.loss_scaling and self.num_replicas > 1:
            ctx = tf.distribute.get_replica_context()
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            non_finite_replicas = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
            all_finite = non_finite_replicas < 0.5
            grads = [tf.where(all_finite, g, tf.fill(tf.shape(g), tf.constant(float("nan"), g.dtype))) for g in grads]
        optimizer.apply(grads, variables)

    def _scaled(self, optimizer, loss):
        return optimizer.scale_loss(loss) if self.loss_scaling else loss

    def _adversarial_step_impl(self, lr, hr, step):
        """One adversarial step on this replica's slice of the global batch.

        ``hr`` is the HR batch, or ``(hr, hr_features)`` when the feature cache is on.
        Returns this replica's share of [d_loss, g_loss, content, adversarial, D(hr), D(sr)].
        """
        tf = self.tf
        from .losses import bce_with_logits_per_example, global_batch_mean, noisy_labels

        hr, hr_features = hr if isinstance(hr, (tuple, list)) else (hr, None)
        l, t = self.config.loss, self.config.train
        global_batch = t.batch_size
        seed_pair = tf.stack([tf.constant(t.seed, tf.int64), step])
        # Drawn for the whole global batch, then sliced: the same labels whatever the replica count.
        real_labels = self._replica_slice(
            noisy_labels(global_batch, l.real_label_mean, l.label_std, tf.cast(seed_pair * 2, tf.int32)))
        fake_labels = self._replica_slice(
            noisy_labels(global_batch, l.fake_label_mean, l.label_std, tf.cast(seed_pair * 2 + 1, tf.int32)))
        if self.content_loss.kind == "vgg" and hr_features is None:
            hr_features = tf.stop_gradient(self.content_loss.features(hr))  # outside both tapes

        def mean(per_example):
            return global_batch_mean(per_example, global_batch)

        if l.adversarial_weight and self.config.train.update_order == "d_then_g":
            # The paper's alternation: D steps on (HR, SR), then G steps against the updated D.
            with tf.GradientTape() as g_tape:
                sr = self.generator(lr, training=True)
                with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                    real_logits, fake_logits = self._discriminate(hr, sr)
                    d_loss = mean(bce_with_logits_per_example(real_labels, real_logits)
                                  + bce_with_logits_per_example(fake_labels, fake_logits))
                    d_scaled = self._scaled(self.d_optimizer, d_loss)
                with g_tape.stop_recording():
                    d_grads = d_tape.gradient(d_scaled, self.discriminator.trainable_variables)
                    self._apply(self.d_optimizer, d_grads, self.discriminator.trainable_variables)
                g_fake_logits = self.discriminator(sr, training=True)
                content = mean(self.content_loss.per_example(hr, sr, hr_features=hr_features))
                adversarial = mean(bce_with_logits_per_example(tf.ones_like(g_fake_logits, tf.float32), g_fake_logits))
                g_loss = content + l.adversarial_weight * adversarial
                g_scaled = self._scaled(self.g_optimizer, g_loss)
            g_grads = g_tape.gradient(g_scaled, self.generator.trainable_variables)
            self._apply(self.g_optimizer, g_grads, self.generator.trainable_variables)
        else:
            # Both networks step from one forward pass: G's gradient sees D before its update.
            with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
                sr = self.generator(lr, training=True)
                real_logits, fake_logits = self._discriminate(hr, sr)  # fake_logits serve both losses
                d_loss = mean(bce_with_logits_per_example(real_labels, real_logits)
                              + bce_with_logits_per_example(fake_labels, fake_logits))
                content = mean(self.content_loss.per_example(hr, sr, hr_features=hr_features))
                adversarial = mean(bce_with_logits_per_example(tf.ones_like(fake_logits, tf.float32), fake_logits))
                g_loss = content + l.adversarial_weight * adversarial
                g_scaled = self._scaled(self.g_optimizer, g_loss)
                d_scaled = self._scaled(self.d_optimizer, d_loss)
            g_grads = g_tape.gradient(g_scaled, self.generator.trainable_variables)
            d_grads = d_tape.gradient(d_scaled, self.discriminator.trainable_variables)
            self._apply(self.g_optimizer, g_grads, self.generator.trainable_variables)
            self._apply(self.d_optimizer, d_grads, self.discriminator.trainable_variables)
        d_real = mean(tf.sigmoid(tf.cast(tf.reshape(real_logits, [-1]), tf.float32)))
        d_fake = mean(tf.sigmoid(tf.cast(tf.reshape(fake_logits, [-1]), tf.float32)))
        return tf.stack([d_loss, g_loss, content, adversarial, d_real, d_fake])

    def _discriminator_parts(self):
        """(trunk, head layers) of D when it ends Flatten -> Dense... (the SRGAN D), else None."""
        if not hasattr(self, "_d_parts"):
            self._d_parts = None
            d = self.discriminator
            if not self.fast:
                return None
            names = [layer.name for layer in d.layers]
            if "flatten" in names:
                cut = names.index("flatten")
                head = d.layers[cut + 1:]
                # A plain chain after Flatten: every head layer takes the previous one's output.
                if head and all(len(layer._inbound_nodes) == 1 for layer in head):
                    trunk = self.keras.Model(d.input, d.get_layer("flatten").output, name=f"{d.name}_trunk")
                    self._d_parts = (trunk, head)
        return self._d_parts

    def _discriminate(self, hr, sr):
        """D(HR) and D(SR) in training mode, exactly as two calls of D, but with one pass of the
        per-image head (Flatten -> Dense 1024 -> Dense 1) over both batches together.

        The convolutional trunk runs on each batch separately (its BatchNormalization keeps
        per-batch statistics, real first, as two D calls would); the head has no cross-image
        coupling, so stacking the two batches changes no value but reads the 63 M-parameter
        Dense kernel once instead of twice and produces its weight gradient in one matmul
        instead of two plus a sum.
        """
        tf = self.tf
        parts = self._discriminator_parts()
        if parts is None:
            return self.discriminator(hr, training=True), self.discriminator(sr, training=True)
        trunk, head = parts
        x = tf.concat([trunk(hr, training=True), trunk(sr, training=True)], axis=0)
        for layer in head:
            x = layer(x, training=True)
        n = tf.shape(hr)[0]
        return x[:n], x[n:]

    def _pretrain_step_impl(self, lr, hr, step):
        tf = self.tf
        from .losses import global_batch_mean, pixel_mse_per_example

        hr = hr[0] if isinstance(hr, (tuple, list)) else hr
        with tf.GradientTape() as tape:
            sr = self.generator(lr, training=True)
            loss = global_batch_mean(pixel_mse_per_example(hr, sr), self.config.train.batch_size)
            scaled = self._scaled(self.pretrain_optimizer, loss)
        grads = tape.gradient(scaled, self.generator.trainable_variables)
        self._apply(self.pretrain_optimizer, grads, self.generator.trainable_variables)
        nan = tf.constant(float("nan"))
        return tf.stack([nan, loss, loss, nan, nan, nan])

    # -- epochs ------------------------------------------------------------------------------
    def run_epoch(self, phase: str, epoch: int) -> dict[str, float]:
        """One epoch of ``phase`` ("pretrain" or "adversarial"); returns the mean metrics."""
        tf = self.tf
        from tqdm.auto import tqdm

        step_fn = self._pretrain_step if phase == "pretrain" else self._adversarial_step
        fault_at = int(os.environ.get(FAULT_ENV, "0") or 0)
        sums = np.zeros(6)
        count = 0
        start = time.perf_counter()
        # Phases use disjoint shuffle keys so pre-training and adversarial epochs differ.
        data_epoch = epoch if phase == "adversarial" else PRETRAIN_EPOCH_KEY_OFFSET + epoch
        bar = tqdm(
            self.dataset(data_epoch, phase=phase), total=self.steps_per_epoch, desc=f"{phase} epoch {epoch}",
            disable=not self.config.train.progress, leave=False, file=sys.stdout,
        )
        step = int(self.global_step.numpy())  # kept on the host: no device read per step
        for lr, hr in bar:
            step += 1
            values = step_fn(lr, hr, tf.constant(step, tf.int64)).numpy().astype(np.float64)
            if not np.all(np.isfinite(values[[1, 2]])) or (phase == "adversarial" and not np.all(np.isfinite(values))):
                raise TrainingDiverged(
                    f"{phase} epoch {epoch}, step {step}: non-finite loss "
                    + ", ".join(f"{n}={v:.4g}" for n, v in zip(_METRIC_NAMES, values))
                    + f". Training stopped; the last good checkpoint in {self.run_dir / 'checkpoints'} is kept."
                )
            self.global_step.assign(step)
            sums += values
            count += 1
            if count % 5 == 0 or count == self.steps_per_epoch:
                means = sums / count
                bar.set_postfix(
                    {"g": f"{means[1]:.4f}"} if phase == "pretrain"
                    else {"d": f"{means[0]:.3f}", "g": f"{means[1]:.4f}", "D(hr)": f"{means[4]:.2f}",
                          "D(sr)": f"{means[5]:.2f}"}
                )
            if fault_at and step == fault_at:
                os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        if count == 0:
            raise ValueError(f"{self.data_dir}: the training split yields no batch of {self.config.train.batch_size}")
        means = sums / count
        metrics = dict(zip(_METRIC_NAMES, [*means, time.perf_counter() - start]))
        return metrics

    def save(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        """Checkpoint, then generator.keras, then the loss row (see ``_complete_loss_log``)."""
        self.last_metrics.assign([metrics[n] for n in _METRIC_NAMES])
        self.manager.save(checkpoint_number=int(self.global_step.numpy()))
        tmp = self.run_dir / "generator.tmp.keras"
        self.export_generator().save(tmp)
        os.replace(tmp, self.run_dir / "generator.keras")
        self.append_row_once(phase, epoch, metrics)

    def export_generator(self):
        """The generator as a plain-Keras model (stock layers), refreshed with the current weights."""
        from .models import portable_generator

        self._portable = portable_generator(self.generator, getattr(self, "_portable", None))
        return self._portable

    def append_row_once(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        """Append the epoch's row unless loss.csv has it already.

        An epoch logged after the last checkpoint is re-run on resume; determinism makes the
        re-run identical, so the existing row stands and nothing is written twice or removed.
        """
        path = self.run_dir / "loss.csv"
        if any(r["phase"] == phase and int(r["epoch"]) == epoch for r in read_loss_rows(path)):
            return
        append_loss_row(path, self._row(phase, epoch, metrics))

    def _row(self, phase: str, epoch: int, metrics: dict[str, float]) -> dict:
        def fmt(v: float) -> str:
            return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.8g}"

        return {"phase": phase, "epoch": epoch, "step": int(self.global_step.numpy()),
                **{n: fmt(float(metrics[n])) for n in _METRIC_NAMES}}

    def restore(self) -> bool:
        latest = self.manager.latest_checkpoint
        if not latest:
            return False
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        self._complete_loss_log()
        return True

    def _complete_loss_log(self) -> None:
        """Append the checkpointed epoch's row if the process died before writing it."""
        rows = read_loss_rows(self.run_dir / "loss.csv")
        pre, adv = int(self.pretrain_epochs_done.numpy()), int(self.epochs_done.numpy())
        phase, epoch = ("adversarial", adv) if adv > 0 else ("pretrain", pre)
        if epoch == 0:
            return
        logged = {(r["phase"], int(r["epoch"])) for r in rows}
        if (phase, epoch) not in logged:
            metrics = dict(zip(_METRIC_NAMES, self.last_metrics.numpy().tolist()))
            self.append_row_once(phase, epoch, metrics)
            _log(self.run_dir, f"loss.csv: recovered the row of {phase} epoch {epoch} from the checkpoint", echo=False)

    def save_samples(self, phase: str, epoch: int) -> Path:
        from PIL import Image

        from .images import bicubic_upscale, to_float, to_uint8

        sr = to_uint8(self.generator(to_float(self.sample_lr), training=False).numpy())
        scale = self.config.data.scale
        rows = [np.concatenate([bicubic_upscale(lr, scale), s, h], axis=1)
                for lr, s, h in zip(self.sample_lr, sr, self.sample_hr)]
        path = self.run_dir / "samples" / f"{phase}_epoch_{epoch:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)
        return path


# ---- the entry point ---------------------------------------------------------------------------

def train(config: Config, data_dir: str | Path, run_dir: str | Path) -> TrainResult:
    """Train (or resume) the run in ``run_dir`` to ``config.train`` epochs. See the module docstring."""
    from .losslog import detect_saturation

    run_dir = Path(run_dir)
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"{data_dir}: no such processed data folder (run `upsampler preprocess` first)")
    config.validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    config = resolve_run_config(config, run_dir)
    from .provenance import provenance

    stamp = provenance()
    payload = {**config.to_dict(), "provenance": stamp}
    tmp = run_dir / "config.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / "config.json")

    trainer = SRGANTrainer(config, data_dir, run_dir)
    resumed = trainer.restore()
    t = config.train
    pre_done, adv_done = int(trainer.pretrain_epochs_done.numpy()), int(trainer.epochs_done.numpy())
    if adv_done > 0 and t.pretrain_epochs > pre_done:
        raise ValueError(
            f"{run_dir}: adversarial training has started ({adv_done} epochs); pretrain_epochs cannot grow "
            f"from {pre_done} to {t.pretrain_epochs}"
        )
    header = [f"run directory: {run_dir}", stamp["line"], *config.summary_lines()]
    from .models import parameter_counts

    g_params = parameter_counts(trainer.generator)["total"]
    d_params = parameter_counts(trainer.discriminator)["total"]
    header.append(f"parameters: generator {g_params:,}, discriminator {d_params:,}")
    header.append(trainer.describe())
    header.append(
        f"{'resumed at' if resumed else 'starting at'} pretrain epoch {pre_done}/{t.pretrain_epochs}, "
        f"adversarial epoch {adv_done}/{t.epochs}, step {int(trainer.global_step.numpy())}"
    )
    for line in header:
        _log(run_dir, line)

    saturation_warning = None
    collapse_warning = None
    for phase, done_var, target in (
        ("pretrain", trainer.pretrain_epochs_done, t.pretrain_epochs),
        ("adversarial", trainer.epochs_done, t.epochs),
    ):
        while int(done_var.numpy()) < target:
            epoch = int(done_var.numpy()) + 1
            try:
                metrics = trainer.run_epoch(phase, epoch)
            except TrainingDiverged as exc:
                _log(run_dir, f"ERROR: {exc}")
                raise
            done_var.assign(epoch)
            last = epoch == target
            if epoch % t.checkpoint_every == 0 or last:
                trainer.save(phase, epoch, metrics)
            else:
                trainer.append_row_once(phase, epoch, metrics)
            if epoch % t.sample_every == 0 or last:
                trainer.save_samples(phase, epoch)
            message = f"{phase} epoch {epoch}/{target}: " + ", ".join(
                f"{n}={metrics[n]:.4g}" for n in _METRIC_NAMES if not math.isnan(metrics[n])
            )
            _log(run_dir, message, echo=t.progress)
            if phase == "adversarial":
                report = _saturation(run_dir, t, detect_saturation)
                if report is not None and saturation_warning is None:
                    saturation_warning = f"WARNING: discriminator saturated: {report}"
                    _log(run_dir, saturation_warning)
                collapsed = _collapse(run_dir, t)
                if collapsed is not None and collapse_warning is None:
                    collapse_warning = f"WARNING: discriminator collapsed (D(real) ~ D(fake) ~ 0.5): {collapsed}"
                    _log(run_dir, collapse_warning)

    summary = [
        f"finished: {int(trainer.pretrain_epochs_done.numpy())} pre-training + {int(trainer.epochs_done.numpy())} "
        f"adversarial epochs, step {int(trainer.global_step.numpy())}, run directory {run_dir}",
    ]
    if config.uses_untrained_features:
        from .config import UNTRAINED_VGG_WARNING

        summary.append(UNTRAINED_VGG_WARNING)
    if saturation_warning:
        summary.append(saturation_warning)
    if collapse_warning:
        summary.append(collapse_warning)
    for line in summary:
        _log(run_dir, line)
    return TrainResult(
        run_dir=run_dir, pretrain_epochs_done=int(trainer.pretrain_epochs_done.numpy()),
        epochs_done=int(trainer.epochs_done.numpy()), step=int(trainer.global_step.numpy()),
        saturation_warning=saturation_warning, summary=header + summary,
    )


def _collapse(run_dir: Path, t) -> str | None:
    import pandas as pd

    from .losslog import detect_collapse

    frame = pd.read_csv(run_dir / "loss.csv")
    report = detect_collapse(frame[frame["phase"] == "adversarial"].reset_index(drop=True),
                             patience=t.saturation_patience)
    return report.evidence if report.saturated else None


def _saturation(run_dir: Path, t, detect_saturation) -> str | None:
    import pandas as pd

    frame = pd.read_csv(run_dir / "loss.csv")
    frame = frame[frame["phase"] == "adversarial"].reset_index(drop=True)
    report = detect_saturation(frame, patience=t.saturation_patience, threshold=t.saturation_threshold)
    return report.evidence if report.saturated else None


# ---- command line ------------------------------------------------------------------------------

def configure_train_parser(p) -> None:
    p.add_argument("--data", required=True, help="processed data folder (the output of `upsampler preprocess`)")
    p.add_argument("--run-dir", required=True, help="run directory; an existing one is resumed")
    p.add_argument("--profile", default="paper", choices=["paper", "original", "study-cpu", "demo", "smoke"],
                   help="paper (the study, SRGAN-paper style), original (the 2019 study's choices), study-cpu (the "
                        "CPU-scale study), demo (CPU minutes) or smoke (seconds); default %(default)s")
    p.add_argument("--epochs", type=int, help="total adversarial epochs to reach")
    p.add_argument("--pretrain-epochs", type=int, help="generator-only MSE epochs before the adversarial phase")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training set")
    p.add_argument("--content-network", choices=["vgg19", "vgg16-hed", "untrained"],
                   help="network of the content loss (default: the profile's): vgg19 = ImageNet VGG19 (downloaded "
                        "once), vgg16-hed = pretrained VGG16-HED (offline), untrained = tests only, labelled")
    p.add_argument("--strategy", choices=["default", "mirrored", "auto"],
                   help="tf.distribute: default = one device, mirrored = all local GPUs (global batch "
                        "--batch-size split between them), auto = mirrored when there are several GPUs")
    p.add_argument("--xla", choices=["auto", "on", "off"], help="XLA-compile the steps (auto: on GPU only)")
    p.add_argument("--mixed-precision", action="store_true", default=None,
                   help="mixed_float16 with loss scaling on GPU, mixed_bfloat16 on CPU (train.mixed_precision)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set model.upsample=nearest (repeatable)")
    p.add_argument("--config", help="start from a saved config.json instead of a profile")


def config_from_args(args) -> Config:
    config = Config.from_json(args.config) if getattr(args, "config", None) else get_profile(args.profile)
    overrides = list(args.set)
    for flag, key in (("epochs", "train.epochs"), ("pretrain_epochs", "train.pretrain_epochs"),
                      ("batch_size", "train.batch_size"), ("steps_per_epoch", "train.steps_per_epoch"),
                      ("content_network", "loss.content_network"), ("strategy", "train.strategy"),
                      ("xla", "train.jit_compile"), ("mixed_precision", "train.mixed_precision")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return config.override(overrides)


def run_train(args) -> int:
    config = config_from_args(args)
    try:
        result = train(config, args.data, args.run_dir)
    except TrainingDiverged as exc:
        print(f"upsampler train: {exc}", file=sys.stderr)
        return 3
    except RuntimeError as exc:  # e.g. VGG weights unavailable offline
        print(f"upsampler train: error: {exc}", file=sys.stderr)
        return 2
    return 0 if result.epochs_done >= config.train.epochs else 1
