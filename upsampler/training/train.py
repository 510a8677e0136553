"""SRGAN training: the epoch loop, with exact resume.

Three parts, one job each: the training steps (:mod:`upsampler.training.steps_tf`: G, D, optimisers, one
compiled step), the run directory (:mod:`upsampler.training.rundir`: config, log, loss.csv, checkpoints,
export, samples) and, here, the epoch loop that drives them with hooks.

``train(...)`` runs (or continues) to ``config.train.epochs`` adversarial epochs after
``config.train.pretrain_epochs`` generator-only MSE epochs. Running it again resumes from the
latest checkpoint; a larger ``epochs`` continues a finished run. The data order, the noisy
labels and the flips of every step are pure functions of (seed, epoch, step), so a run that
is killed and resumed reproduces an uninterrupted one exactly (with ``deterministic=True``).

After every epoch the loop checkpoints (every ``train.checkpoint_every`` epochs and at the end
of a phase), appends the loss row exactly once, renders samples, then calls its hooks
(:class:`EpochHook`); the default hook is :class:`DiscriminatorHealth` (saturation and
collapse warnings).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from upsampler.utils.argtypes import integer, number
from upsampler.config import PROFILES, Config, get_profile
from upsampler.training.rundir import RunDirectory
from upsampler.training.steps_tf import STEP_VALUES, Speedups

# The metrics of an epoch: the step values and the epoch's wall time. The checkpoint keeps those
# of the last finished epoch, so loss.csv can be completed exactly once even if the process dies
# between saving the checkpoint and appending the row.
EPOCH_METRICS = [*STEP_VALUES, "seconds"]
PRETRAIN_EPOCH_KEY_OFFSET = 1_000_000
PRECISE_BN_EPOCH_KEY = 3_000_000  # the data key of the batches precise BN statistics are computed on
# Test hook: SIGKILL this process when the global step reaches this value (exact-resume test).
FAULT_ENV = "UPSAMPLER_FAULT_AT_STEP"


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
    budget_used: bool = False  # the adversarial phase ended because its wall-clock budget was used

    def __str__(self) -> str:
        return "\n".join(self.summary)


def training_arrays(config: Config, data_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_lr, train_hr, sample_lr, sample_hr)`` of a processed data folder: what a run trains on.

    :func:`upsampler.training.feed.load_training_arrays`, with the training images restricted to
    ``data.train_images`` when it is set (:func:`upsampler.data.preprocess.load_train_split`: a subset
    chosen with ``data.split_seed``, the same for every ``train.seed``; only those are read).
    The sample batch comes from the test split, else from the start of the (restricted) training set.
    """
    from upsampler.data import preprocess as data_lib
    from upsampler.training.feed import check_sizes, load_training_arrays

    if config.data.train_images is None:
        return load_training_arrays(config, data_dir)
    train_lr, train_hr, _ = data_lib.load_train_split(data_dir, config.data)
    check_sizes(config, train_lr, train_hr, data_dir)
    n = config.train.num_samples
    try:
        sample_lr, sample_hr, _ = data_lib.load_split(data_dir, "test")
    except (FileNotFoundError, ValueError):
        sample_lr, sample_hr = train_lr, train_hr
    return train_lr, train_hr, sample_lr[:n], sample_hr[:n]


def train_images_note(config: Config, data_dir: str | Path) -> list[str]:
    """A line saying how many training images a run with ``data.train_images`` uses ([] when it is
    not set); a ValueError (naming the folder, the count and the field) when the set has fewer."""
    from upsampler.data import preprocess as data_lib

    d = config.data
    if d.train_images is None:
        return []
    available = data_lib.split_names(data_dir, "train")
    data_lib.choose_train_images(available, d.train_images, split_seed=d.split_seed, source=Path(data_dir))
    return [f"training images: {d.train_images} of the {len(available)} of the train split (data.train_images; "
            f"a subset chosen with split seed {d.split_seed}, the same for every training seed)"]


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

        from upsampler.training.feed import TrainingFeed, check_sizes

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
            train_lr, train_hr, self.sample_lr, self.sample_hr = training_arrays(config, self.data_dir)
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
        """A fixed set of ``n_batches`` training LR batches in [-1, 1] (data epoch key
        :data:`PRECISE_BN_EPOCH_KEY`, the training crops and flips): the same for every export of a run."""
        from upsampler.data import preprocess as data_lib
        from upsampler.data.images import to_float

        d, t = self.config.data, self.config.train
        batches = data_lib.train_batches(self.feed.train_lr, self.feed.train_hr, batch_size=t.batch_size, seed=t.seed,
                                         epoch=PRECISE_BN_EPOCH_KEY, flips=d.flips, crop=d.train_crop)
        return [to_float(lr) for lr, _ in itertools.islice(batches, n_batches)]

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


# ---- hooks ---------------------------------------------------------------------------------------

class EpochHook(Protocol):
    """Called by :func:`train` after every epoch (checkpoint and row already written)."""

    def after_epoch(self, trainer: SRGANTrainer, phase: str, epoch: int, metrics: dict[str, float]) -> list[str]:
        """Lines to log (and to add to the run's summary)."""


class DiscriminatorHealth:
    """Warns once each when D saturates or collapses over ``patience`` adversarial epochs
    (:func:`upsampler.study.losslog.detect_saturation`, :func:`upsampler.study.losslog.detect_collapse`)."""

    def __init__(self, patience: int, threshold: float):
        self.patience, self.threshold = patience, threshold
        self.saturation: str | None = None
        self.collapse: str | None = None

    def after_epoch(self, trainer, phase, epoch, metrics) -> list[str]:
        if phase != "adversarial":
            return []
        import pandas as pd

        from upsampler.study.losslog import detect_collapse, detect_saturation

        frame = pd.read_csv(trainer.run.loss_path)
        frame = frame[frame["phase"] == "adversarial"].reset_index(drop=True)
        lines = []
        if self.saturation is None:
            report = detect_saturation(frame, patience=self.patience, threshold=self.threshold)
            if report.saturated:
                self.saturation = f"WARNING: discriminator saturated: {report.evidence}"
                lines.append(self.saturation)
        if self.collapse is None:
            report = detect_collapse(frame, patience=self.patience)
            if report.saturated:
                self.collapse = f"WARNING: discriminator collapsed (D(real) ~ D(fake) ~ 0.5): {report.evidence}"
                lines.append(self.collapse)
        return lines


def kill_at_step(step: int) -> Callable[[int], None]:
    """A step callback that SIGKILLs this process at global step ``step`` (exact-resume tests)."""
    def on_step(current: int) -> None:
        if current == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return on_step


# ---- the epoch loop ------------------------------------------------------------------------------

def train(config: Config, data_dir: str | Path, run_dir: str | Path, *, hooks: Sequence[EpochHook] = (),
          speedups: Speedups | None = None, snapshot_pretrained: bool = True) -> TrainResult:
    """Train (or resume) the run in ``run_dir`` to ``config.train`` epochs. See the module docstring.

    ``hooks`` run after the default :class:`DiscriminatorHealth`; ``speedups`` go to the steps;
    ``snapshot_pretrained`` keeps the generator at the end of MSE pre-training as
    ``generator_pretrained.keras``. One process at a time per run directory (a lock); under
    ``train.strategy=multiworker`` every worker runs this, the chief writes the run directory
    and runs the hooks (:mod:`upsampler.training.distribute`).
    """
    import keras

    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"{data_dir}: no such processed data folder (run `upsampler preprocess` first)")
    config.validate()
    if keras.backend.backend() == "tensorflow":
        from upsampler.training import distribute

        strategy = distribute.make_strategy(config.train.strategy)  # first: multiworker needs a fresh TensorFlow
        run = RunDirectory(run_dir, worker=None if distribute.is_chief(strategy) else distribute.task_name(strategy))
    else:
        strategy, run = None, RunDirectory(run_dir)
    run.lock()
    try:
        return _train_locked(config, data_dir, run, hooks=hooks, speedups=speedups,
                             snapshot_pretrained=snapshot_pretrained, strategy=strategy)
    finally:
        run.unlock()


def _train_locked(config: Config, data_dir: Path, run: RunDirectory, *, hooks, speedups,
                  snapshot_pretrained: bool, strategy) -> TrainResult:
    from upsampler.training import distribute
    from upsampler.archs.srgan import parameter_counts
    from upsampler.training.precision import POLICIES
    from upsampler.utils.provenance import provenance
    from upsampler.training.rundir import data_source

    notes = run.start_fresh()
    torn = run.repair_loss_log()
    notes += [torn] if torn else []
    config, inexact = run.resolve_config(config)
    notes += run.check_data(data_dir)
    notes += train_images_note(config, data_dir)  # before config.json is written: too many is refused here
    stamp = provenance()
    notes += run.check_cpu_kernels(stamp)
    run.write_config(config, stamp, data_source(data_dir))

    trainer = SRGANTrainer(config, data_dir, run, strategy=strategy, speedups=speedups)
    resumed = trainer.restore()
    t = config.train
    pre_done, adv_done = int(trainer.pretrain_epochs_done.numpy()), int(trainer.epochs_done.numpy())
    if strategy is not None:
        from upsampler.training import distribute

        distribute.check_workers_agree(  # the same checkpoint and the same precision (auto differs by hardware)
            strategy, [pre_done, adv_done, int(trainer.global_step.numpy()), POLICIES.index(trainer.steps.precision)],
            f"(pretrain epochs, epochs, step, index of the precision in {POLICIES})", "all must resume from the same "
            "checkpoint (the run directory on storage every machine sees) and train in one precision (set train.precision)")
    if adv_done > 0 and t.pretrain_epochs > pre_done and not phase_budget_used(run, t, "pretrain", pre_done):
        raise ValueError(
            f"{run.path}: adversarial training has started ({adv_done} epochs); pretrain_epochs cannot grow "
            f"from {pre_done} to {t.pretrain_epochs}"
        )
    header = [f"run directory: {run.path}", stamp["line"], f"data: {data_dir.resolve()}", *config.summary_lines(),
              f"parameters: generator {parameter_counts(trainer.generator)['total']:,}, "
              f"discriminator {parameter_counts(trainer.discriminator)['total']:,}",
              trainer.describe(), *notes, *(inexact if resumed else []),
              f"{'resumed at' if resumed else 'starting at'} pretrain epoch {pre_done}/{t.pretrain_epochs}, "
              f"adversarial epoch {adv_done}/{t.epochs}, step {int(trainer.global_step.numpy())}"]
    for line in header:
        run.log(line)

    health = DiscriminatorHealth(t.saturation_patience, t.saturation_threshold)
    all_hooks: list[EpochHook] = [health, *hooks] if run.writer else []
    fault_at = int(os.environ.get(FAULT_ENV, "0") or 0)
    on_step = kill_at_step(fault_at) if fault_at else None
    warnings: list[str] = []
    budget_used = False
    for phase, done_var, target in (
        ("pretrain", trainer.pretrain_epochs_done, t.pretrain_epochs),
        ("adversarial", trainer.epochs_done, t.epochs),
    ):
        # A budget used up before this start (a resumed run) skips the phase; within it, the epoch that
        # uses it up is the last, checkpointed and exported like the final epoch.
        over_budget = phase_budget_used(run, t, phase, int(done_var.numpy()))
        while int(done_var.numpy()) < target and not over_budget:
            epoch = int(done_var.numpy()) + 1
            try:
                metrics = trainer.run_epoch(phase, epoch, on_step=on_step)
            except TrainingDiverged as exc:
                run.log(f"ERROR: {exc}")
                raise
            done_var.assign(epoch)
            out_of_time = phase_budget_used(run, t, phase, epoch - 1, metrics["seconds"])
            last = epoch == target or out_of_time
            if epoch % t.checkpoint_every == 0 or last:
                trainer.save(phase, epoch, metrics, snapshot=snapshot_pretrained and phase == "pretrain" and last)
            else:
                trainer.append_row_once(phase, epoch, metrics)
            if run.writer and (epoch % t.sample_every == 0 or last):
                trainer.save_samples(phase, epoch)
            # Printed as each epoch ends, bars or not (papermill and run_all.sh stream it line by line).
            run.log(epoch_line(phase, epoch, target, metrics, images=trainer.feed.steps_per_epoch * t.batch_size,
                               seconds_left=seconds_left(run, t, phase, epoch, target)))
            if out_of_time and epoch < target:
                run.log(f"{phase}: wall-clock budget of {phase_budget(t, phase):g} min used after epoch {epoch}; "
                        "the phase ends here")
                over_budget = True
            for hook in all_hooks:
                for line in hook.after_epoch(trainer, phase, epoch, metrics):
                    run.log(line)
                    warnings.append(line)
        if phase == "adversarial":
            budget_used = int(done_var.numpy()) < target

    summary = [
        f"finished: {int(trainer.pretrain_epochs_done.numpy())} pre-training + {int(trainer.epochs_done.numpy())} "
        f"adversarial epochs, step {int(trainer.global_step.numpy())}, run directory {run.path}",
    ]
    if config.uses_untrained_features:
        from upsampler.config import UNTRAINED_VGG_WARNING

        summary.append(UNTRAINED_VGG_WARNING)
    summary.extend(warnings)
    for line in summary:
        run.log(line)
    return TrainResult(
        run_dir=run.path, pretrain_epochs_done=int(trainer.pretrain_epochs_done.numpy()),
        epochs_done=int(trainer.epochs_done.numpy()), step=int(trainer.global_step.numpy()),
        saturation_warning=health.saturation, summary=header + summary, budget_used=budget_used,
    )


def phase_budget(t, phase: str) -> float | None:
    return t.pretrain_budget_minutes if phase == "pretrain" else t.budget_minutes


def phase_seconds(run: RunDirectory, phase: str, done: int) -> list[float]:
    """The ``seconds`` of ``phase``'s first ``done`` epochs, from loss.csv."""
    return [float(row["seconds"]) for row in run.loss_rows()
            if row["phase"] == phase and int(row["epoch"]) <= done and row.get("seconds")]


def phase_budget_used(run: RunDirectory, t, phase: str, done: int, extra_seconds: float = 0.0) -> bool:
    """Whether ``phase``'s wall-clock budget is used up after its first ``done`` epochs (their
    ``seconds`` in loss.csv) plus ``extra_seconds``. Read from loss.csv, so a resumed run takes the
    same decision at the same epoch as the run it continues."""
    budget = phase_budget(t, phase)
    if budget is None:
        return False
    return sum(phase_seconds(run, phase, done)) + extra_seconds >= 60.0 * budget


def seconds_left(run: RunDirectory, t, phase: str, done: int, target: int) -> float:
    """Expected seconds until ``phase`` ends: the epochs left at the mean pace of the last few
    (at most the rest of the phase's wall-clock budget)."""
    spent = phase_seconds(run, phase, done)
    if not spent:
        return math.nan
    pace = float(np.mean(spent[-5:]))
    left = (target - done) * pace
    budget = phase_budget(t, phase)
    return left if budget is None else max(0.0, min(left, 60.0 * budget - sum(spent)))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def epoch_line(phase: str, epoch: int, target: int, metrics: dict[str, float], *, images: int,
               seconds_left: float) -> str:
    """One epoch as a line of the log: losses, D(real) / D(fake), images/s and the time left."""
    values = ", ".join(f"{n}={metrics[n]:.4g}" for n in EPOCH_METRICS if not math.isnan(metrics[n]))
    seconds = metrics["seconds"]
    pace = f", {images / seconds:.1f} img/s" if seconds > 0 else ""
    left = f", {_duration(seconds_left)} left" if math.isfinite(seconds_left) and epoch < target else ""
    return f"{phase} epoch {epoch}/{target}: {values}{pace}{left}"


# ---- command line ------------------------------------------------------------------------------

def configure_train_parser(p) -> None:
    p.add_argument("--data", required=True, help="processed data folder (the output of `upsampler preprocess`)")
    p.add_argument("--run-dir", required=True, help="run directory; an existing one is resumed")
    p.add_argument("--profile", default="paper", choices=list(PROFILES),
                   help="paper (the study, SRGAN-paper style), original (the 2019 study's choices), study-cpu (the "
                        "CPU-scale study), study-gpu (the study on one GPU against a time budget), demo (CPU minutes) "
                        "or smoke (seconds); default %(default)s")
    p.add_argument("--pretrain-minutes", type=number(0), help="wall-clock budget of MSE pre-training (train.pretrain_budget_minutes)")
    p.add_argument("--minutes", type=number(0), help="wall-clock budget of the adversarial phase (train.budget_minutes)")
    p.add_argument("--epochs", type=integer(0), help="total adversarial epochs to reach")
    p.add_argument("--pretrain-epochs", type=integer(0), help="generator-only MSE epochs before the adversarial phase")
    p.add_argument("--batch-size", type=integer(1))
    p.add_argument("--steps-per-epoch", type=integer(1), help="default: one pass over the training set")
    p.add_argument("--content-network", choices=["vgg19", "vgg16-hed", "untrained"],
                   help="network of the content loss (default: the profile's): vgg19 = ImageNet VGG19 (downloaded "
                        "once), vgg16-hed = pretrained VGG16-HED (offline), untrained = tests only, labelled")
    p.add_argument("--strategy", choices=["default", "mirrored", "auto", "multiworker"],
                   help="tf.distribute: default = one device, mirrored = all local GPUs (global batch "
                        "--batch-size split between them), auto = mirrored when there are several GPUs, "
                        "multiworker = several machines, each running this command with its TF_CONFIG")
    p.add_argument("--xla", choices=["auto", "on", "off"], help="XLA-compile the steps (auto: on GPU only)")
    p.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                   help="train.precision (default auto: mixed_bfloat16 on GPUs from Ampere on and on CPUs with "
                        "AVX-512 BF16 or AMX, mixed_float16 on older GPUs, float32 elsewhere); a run keeps the "
                        "precision it started with")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set model.upsample=nearest (repeatable)")
    p.add_argument("--config", help="start from a saved config.json instead of a profile")


def config_from_args(args) -> Config:
    config = Config.from_json(args.config) if getattr(args, "config", None) else get_profile(args.profile)
    overrides = list(args.set)
    for flag, key in (("epochs", "train.epochs"), ("pretrain_epochs", "train.pretrain_epochs"),
                      ("batch_size", "train.batch_size"), ("steps_per_epoch", "train.steps_per_epoch"),
                      ("content_network", "loss.content_network"), ("strategy", "train.strategy"),
                      ("xla", "train.jit_compile"), ("precision", "train.precision"),
                      ("pretrain_minutes", "train.pretrain_budget_minutes"), ("minutes", "train.budget_minutes")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return config.override(overrides)


def run_train(args) -> int:
    from upsampler.data.images import first_line

    config = config_from_args(args)
    try:
        result = train(config, args.data, args.run_dir)
    except TrainingDiverged as exc:
        print(f"upsampler train: {exc}", file=sys.stderr)
        return 3
    except RuntimeError as exc:  # e.g. VGG weights unavailable offline, the run directory in use
        print(f"upsampler train: error: {first_line(exc, limit=None)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder, no permission
        where = exc.filename or args.run_dir
        print(f"upsampler train: error: {where}: {exc.strerror or first_line(exc, limit=None)}; what was saved before "
              "(the last checkpoint, loss.csv) is intact: fix this and run the same command to resume",
              file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - TensorFlow's own I/O errors (tf.errors.OpError) on a full disk
        tf = sys.modules.get("tensorflow")  # not imported yet: not a TensorFlow error (and no import to wait for)
        if tf is None or not isinstance(exc, tf.errors.OpError):
            raise
        print(f"upsampler train: error: {args.run_dir}: {first_line(exc, limit=None)}; the last checkpoint is intact: fix "
              "this and run the same command to resume", file=sys.stderr)
        return 2
    return 0 if result.epochs_done >= config.train.epochs or result.budget_used else 1

