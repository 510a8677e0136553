"""SRGAN training: the epoch loop, with exact resume.

Three parts, one job each: the training steps (:mod:`upsampler.training.steps_tf`: G, D, optimisers, one
compiled step), the run directory (:mod:`upsampler.training.rundir`: config, log, loss.csv, checkpoints,
export, samples) and, here, the epoch loop that drives them with hooks. The trainer that holds one run's
steps, feed and counters is :mod:`upsampler.training.trainer`; the phases' wall-clock budgets are
:mod:`upsampler.training.budget`.

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

import math
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from upsampler.utils.argtypes import integer, number
from upsampler.config import CONTENT_NETWORKS, JIT_COMPILE, PRECISIONS, PROFILES, STRATEGIES, Config, get_profile
from upsampler.training.budget import phase_budget, phase_budget_used, seconds_left
from upsampler.training.rundir import RunDirectory
from upsampler.training.steps_tf import Speedups
from upsampler.training.trainer import EPOCH_METRICS, SRGANTrainer, TrainingDiverged

# Test hook: SIGKILL this process when the global step reaches this value (exact-resume test).
FAULT_ENV = "UPSAMPLER_FAULT_AT_STEP"


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


def train_images_note(config: Config, data_dir: str | Path) -> list[str]:
    """A line saying how many training images a run with ``data.train_images`` uses ([] when it is
    not set); a ValueError (naming the folder, the count and the field) when the set has fewer."""
    from upsampler.data import processed

    d = config.data
    if d.train_images is None:
        return []
    available = processed.split_names(data_dir, "train")
    processed.choose_train_images(available, d.train_images, split_seed=d.split_seed, source=Path(data_dir))
    return [f"training images: {d.train_images} of the {len(available)} of the train split (data.train_images; "
            f"a subset chosen with split seed {d.split_seed}, the same for every training seed)"]


# ---- hooks ---------------------------------------------------------------------------------------

class EpochHook(Protocol):
    """Called by :func:`train` after every epoch (checkpoint and row already written)."""

    def after_epoch(self, trainer: SRGANTrainer, phase: str, epoch: int, metrics: dict[str, float]) -> list[str]:
        """Lines to log (and to add to the run's summary)."""


class DiscriminatorHealth:
    """Warns once each when D saturates or collapses over ``patience`` adversarial epochs
    (:func:`upsampler.training.health.detect_saturation`, :func:`upsampler.training.health.detect_collapse`)."""

    def __init__(self, patience: int, threshold: float):
        self.patience, self.threshold = patience, threshold
        self.saturation: str | None = None
        self.collapse: str | None = None

    def after_epoch(self, trainer, phase, epoch, metrics) -> list[str]:
        if phase != "adversarial":
            return []
        import pandas as pd

        from upsampler.training.health import detect_collapse, detect_saturation

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
    p.add_argument("--content-network", choices=CONTENT_NETWORKS,
                   help="network of the content loss (default: the profile's): vgg19 = ImageNet VGG19 (downloaded "
                        "once), vgg16-hed = pretrained VGG16-HED (offline), untrained = tests only, labelled")
    p.add_argument("--strategy", choices=STRATEGIES,
                   help="tf.distribute: default = one device, mirrored = all local GPUs (global batch "
                        "--batch-size split between them), auto = mirrored when there are several GPUs, "
                        "multiworker = several machines, each running this command with its TF_CONFIG")
    p.add_argument("--xla", choices=JIT_COMPILE, help="XLA-compile the steps (auto: on GPU only)")
    p.add_argument("--precision", choices=[p for p in PRECISIONS if p != "mixed"],
                   help="train.precision (default auto: mixed_bfloat16 on GPUs from Ampere on and on CPUs with "
                        "AVX-512 BF16 or AMX, mixed_float16 on older GPUs, float32 elsewhere); a run keeps the "
                        "precision it started with")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set model.upsample=nearest (repeatable)")
    p.add_argument("--config", help="start from a saved config.json instead of a profile")


# The command line's typed options and the config fields they set (Config.with_values).
OPTION_FIELDS = {"epochs": "train.epochs", "pretrain_epochs": "train.pretrain_epochs", "batch_size": "train.batch_size",
                 "steps_per_epoch": "train.steps_per_epoch", "content_network": "loss.content_network",
                 "strategy": "train.strategy", "xla": "train.jit_compile", "precision": "train.precision",
                 "pretrain_minutes": "train.pretrain_budget_minutes", "minutes": "train.budget_minutes"}


def config_from_args(args) -> Config:
    """The profile (or a saved config.json), the typed options, then the ``--set`` strings."""
    config = Config.from_json(args.config) if getattr(args, "config", None) else get_profile(args.profile)
    config = config.with_values({key: getattr(args, option, None) for option, key in OPTION_FIELDS.items()})
    return config.override(args.set)


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

