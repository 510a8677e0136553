"""Helpers behind the notebooks in ``notebooks/`` (so that every step is testable code).

The notebooks are thin: a ``parameters`` cell (papermill), a cell that derives paths from
it, and one call per step into this module or the package. The study's output root has a
Drive-friendly layout (:class:`~upsampler.study.outputs.StudyPaths`); :mod:`.outputs` holds the paths,
the labels and the display helpers, :mod:`.evaluation` the evaluation step, and this module the
preprocessing and training steps. The names of those modules that the notebooks call are imported
here, so that every notebook reaches its helpers as ``nb.<name>``.

TensorFlow is imported only by the functions that train or evaluate.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from upsampler.utils.hardware import prepare_backend  # noqa: F401 - the notebooks call it from here
from upsampler.training.rundir import PRETRAINED_SNAPSHOT
from upsampler.metrics.report import model_pairs  # noqa: F401 - the notebooks' API
from upsampler.study.evaluation import evaluate, paired_table, psnr_lines, readable_markdown, summary_table  # noqa: F401 - the notebooks' API
from upsampler.study.outputs import (  # noqa: F401 - the notebooks' API
    banner,
    data_dir_of_run,
    join_notes,
    run_label,
    run_notes,
    show,
    show_table,
    study_paths,
    write_label,
)

DATASETS = ("coco", "celeba")
MODELS = {"model_a": ("Model A", "coco"), "model_b": ("Model B", "celeba")}


# ---- step 1: preprocessing ----------------------------------------------------------------

def profile_config(profile: str, overrides: Sequence[str] = ()):
    """The named profile's :class:`~upsampler.config.Config` with ``section.field=value`` overrides."""
    from upsampler.config import get_profile

    return get_profile(profile).override(list(overrides))


def find_groups_csv(source: str | os.PathLike) -> tuple[Path, str] | None:
    """An identity list that belongs to ``source``: ``groups.csv`` or CelebA's
    ``identity_CelebA.txt`` inside it or beside it, or ``../meta/<name>_celeba_identity.csv``
    beside it (the layout of the offline CelebA sets); None when there is none."""
    source = Path(source)
    if not source.is_dir():
        return None
    if (source / "groups.csv").is_file():
        return source / "groups.csv", "group"
    for folder in (source, source.parent):
        if (folder / "identity_CelebA.txt").is_file():
            return folder / "identity_CelebA.txt", "celeba_identity"
    meta = source.parent / "meta" / f"{source.name}_celeba_identity.csv"
    if meta.is_file():
        return meta, "celeba_identity"
    return None


def preprocess_dataset(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    profile: str = "paper",
    overrides: Sequence[str] = (),
    limit: int | None = None,
    groups_csv: str | os.PathLike | None = None,
    group_column: str | None = None,
    group_key_column: str = "file",
    progress: bool = True,
):
    """``upsampler.data.preprocess.preprocess`` with the profile's data settings; a no-op when already done.

    ``groups_csv="auto"`` uses :func:`find_groups_csv`. ``group_column`` None: ``group`` or
    ``celeba_identity``, whichever the CSV has.
    """
    from upsampler.data.preprocess import preprocess
    from upsampler.data.splits import read_groups_csv

    d = profile_config(profile, overrides).data
    groups = None
    if groups_csv == "auto":
        found = find_groups_csv(source)
        groups_csv, group_column = (found[0], group_column or found[1]) if found else (None, group_column)
    if groups_csv:
        if group_column is None:
            import csv

            with open(groups_csv, newline="") as handle:
                header = next(csv.reader(handle), [])
            group_column = next((c for c in ("group", "celeba_identity") if c in header), "group")
        groups = read_groups_csv(groups_csv, group_key_column, group_column)
        print(f"split by group: {groups_csv} (column {group_column!r}, {len(set(groups.values()))} groups)")
    return preprocess(
        source, out_dir, hr_size=d.hr_size, scale=d.scale, crop=d.crop, test_fraction=d.test_fraction,
        seed=d.split_seed, min_size=d.min_size, groups=groups, limit=limit, progress=progress,
    )


def rejected_table(summary: Any):
    """The rejected files of a preprocess summary as a DataFrame (source, kind, reason)."""
    import pandas as pd

    return pd.DataFrame([vars(r) for r in summary.rejected], columns=["source", "kind", "reason"])


def split_counts(processed_dir: str | os.PathLike) -> dict[str, int]:
    """Images per split of a processed set, from its manifest."""
    import csv

    counts = {"train": 0, "test": 0}
    with (Path(processed_dir) / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            counts[row["split"]] = counts.get(row["split"], 0) + 1
    return counts


def pairs_figure(processed_dir: str | os.PathLike, n: int = 4, split: str = "test", *, title: str | None = None,
                 note: str | None = None):
    """A few LR | Bicubic | HR rows of a processed split (LR shown as blocky pixels)."""
    from upsampler.data.processed import load_split
    from upsampler.data.images import bicubic_upscale
    from upsampler.study.plots import grid_figure

    lr, hr, names = load_split(processed_dir, split)
    k = max(1, min(n, len(names)))
    scale = hr.shape[1] // lr.shape[1]
    rows = [[(f"LR {names[i]}", lr[i]), ("Bicubic x%d" % scale, bicubic_upscale(lr[i], scale)), ("HR", hr[i])]
            for i in range(k)]
    return grid_figure(rows, title=title, note=note)


# ---- step 2: training ---------------------------------------------------------------------

def training_config(
    profile: str = "paper",
    *,
    epochs: int | None = None,
    pretrain_epochs: int | None = None,
    content_network: str | None = None,
    overrides: Sequence[str] = (),
    config_json: str | os.PathLike | None = None,
):
    """A Config from a profile (or a saved config.json) plus the notebook's parameters
    (``content_network``: vgg19 | vgg16-hed | untrained)."""
    from upsampler.config import Config

    config = Config.from_json(config_json) if config_json else profile_config(profile)
    config = config.with_values({"train.epochs": epochs, "train.pretrain_epochs": pretrain_epochs,
                                 "loss.content_network": content_network})
    return config.override(overrides)


def train_model(config: Any, data_dir: str | os.PathLike, run_dir: str | os.PathLike, *,
                snapshot_pretrained: bool = True):
    """Train (or resume) ``run_dir``; the trainer keeps the generator as it was after MSE
    pre-training as ``generator_pretrained.keras`` (``snapshot_pretrained``), so the evaluation
    can show what the adversarial phase did. Returns the :class:`~upsampler.training.train.TrainResult`.
    """
    from upsampler.training.train import train

    run_dir = Path(run_dir)
    result = train(config, data_dir, run_dir, snapshot_pretrained=snapshot_pretrained)  # prints each epoch's line
    snapshot = run_dir / PRETRAINED_SNAPSHOT
    if snapshot_pretrained and snapshot.is_file():
        print(f"the generator after {config.train.pretrain_epochs} MSE pre-training epochs is kept as {snapshot.name}")
    return result


def epochs_done(run_dir: str | os.PathLike) -> dict[str, int]:
    """Epochs logged in a run's loss.csv per phase: ``{"pretrain": n, "adversarial": m}``."""
    from upsampler.training.rundir import read_loss_rows

    run_dir = Path(run_dir)
    done = {"pretrain": 0, "adversarial": 0}
    for row in read_loss_rows(run_dir / "loss.csv"):
        done[row["phase"]] = max(done.get(row["phase"], 0), int(row["epoch"]))
    return done


def run_status(run_dir: str | os.PathLike) -> str:
    """One deterministic line: epochs logged per phase (for the notebooks' checked output)."""
    run_dir = Path(run_dir)
    done = epochs_done(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    t = config["train"]
    return (f"{run_dir.name}: profile {config['profile']}, pre-training {done['pretrain']}/{t['pretrain_epochs']} "
            f"epochs, adversarial {done['adversarial']}/{t['epochs']} epochs logged in loss.csv")


def loss_figures(
    run_dir_or_log: str | os.PathLike,
    figures_dir: str | os.PathLike,
    *,
    name: str,
    title: str | None = None,
    zoom: tuple[int, int] | None = None,
    adversarial_weight: float | None = None,
    notes: Sequence[str | None] = (),
    patience: int | None = None,
    threshold: float | None = None,
) -> dict[str, Path]:
    """Save and show the loss curves (all epochs + zoom) and D(real)/D(fake) of one log.

    ``run_dir_or_log``: a run directory, its ``loss.csv`` or an original-format text log.
    ``zoom`` None: the original's window 1500-1750 when the run is that long, else its last
    quarter. The adversarial weight and the saturation thresholds default to the run's
    config. Prints the saturation verdict. Returns ``{"losses": path, "discriminator": path}``.
    """
    from upsampler.study.losslog import read_loss_log
    from upsampler.training.health import detect_saturation
    from upsampler.study.plots import DEFAULT_ZOOM, plot_discriminator, plot_losses

    log = read_loss_log(run_dir_or_log)
    config_path = log.path.parent / "config.json"
    cfg = json.loads(config_path.read_text()) if config_path.is_file() else None
    if adversarial_weight is None:
        adversarial_weight = cfg["loss"]["adversarial_weight"] if cfg else 1e-3
    if patience is None:
        patience = cfg["train"]["saturation_patience"] if cfg else 3
    if threshold is None:
        threshold = cfg["train"]["saturation_threshold"] if cfg else 0.05
    note = join_notes(notes)
    title = title or name
    for line in log.summary_lines():
        print(line)
    report = detect_saturation(log.frame, patience=patience, threshold=threshold)
    print(f"discriminator: {report}")
    figures_dir = Path(figures_dir)
    paths = {}
    fig = plot_losses(log.frame, title=f"{title}: losses", adversarial_weight=adversarial_weight,
                      zoom=tuple(zoom) if zoom else DEFAULT_ZOOM, note=note)
    paths["losses"] = show(fig, figures_dir / f"{name}_losses.png")
    fig = plot_discriminator(log.frame, title=f"{title}: discriminator", note=note, patience=patience,
                             threshold=threshold)
    paths["discriminator"] = show(fig, figures_dir / f"{name}_discriminator.png")
    return paths


def copied_records_lines(logs: Sequence[str | os.PathLike]) -> list[str]:
    """Records shared between (or repeated within) several loss logs, as summary lines."""
    from upsampler.study.losslog import find_copied_records, read_loss_log

    return find_copied_records([read_loss_log(p) for p in logs]).summary_lines()


def latest_samples(run_dir: str | os.PathLike) -> Path | None:
    """The newest ``samples/*.png`` of a run (adversarial after pre-training, by epoch), or None."""
    samples = Path(run_dir) / "samples"
    files = sorted(samples.glob("*.png"), key=lambda p: (p.name.startswith("adversarial"), p.name))
    return files[-1] if files else None


def samples_figure(run_dir: str | os.PathLike, figures_dir: str | os.PathLike, *, name: str,
                   title: str | None = None, notes: Sequence[str | None] = ()) -> Path | None:
    """The latest sample strip of a run as a labelled Bicubic | SR | HR figure (saved and shown).

    Saved as ``<figures_dir>/<name>_samples_latest.png``; ``title`` defaults to ``name``.
    """
    import re

    from PIL import Image

    from upsampler.study.plots import grid_figure

    path = latest_samples(run_dir)
    if path is None:
        print(f"{run_dir}: no samples yet")
        return None
    config = json.loads((Path(run_dir) / "config.json").read_text())
    size = config["data"]["hr_size"]
    strip = np.asarray(Image.open(path).convert("RGB"))
    rows = []
    for r in range(strip.shape[0] // size):
        tiles = [strip[r * size:(r + 1) * size, c * size:(c + 1) * size] for c in range(strip.shape[1] // size)]
        rows.append(list(zip(["Bicubic", "SR", "HR"], tiles)))
    match = re.fullmatch(r"(\w+?)_epoch_(\d+)", path.stem)
    when = f"{match.group(1)} epoch {int(match.group(2))}" if match else path.stem
    fig = grid_figure(rows, title=f"{title or name}: test samples after {when}", note=join_notes(notes))
    return show(fig, Path(figures_dir) / f"{name}_samples_latest.png")
