"""The trainer: one run's training steps, their feed, the progress counters and the checkpoint.

:class:`SRGANTrainer` builds the steps (:mod:`upsampler.training.steps_tf` or
:mod:`upsampler.training.steps_jax`) and the feed (:mod:`upsampler.training.feed`), runs one epoch of a
phase, and saves to and restores from the run directory (:mod:`upsampler.training.rundir`); the epoch
loop that drives it is :func:`upsampler.training.train.train`.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from upsampler.config import Config
from upsampler.training.budget import phase_budget_used
from upsampler.training.rundir import RunDirectory
from upsampler.training.steps_tf import STEP_VALUES, Speedups

# The metrics of an epoch: the step values and the epoch's wall time. The checkpoint keeps those
# of the last finished epoch, so loss.csv can be completed exactly once even if the process dies
# between saving the checkpoint and appending the row.
EPOCH_METRICS = [*STEP_VALUES, "seconds"]
PRETRAIN_EPOCH_KEY_OFFSET = 1_000_000


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class SRGANTrainer:
    """A run: the steps, their feed, the progress counters and (optionally) the run directory.

    Args:
        config: the run's :class:`Config`.
        data_dir: a processed data folder (``upsampler preprocess``); or None with ``arrays``.
        run_dir: the run directory (a path or a :class:`RunDirectory`); None for a trainer that
            never saves (benchmarks, tests).
        arrays: ``(train_lr, train_hr)`` uint8 arrays instead of ``data_dir``, used as given
            (``data.train_images`` chooses among a processed set's files); the sample batch is
            then their first images.
        strategy, precision, speedups: passed to :class:`upsampler.training.steps_tf.SRGANSteps`.
    """

    def __init__(self, config: Config, data_dir: str | Path | None = None, run_dir: str | Path | None = None, *,
                 arrays=None, strategy=None, precision: str | None = None, speedups: Speedups | None = None):
        import keras

        from upsampler.training.feed import TrainingFeed, check_sizes, load_training_arrays

        self.config = config
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if arrays is not None:
            train_lr, train_hr = (np.asarray(a) for a in arrays[:2])
            check_sizes(config, train_lr, train_hr, "arrays")
            n = config.train.num_samples
            self.sample_lr, self.sample_hr = train_lr[:n], train_hr[:n]
        elif self.data_dir is None:
            raise ValueError("SRGANTrainer needs data_dir or arrays")
        else:
            train_lr, train_hr, self.sample_lr, self.sample_hr = load_training_arrays(config, self.data_dir)
        self.run = run_dir if isinstance(run_dir, RunDirectory) or run_dir is None else RunDirectory(run_dir)
        self.backend = keras.backend.backend()
        if self.backend == "tensorflow":
            from upsampler.training.steps_tf import SRGANSteps

            self.steps = SRGANSteps(config, strategy=strategy, precision=precision, speedups=speedups)
        elif self.backend == "jax":
            from upsampler.training.steps_jax import JaxSRGANSteps

            self.steps = JaxSRGANSteps(config, strategy=strategy, precision=precision, speedups=speedups)
        else:
            raise RuntimeError(f"Keras backend {self.backend!r}: upsampler trains on tensorflow or jax "
                               "(set KERAS_BACKEND)")
        self.feed = TrainingFeed(config, self.steps, train_lr, train_hr, cache_dir=self.run.cache_dir if self.run else None,
                                 write_cache=self.run.writer if self.run else False)
        self._portable = None
        if self.backend != "tensorflow":
            _attach_array_checkpoint(self)
            return
        import tensorflow as tf

        with self.steps.strategy.scope():
            self.pretrain_epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="pretrain_epochs_done")
            self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
            self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.last_metrics = tf.Variable(np.zeros(len(EPOCH_METRICS)), dtype=tf.float64, trainable=False,
                                            name="last_epoch_metrics")
        self.checkpoint = tf.train.Checkpoint(
            **self.steps.checkpoint_objects(), pretrain_epochs_done=self.pretrain_epochs_done,
            epochs_done=self.epochs_done, global_step=self.global_step, last_epoch_metrics=self.last_metrics,
        )
        if self.run is not None:
            self.run.attach(self.checkpoint, keep=config.train.keep_checkpoints)

    @property
    def generator(self):
        return self.steps.generator

    @property
    def discriminator(self):
        return self.steps.discriminator

    def describe(self) -> str:
        return f"{self.steps.describe()}, {self.feed.describe()}"

    def run_epoch(self, phase: str, epoch: int, on_step: Callable[[int], None] | None = None) -> dict[str, float]:
        """One epoch of ``phase`` ("pretrain" or "adversarial"); returns the mean :data:`EPOCH_METRICS`."""
        from tqdm.auto import tqdm

        step_fn = self.steps.pretrain_step if phase == "pretrain" else self.steps.adversarial_step
        sums = np.zeros(len(STEP_VALUES))
        count = 0
        start = time.perf_counter()
        # Phases use disjoint shuffle keys so pre-training and adversarial epochs differ.
        data_epoch = epoch if phase == "adversarial" else PRETRAIN_EPOCH_KEY_OFFSET + epoch
        total = self.feed.steps_per_epoch
        bar = tqdm(self.feed.dataset(data_epoch, phase=phase), total=total, desc=f"{phase} epoch {epoch}",
                   disable=not self.config.train.progress, leave=False, file=sys.stdout)
        start_step = int(self.global_step.numpy())
        step = int(self.global_step.numpy())  # kept on the host: no device read per step
        # TensorFlow's step returns its values synchronously; JAX's are read every few steps so the
        # host keeps dispatching while the device works.
        sync_every = 1 if self.backend == "tensorflow" else 16
        pending: list = []

        def drain() -> None:
            """Check and add the pending steps' values; the global step follows the last one read."""
            nonlocal sums, count
            for at, device_values in pending:
                values = np.asarray(device_values, np.float64)
                if not np.all(np.isfinite(values[[1, 2]])) or (phase == "adversarial" and not np.all(np.isfinite(values))):
                    where = self.run.checkpoint_dir if self.run else "memory"
                    raise TrainingDiverged(
                        f"{phase} epoch {epoch}, step {at}: non-finite loss "
                        + ", ".join(f"{n}={v:.4g}" for n, v in zip(STEP_VALUES, values))
                        + f". Training stopped; the last good checkpoint in {where} is kept."
                    )
                sums += values
                count += 1
                self.global_step.assign(at)
            pending.clear()

        for lr, hr in bar:
            step += 1
            pending.append((step, step_fn(lr, hr, self._step_number(step))))
            if len(pending) >= sync_every or step - start_step == total:
                drain()
                if count and (count % 5 == 0 or count == total or sync_every > 1):
                    m = sums / count
                    bar.set_postfix({"g": f"{m[1]:.4f}"} if phase == "pretrain" else
                                    {"d": f"{m[0]:.3f}", "g": f"{m[1]:.4f}", "D(hr)": f"{m[4]:.2f}", "D(sr)": f"{m[5]:.2f}"})
            if on_step is not None:
                drain()
                on_step(step)
        drain()
        bar.close()
        if count == 0:
            raise ValueError(f"{self.data_dir}: the training split yields no batch of {self.config.train.batch_size}")
        return dict(zip(EPOCH_METRICS, [*(sums / count), time.perf_counter() - start]))

    def _step_number(self, step: int):
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.constant(step, tf.int64)
        return step

    # -- the run directory ---------------------------------------------------------------------
    def save(self, phase: str, epoch: int, metrics: dict[str, float], *, snapshot: bool = False) -> None:
        """The MSE snapshot (``snapshot``: the end of pre-training), the checkpoint, generator.keras,
        then the loss row. The snapshot goes first so the checkpoint that ends pre-training
        never exists without it; generator.keras is checked against the checkpoint on resume.
        Every worker of a multi-worker run takes part in the checkpoint; only the writer exports."""
        step = int(self.global_step.numpy())
        self.last_metrics.assign([metrics[n] for n in EPOCH_METRICS])
        portable = self.export_generator() if self.run.writer else None
        if snapshot and portable is not None:
            self.run.export_generator(portable, step, self.run.snapshot_path)
        self.run.save_checkpoint(step)
        if portable is not None:
            self.run.export_generator(portable, step)
            report = getattr(self, "precise_bn_report", None)
            if report:
                self.run.log(f"exported generator at step {step} with population BatchNorm statistics of "
                             f"{report['layers']} layers over {report['images']} training crops (stored averages were "
                             f"off by up to {report['max_variance_ratio']:.2f}x in variance)", echo=False)
        self.append_row_once(phase, epoch, metrics)

    def export_generator(self):
        """The generator as a plain-Keras model (stock layers), refreshed with the current weights,
        with population BatchNorm statistics when ``train.precise_bn_batches`` is set (the training
        state keeps its moving averages: resume is unchanged)."""
        from upsampler.archs.srgan import portable_generator

        self.sync_models()
        self._portable = portable_generator(self.generator, self._portable)
        n = self.config.train.precise_bn_batches
        if n:
            from upsampler.training.bn import recompute_batchnorm_statistics

            report = recompute_batchnorm_statistics(self._portable, self.precise_bn_inputs(n))
            self.precise_bn_report = report
        return self._portable

    def precise_bn_inputs(self, n_batches: int) -> list[np.ndarray]:
        """A fixed set of ``n_batches`` training LR batches in [-1, 1] (:func:`upsampler.training.bn.training_crops`)."""
        from upsampler.training.bn import training_crops

        d, t = self.config.data, self.config.train
        return training_crops(self.feed.train_lr, self.feed.train_hr, n_batches=n_batches, batch_size=t.batch_size,
                              seed=t.seed, flips=d.flips, crop=d.train_crop)

    def sync_models(self) -> None:
        """Bring the Keras models up to date with the engine's state (a no-op on TensorFlow)."""
        if hasattr(self.steps, "sync_to_models"):
            self.steps.sync_to_models()

    def append_row_once(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        def fmt(v: float) -> str:
            return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.8g}"

        self.run.append_row_once({"phase": phase, "epoch": epoch, "step": int(self.global_step.numpy()),
                                  **{n: fmt(float(metrics[n])) for n in EPOCH_METRICS}})

    def restore(self) -> bool:
        """Restore the newest readable checkpoint and bring the run directory in line with it:
        the loss row of its epoch, generator.keras and the MSE snapshot. False when there is none."""
        path, notes = self.run.restore_latest()
        for note in notes:
            self.run.log(note)
        if path is None:
            return False
        if not self.run.writer:  # the rest brings the run directory's files in line: the writer's job
            return True
        pre, adv = int(self.pretrain_epochs_done.numpy()), int(self.epochs_done.numpy())
        step = int(self.global_step.numpy())
        phase, epoch = ("adversarial", adv) if adv > 0 else ("pretrain", pre)
        if epoch and not self.run.has_row(phase, epoch):  # the process died before writing it
            self.append_row_once(phase, epoch, dict(zip(EPOCH_METRICS, self.last_metrics.numpy().tolist())))
            self.run.log(f"loss.csv: recovered the row of {phase} epoch {epoch} from the checkpoint", echo=False)
        if not self.run.is_current(self.run.generator_path, step):
            self.run.export_generator(self.export_generator(), step)
            self.run.log(f"generator.keras re-exported from the checkpoint at step {step} (it was missing or older)",
                         echo=False)
        target = self.config.train.pretrain_epochs
        pretraining_over = pre == target or phase_budget_used(self.run, self.config.train, "pretrain", pre)
        if target and pre and pretraining_over and adv == 0 and not self.run.is_current(self.run.snapshot_path, step):
            self.run.export_generator(self.export_generator(), step, self.run.snapshot_path)
            self.run.log(f"{self.run.snapshot_path.name} re-exported from the checkpoint at step {step}", echo=False)
        return True

    def save_samples(self, phase: str, epoch: int) -> Path:
        """Render the sample batch as rows of bicubic | SR | HR into ``samples/``."""
        from keras import ops

        from upsampler.data.images import bicubic_upscale, to_float, to_uint8

        self.sync_models()
        sr = to_uint8(ops.convert_to_numpy(self.generator(to_float(self.sample_lr), training=False)))
        scale = self.config.data.scale
        rows = [np.concatenate([bicubic_upscale(lr, scale), s, h], axis=1)
                for lr, s, h in zip(self.sample_lr, sr, self.sample_hr)]
        return self.run.save_samples(phase, epoch, np.concatenate(rows, axis=0))


def _attach_array_checkpoint(trainer: SRGANTrainer) -> None:
    """Host counters and an array checkpoint (:mod:`upsampler.training.checkpoints`) for non-TensorFlow engines."""
    from upsampler.training.checkpoints import ArrayCheckpoint, HostCounter

    trainer.pretrain_epochs_done, trainer.epochs_done, trainer.global_step = HostCounter(), HostCounter(), HostCounter()
    trainer.last_metrics = HostCounter(np.zeros(len(EPOCH_METRICS)), np.float64)
    counters = {"pretrain_epochs_done": trainer.pretrain_epochs_done, "epochs_done": trainer.epochs_done,
                "global_step": trainer.global_step, "last_epoch_metrics": trainer.last_metrics}

    def get_state():
        return {**trainer.steps.state_arrays(), **{f"counters/{k}": c.numpy() for k, c in counters.items()}}

    def set_state(arrays):
        trainer.steps.load_state_arrays(arrays)
        for k, c in counters.items():
            c.assign(arrays[f"counters/{k}"])

    trainer.checkpoint = ArrayCheckpoint(get_state, set_state)
    if trainer.run is not None:
        trainer.run.attach(trainer.checkpoint, keep=trainer.config.train.keep_checkpoints)
