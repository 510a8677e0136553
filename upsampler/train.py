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
              "saturation_patience", "saturation_threshold", "jit_compile"},
}


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


# ---- the trainer ----------------------------------------------------------------------------

class SRGANTrainer:
    """Owns the models, optimisers, checkpoint and compiled steps of one run directory."""

    def __init__(self, config: Config, data_dir: str | Path, run_dir: str | Path):
        import tensorflow as tf
        import keras

        from . import data as data_lib
        from .losses import ContentLoss
        from .models import build_models_from_config

        self.tf, self.keras = tf, keras
        self.config = config
        self.run_dir = Path(run_dir)
        self.data_dir = Path(data_dir)
        t = config.train

        if t.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(t.seed)

        self.train_lr, self.train_hr, _ = data_lib.load_split(self.data_dir, "train")
        expected = (config.data.lr_size, config.data.hr_size)
        if self.train_hr.shape[1] != expected[1] or self.train_lr.shape[1] != expected[0]:
            raise ValueError(
                f"{self.data_dir}: images are {self.train_lr.shape[1]}->{self.train_hr.shape[1]} px but the config "
                f"expects {expected[0]}->{expected[1]}; preprocess with --hr-size {config.data.hr_size} "
                f"--scale {config.data.scale} or change data.hr_size"
            )
        self.steps_per_epoch = t.steps_per_epoch or data_lib.steps_per_epoch(len(self.train_hr), t.batch_size)
        self.sample_lr, self.sample_hr = self._sample_batch(data_lib)

        self.generator, self.discriminator = build_models_from_config(config)
        self.content_loss = ContentLoss(config.loss, seed=t.seed)
        adam = dict(beta_1=t.beta_1, beta_2=t.beta_2, epsilon=t.epsilon)
        self.g_optimizer = keras.optimizers.Adam(learning_rate=t.learning_rate, **adam)
        self.d_optimizer = keras.optimizers.Adam(learning_rate=t.learning_rate, **adam)
        self.pretrain_optimizer = keras.optimizers.Adam(learning_rate=t.pretrain_learning_rate, **adam)
        # Build optimiser slots now so a restore fills them instead of deferring.
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.pretrain_optimizer.build(self.generator.trainable_variables)

        self.pretrain_epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="pretrain_epochs_done")
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.last_metrics = tf.Variable(np.zeros(len(_METRIC_NAMES)), dtype=tf.float64, trainable=False,
                                        name="last_epoch_metrics")
        self.checkpoint = tf.train.Checkpoint(
            generator=self.generator, discriminator=self.discriminator,
            g_optimizer=self.g_optimizer, d_optimizer=self.d_optimizer, pretrain_optimizer=self.pretrain_optimizer,
            pretrain_epochs_done=self.pretrain_epochs_done, epochs_done=self.epochs_done,
            global_step=self.global_step, last_epoch_metrics=self.last_metrics,
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.run_dir / "checkpoints"), max_to_keep=t.keep_checkpoints
        )
        jit = {"on": True, "off": False}.get(t.jit_compile, bool(tf.config.list_physical_devices("GPU")))
        self.jit_compile = jit
        self._adversarial_step = tf.function(self._adversarial_step_impl, jit_compile=jit, reduce_retracing=True)
        self._pretrain_step = tf.function(self._pretrain_step_impl, jit_compile=jit, reduce_retracing=True)

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

    def dataset(self, epoch: int, skip_batches: int = 0):
        from . import data as data_lib

        d, t = self.config.data, self.config.train
        ds = data_lib.make_train_dataset(
            self.train_lr, self.train_hr, batch_size=t.batch_size, seed=t.seed, epoch=epoch, flips=d.flips,
            shuffle_buffer=d.shuffle_buffer, skip_batches=skip_batches,
        )
        if t.steps_per_epoch:
            ds = ds.repeat().take(t.steps_per_epoch - skip_batches)
        return ds

    # -- compiled steps --------------------------------------------------------------------
    def _adversarial_step_impl(self, lr, hr, step):
        tf = self.tf
        from .losses import discriminator_loss, generator_adversarial_loss, noisy_labels

        l, seed = self.config.loss, self.config.train.seed
        batch = tf.shape(hr)[0]
        seed_pair = tf.stack([tf.constant(seed, tf.int64), step])
        real_labels = noisy_labels(batch, l.real_label_mean, l.label_std, tf.cast(seed_pair * 2, tf.int32))
        fake_labels = noisy_labels(batch, l.fake_label_mean, l.label_std, tf.cast(seed_pair * 2 + 1, tf.int32))
        hr_features = None
        if self.content_loss.kind == "vgg":
            hr_features = tf.stop_gradient(self.content_loss.features(hr))
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            sr = self.generator(lr, training=True)
            real_logits = self.discriminator(hr, training=True)
            fake_logits = self.discriminator(sr, training=True)
            d_loss = discriminator_loss(real_logits, fake_logits, real_labels, fake_labels)
            content = self.content_loss(hr, sr, hr_features=hr_features)
            adversarial = generator_adversarial_loss(fake_logits)
            g_loss = content + l.adversarial_weight * adversarial
        g_grads = g_tape.gradient(g_loss, self.generator.trainable_variables)
        d_grads = d_tape.gradient(d_loss, self.discriminator.trainable_variables)
        self.g_optimizer.apply(g_grads, self.generator.trainable_variables)
        self.d_optimizer.apply(d_grads, self.discriminator.trainable_variables)
        d_real = tf.reduce_mean(tf.sigmoid(tf.cast(real_logits, tf.float32)))
        d_fake = tf.reduce_mean(tf.sigmoid(tf.cast(fake_logits, tf.float32)))
        return tf.stack([d_loss, g_loss, content, adversarial, d_real, d_fake])

    def _pretrain_step_impl(self, lr, hr, step):
        tf = self.tf
        from .losses import pixel_mse

        with tf.GradientTape() as tape:
            sr = self.generator(lr, training=True)
            loss = pixel_mse(hr, sr)
        grads = tape.gradient(loss, self.generator.trainable_variables)
        self.pretrain_optimizer.apply(grads, self.generator.trainable_variables)
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
            self.dataset(data_epoch), total=self.steps_per_epoch, desc=f"{phase} epoch {epoch}",
            disable=not self.config.train.progress, leave=False, file=sys.stdout,
        )
        for lr, hr in bar:
            step = self.global_step.numpy() + 1
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
        self.generator.save(tmp)
        os.replace(tmp, self.run_dir / "generator.keras")
        self.append_row_once(phase, epoch, metrics)

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
    config.to_json(run_dir / "config.json")

    trainer = SRGANTrainer(config, data_dir, run_dir)
    resumed = trainer.restore()
    t = config.train
    pre_done, adv_done = int(trainer.pretrain_epochs_done.numpy()), int(trainer.epochs_done.numpy())
    if adv_done > 0 and t.pretrain_epochs > pre_done:
        raise ValueError(
            f"{run_dir}: adversarial training has started ({adv_done} epochs); pretrain_epochs cannot grow "
            f"from {pre_done} to {t.pretrain_epochs}"
        )
    header = [f"run directory: {run_dir}", *config.summary_lines()]
    from .models import parameter_counts

    g_params = parameter_counts(trainer.generator)["total"]
    d_params = parameter_counts(trainer.discriminator)["total"]
    header.append(f"parameters: generator {g_params:,}, discriminator {d_params:,}; XLA {'on' if trainer.jit_compile else 'off'}")
    header.append(
        f"{'resumed at' if resumed else 'starting at'} pretrain epoch {pre_done}/{t.pretrain_epochs}, "
        f"adversarial epoch {adv_done}/{t.epochs}, step {int(trainer.global_step.numpy())}"
    )
    for line in header:
        _log(run_dir, line)

    saturation_warning = None
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

    summary = [
        f"finished: {int(trainer.pretrain_epochs_done.numpy())} pre-training + {int(trainer.epochs_done.numpy())} "
        f"adversarial epochs, step {int(trainer.global_step.numpy())}, run directory {run_dir}",
    ]
    if config.uses_untrained_features:
        from .config import UNTRAINED_VGG_WARNING

        summary.append(UNTRAINED_VGG_WARNING)
    if saturation_warning:
        summary.append(saturation_warning)
    for line in summary:
        _log(run_dir, line)
    return TrainResult(
        run_dir=run_dir, pretrain_epochs_done=int(trainer.pretrain_epochs_done.numpy()),
        epochs_done=int(trainer.epochs_done.numpy()), step=int(trainer.global_step.numpy()),
        saturation_warning=saturation_warning, summary=header + summary,
    )


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
    p.add_argument("--profile", default="paper", help="paper (the study), demo (CPU minutes) or smoke (seconds)")
    p.add_argument("--epochs", type=int, help="total adversarial epochs to reach")
    p.add_argument("--pretrain-epochs", type=int, help="generator-only MSE epochs before the adversarial phase")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training set")
    p.add_argument("--vgg-weights", choices=["imagenet", "untrained"],
                   help="untrained = the labelled offline fallback (tests, offline demo)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set model.upsample=nearest (repeatable)")
    p.add_argument("--config", help="start from a saved config.json instead of a profile")


def config_from_args(args) -> Config:
    config = Config.from_json(args.config) if getattr(args, "config", None) else get_profile(args.profile)
    overrides = list(args.set)
    for flag, key in (("epochs", "train.epochs"), ("pretrain_epochs", "train.pretrain_epochs"),
                      ("batch_size", "train.batch_size"), ("steps_per_epoch", "train.steps_per_epoch"),
                      ("vgg_weights", "loss.vgg_weights")):
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
