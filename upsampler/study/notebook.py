"""Helpers behind the notebooks in ``notebooks/`` (so that every step is testable code).

The notebooks are thin: a ``parameters`` cell (papermill), a cell that derives paths from
it, and one call per step into this module or the package. The study's output root has a
Drive-friendly layout (:class:`StudyPaths`)::

    OUT/<study>/data/{coco,celeba}/     processed sets (upsampler preprocess)
    OUT/<study>/runs/{model_a,model_b}/ run directories (upsampler train)
    OUT/<study>/evaluation/             evaluate_study's raw outputs (per-image metrics, SR images)
    OUT/<study>/figures/                every figure, PNG
    OUT/<study>/tables/                 every table, CSV + Markdown
    OUT/<study>/notebooks/              executed notebooks, .ipynb + .html (run_all.sh)

Labels. Whatever is not a real result of the study says so on every output: the *run label*
(:func:`run_label`: the built-in demo data, the demo or smoke profile), the untrained-VGG
warning of a run (:data:`upsampler.config.UNTRAINED_VGG_WARNING`) and the untrained-Inception
label of the metrics (:data:`upsampler.metrics.extractors.UNTRAINED_LABEL`). They are printed
in the notebook (:func:`banner`), drawn in red under every figure and written into every
table (a ``label`` column in CSVs, a warning line in Markdown).

TensorFlow is imported only by the functions that train or evaluate.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from upsampler.utils.hardware import import_tensorflow_quietly  # noqa: F401 - the notebooks call it from here
from upsampler.training.rundir import PRETRAINED_SNAPSHOT

DATASETS = ("coco", "celeba")
MODELS = {"model_a": ("Model A", "coco"), "model_b": ("Model B", "celeba")}
LABEL_FILE = "LABEL.txt"
DATA_DIR_FILE = "data_dir.txt"  # runs made before config.json recorded data_source


# ---- where things go --------------------------------------------------------------------

@dataclass(frozen=True)
class StudyPaths:
    """The folders of one study under an output root (see the module docstring)."""

    output_root: Path
    study: str

    @property
    def root(self) -> Path:
        return Path(self.output_root) / self.study

    def data(self, dataset: str) -> Path:
        return self.root / "data" / dataset

    def run(self, model: str) -> Path:
        return self.root / "runs" / model

    def seed_runs(self, model: str, seeds: int = 1) -> list[Path]:
        """The run directories of ``model`` trained with ``seeds`` seeds (:func:`seed_run_name`)."""
        return [self.run(seed_run_name(model, k)) for k in range(seeds)]

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    def make(self) -> "StudyPaths":
        """Create figures/, tables/ and notebooks/ (never deletes anything)."""
        for folder in (self.figures, self.tables, self.notebooks):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def seed_run_name(model: str, seed: int) -> str:
    """The run of ``model`` with training seed ``seed``: ``model`` itself for seed 0 (a one-seed
    study keeps its names), ``<model>_seed<k>`` for the others."""
    if seed < 0:
        raise ValueError(f"a training seed is >= 0, got {seed}")
    return model if seed == 0 else f"{model}_seed{seed}"


def study_paths(output_root: str | os.PathLike, study: str) -> StudyPaths:
    if not study or "/" in study or study in (".", ".."):
        raise ValueError(f"study must be a plain folder name, got {study!r}")
    return StudyPaths(Path(output_root), study).make()


# ---- labels -----------------------------------------------------------------------------

def is_demo_data(path: str | os.PathLike | None) -> bool:
    """True for the built-in demo data: a ``upsampler demo-data`` folder or a set processed from one."""
    from upsampler.data.demo import is_demo_folder

    return path is not None and Path(path).exists() and is_demo_folder(path)


def run_label(profile: str | None = None, data_dirs: Iterable[str | os.PathLike | None] = ()) -> str | None:
    """The "this is not a study result" label for a profile and its data, or None for real runs."""
    parts = []
    if any(is_demo_data(d) for d in data_dirs):
        parts.append("DEMO: built-in demo data (crops of photos bundled with scikit-image and matplotlib)")
    if profile == "demo":
        parts.append("DEMO profile (small network, a few CPU minutes)")
    elif profile == "smoke":
        parts.append("SMOKE TEST profile (tiny network, a few steps)")
    if not parts:
        return None
    return "; ".join(parts) + ": a demonstration of the pipeline, not a result of the study."


def profile_of_run(run_dir: str | os.PathLike) -> str | None:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("profile")


def data_dir_of_run(run_dir: str | os.PathLike) -> Path | None:
    """The processed data folder a run was trained on (``data_source`` in its config.json;
    ``data_dir.txt`` in runs made before that was recorded)."""
    config = Path(run_dir) / "config.json"
    if config.is_file():
        try:
            path = json.loads(config.read_text()).get("data_source", {}).get("path")
        except (ValueError, AttributeError):
            path = None
        if path:
            return Path(path)
    info = Path(run_dir) / DATA_DIR_FILE
    return Path(info.read_text().strip()) if info.is_file() else None


def run_notes(run_dir: str | os.PathLike) -> list[str]:
    """Labels that apply to a run directory: its run label and its untrained-VGG warning."""
    from upsampler.study.plots import note_for_run

    notes = []
    label = run_label(profile_of_run(run_dir), [data_dir_of_run(run_dir)])
    if label:
        notes.append(label)
    vgg = note_for_run(run_dir)
    if vgg:
        notes.append(vgg)
    return notes


def join_notes(notes: Iterable[str | None]) -> str | None:
    """One note line from several (duplicates dropped), or None."""
    unique: list[str] = []
    for note in notes:
        if note and note not in unique:
            unique.append(note)
    return " | ".join(unique) if unique else None


def banner(notes: Iterable[str | None]) -> None:
    """Print every label loudly (or that there is none)."""
    notes = [n for n in notes if n]
    if not notes:
        print("Real run: no demo, smoke or untrained-feature labels apply.")
        return
    width = 100
    print("#" * width)
    for note in notes:
        print(f"# {note}")
    print("#" * width)


def write_label(folder: str | os.PathLike, notes: Iterable[str | None]) -> Path | None:
    """Write ``LABEL.txt`` (the labels, one per line) into ``folder``; None when there are none."""
    notes = [n for n in notes if n]
    if not notes:
        return None
    path = Path(folder) / LABEL_FILE
    path.write_text("\n".join(notes) + "\n")
    return path


# ---- display ------------------------------------------------------------------------------

def show(fig_or_path: Any, path: str | os.PathLike | None = None) -> Path | None:
    """Save a matplotlib figure to ``path`` (when given) and display the saved PNG.

    Accepts a ``Figure`` or the path of a PNG already written. Displays through IPython when
    running in a kernel, so the executed notebook (and its HTML) embeds the picture; prints the
    path otherwise.
    """
    from upsampler.study.plots import close, save_figure

    if isinstance(fig_or_path, (str, os.PathLike)):
        saved = Path(fig_or_path)
    else:
        if path is None:
            raise ValueError("show(figure) needs the path to save it to")
        saved = save_figure(fig_or_path, path)
        close(fig_or_path)
    try:
        from IPython import get_ipython
        from IPython.display import Image, display

        if get_ipython() is not None:
            display(Image(filename=str(saved), alt=saved.stem.replace("_", " ")))
    except ImportError:  # pragma: no cover - IPython ships with the notebooks extra
        pass
    print(f"figure: {saved}")
    return saved


def show_table(frame: Any, floatfmt: int = 4) -> None:
    """Display a DataFrame in full (rich in a notebook, text elsewhere)."""
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", None,
                           "display.precision", floatfmt, "display.max_rows", 500):
        try:
            from IPython import get_ipython
            from IPython.display import display

            if get_ipython() is not None:
                display(frame)
                return
        except ImportError:  # pragma: no cover
            pass
        print(frame)


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
    from upsampler.data.preprocess import preprocess, read_groups_csv

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
    from upsampler.data.preprocess import load_split
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
    assignments = list(overrides)
    if epochs is not None:
        assignments.append(f"train.epochs={int(epochs)}")
    if pretrain_epochs is not None:
        assignments.append(f"train.pretrain_epochs={int(pretrain_epochs)}")
    if content_network is not None:
        assignments.append(f"loss.content_network={content_network}")
    return config.override(assignments)


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
    from upsampler.study.losslog import detect_saturation, read_loss_log
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


# ---- step 4: evaluation -------------------------------------------------------------------

def study_label(run_dirs: Iterable[str | os.PathLike], data_dirs: Iterable[str | os.PathLike | None] = ()) -> str | None:
    """One run label for several runs (and extra data folders, e.g. the test set's)."""
    run_dirs = [Path(r) for r in run_dirs]
    profiles = sorted({p for p in (profile_of_run(r) for r in run_dirs) if p})
    data = [*data_dirs, *(data_dir_of_run(r) for r in run_dirs)]
    if len(profiles) <= 1:
        return run_label(profiles[0] if profiles else None, data)
    return join_notes(run_label(p, data) for p in profiles)


def evaluate(
    test_dir: str | os.PathLike,
    runs: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]],
    paths: StudyPaths,
    *,
    extractor: str | None = None,
    input_size: int | None = None,
    faces: bool = True,
    n_boot: int = 1000,
    grid_images: int = 6,
    include_pretrained: bool = False,
    name: str = "evaluation",
):
    """Bicubic vs each run's generator on ``test_dir``, with every output labelled.

    ``runs``: display name -> run directory (its ``generator.keras``), or a list of run
    directories: the model trained with several seeds, scored per run and pooled over its runs
    (``tables/<name>_pooled.csv``, ``tables/<name>_pooled_paired.csv``). With
    ``include_pretrained``, a run's ``generator_pretrained.keras`` (the generator after MSE
    pre-training) is evaluated too, as "<name> (MSE pre-trained)". ``extractor``: an Inception
    for FID (None: no FID). Writes ``tables/<name>_metrics.{csv,md}``, ``tables/<name>_paired.csv``
    (+ per-image CSV) and ``figures/<name>_*.png``. Returns the
    :class:`~upsampler.metrics.evaluate.StudyResults`.
    """
    import logging

    from upsampler.config import UNTRAINED_VGG_WARNING
    from upsampler.metrics.evaluate import evaluate_study
    from upsampler.metrics.extractors import ExtractorUnavailableError
    from upsampler.metrics.seeds import expand_runs

    test_dir = Path(test_dir)
    models: dict[str, Path | list[Path]] = {}
    untrained: dict[str, bool] = {}
    every_run: list[Path] = []
    for label, run_dirs in runs.items():
        run_dirs = [Path(r) for r in (run_dirs if isinstance(run_dirs, (list, tuple)) else [run_dirs])]
        every_run += run_dirs
        generators, snapshots = [], []
        for run_dir in run_dirs:
            generator = run_dir / "generator.keras"
            if not generator.is_file():
                raise FileNotFoundError(f"{generator}: no trained generator (run the training notebook first)")
            generators.append(generator)
            if include_pretrained and (run_dir / PRETRAINED_SNAPSHOT).is_file():
                snapshots.append(run_dir / PRETRAINED_SNAPSHOT)
        untrained_vgg = any(UNTRAINED_VGG_WARNING in run_notes(r) for r in run_dirs)
        for method, found in ((label, generators), (f"{label} (MSE pre-trained)", snapshots)):
            if found:
                models[method] = found if len(found) > 1 else found[0]
                untrained[method] = untrained_vgg
    methods, model_of = expand_runs(models)
    vgg_notes = {m: "untrained VGG19 content loss" if untrained[model] else ""
                 for model, labels in model_of.items() for m in labels}
    import_tensorflow_quietly().get_logger().setLevel(logging.ERROR)  # Keras' retracing chatter (one trace per model)
    key = evaluation_key(test_dir, models, faces=faces, extractor=extractor, input_size=input_size, n_boot=n_boot)
    results = reuse_evaluation(paths.evaluation, key, [*methods])
    if results is None:
        try:
            results = evaluate_study(test_dir, models, paths.evaluation, faces=faces, extractor=extractor,
                                     input_size=input_size, n_boot=n_boot, grid_images=0, save_sr=True)
        except ExtractorUnavailableError as exc:
            raise RuntimeError(str(exc)) from exc
        from upsampler.utils.files import write_atomically

        write_atomically(paths.evaluation / EVALUATION_KEY_FILE, json.dumps(key, indent=2, sort_keys=True) + "\n")
    note = join_notes([
        study_label(every_run, [test_dir.parent]),
        UNTRAINED_VGG_WARNING if any(vgg_notes.values()) else None,
    ])
    banner(note.split(" | ") if note else [])
    write_label(paths.evaluation, note.split(" | ") if note else [])

    from upsampler.utils.provenance import provenance

    stamp = provenance()
    table = results.table.copy()
    table.insert(1, "model_path", [str(methods.get(m, "")) for m in table["method"]])
    table["training_note"] = [vgg_notes.get(m, "") for m in table["method"]]
    table["label"] = note or ""
    table["provenance"] = stamp["line"]
    csv_path = paths.tables / f"{name}_metrics.csv"
    table.to_csv(csv_path, index=False, float_format="%.6g")
    paired_path = paths.tables / f"{name}_paired.csv"
    paired = results.paired.copy()
    paired["provenance"] = stamp["line"]
    paired.to_csv(paired_path, index=False, float_format="%.6g")
    shutil.copy2(results.per_image_csv, paths.tables / f"{name}_per_image_metrics.csv")
    for suffix, frame in (("pooled", results.pooled), ("pooled_paired", results.pooled_paired)):
        if frame is not None:
            frame.assign(provenance=stamp["line"]).to_csv(paths.tables / f"{name}_{suffix}.csv", index=False,
                                                          float_format="%.6g")
    md = results.markdown.read_text() + f"\n{stamp['line']}\n"
    if note:
        md = "".join(f"> **{n}**\n>\n" for n in note.split(" | ")) + "\n" + md
    md_path = paths.tables / f"{name}_metrics.md"
    md_path.write_text(md)
    print(f"tables: {csv_path}, {paired_path}, {md_path}")
    if "paired_differences" in results.figures:
        shutil.copy2(results.figures["paired_differences"], paths.figures / f"{name}_paired_differences.png")
    if grid_images > 0:
        show(comparison_figure(test_dir, results, [*methods], n=grid_images, note=note),
             paths.figures / f"{name}_comparison_grid.png")
    return results


EVALUATION_KEY_FILE = "inputs.json"


def evaluation_key(test_dir: Path, models: Mapping[str, Path | Sequence[Path]], **settings: Any) -> dict[str, Any]:
    """What an evaluation depends on: each generator file's SHA-256, the test images', the settings."""
    import hashlib

    from upsampler import __version__

    def digest(paths: Iterable[Path]) -> str:
        h = hashlib.sha256()
        for path in paths:
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        return h.hexdigest()

    images = sorted(p for p in Path(test_dir).rglob("*") if p.is_file())
    def files(p) -> list[Path]:
        return [Path(x) for x in p] if isinstance(p, (list, tuple)) else [Path(p)]

    return {"models": {m: digest(files(p)) for m, p in models.items()}, "test_images": digest(images),
            "settings": {k: str(v) for k, v in settings.items()}, "upsampler": __version__}


def reuse_evaluation(out_dir: Path, key: dict[str, Any], methods: Sequence[str]):
    """The finished evaluation in ``out_dir`` when it was made from exactly ``key``; else None.

    A rerun of the study then shows the same numbers instead of spending the evaluation's time
    again; delete ``out_dir/inputs.json`` to recompute.
    """
    import pandas as pd

    from upsampler.metrics.evaluate import BICUBIC, StudyResults, _slug

    out_dir = Path(out_dir)
    try:
        saved = json.loads((out_dir / EVALUATION_KEY_FILE).read_text())
    except (OSError, ValueError):
        return None
    files = {name: out_dir / name for name in ("metrics.csv", "per_image_metrics.csv", "paired.csv", "metrics.md")}
    sr_dirs = {m: out_dir / "sr" / _slug(m) for m in [BICUBIC, *methods]}
    if saved != key or not all(p.is_file() for p in files.values()) or not all(d.is_dir() for d in sr_dirs.values()):
        return None
    table = pd.read_csv(files["metrics.csv"])
    if sorted(table["method"]) != sorted([BICUBIC, *methods]):
        return None
    figures = {"paired_differences": out_dir / "paired_differences.png"}
    print(f"evaluation: the generators, test images and settings are those of the finished evaluation in {out_dir}; "
          f"showing it (delete {EVALUATION_KEY_FILE} there to recompute)")
    pooled = {name: pd.read_csv(out_dir / f"{name}.csv") if (out_dir / f"{name}.csv").is_file() else None
              for name in ("pooled", "pooled_paired")}
    return StudyResults(table, pd.read_csv(files["per_image_metrics.csv"]), out_dir, files["metrics.csv"],
                        files["per_image_metrics.csv"], files["metrics.md"], paired=pd.read_csv(files["paired.csv"]),
                        paired_csv=files["paired.csv"], pooled=pooled["pooled"], pooled_paired=pooled["pooled_paired"],
                        figures={k: v for k, v in figures.items() if v.is_file()}, sr_dirs=sr_dirs)


def summary_table(table: Any):
    """The metrics table, compact: one formatted column per metric with its interval."""
    import pandas as pd

    from upsampler.metrics.evaluate import PER_IMAGE_METRICS, SET_METRICS, _cell, metric_title

    metrics = [m for m in (*PER_IMAGE_METRICS, *SET_METRICS) if m in table.columns]
    rows = []
    for _, r in table.iterrows():
        row = {"method": r["method"], "N": r["n"]}
        row.update({metric_title(m): _cell(m, r[m], r[f"{m}_low"], r[f"{m}_high"]) for m in metrics})
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(paired: Any):
    """The paired differences, compact: metric, A - B [95% CI], which side the interval favours."""
    import pandas as pd

    from upsampler.metrics.evaluate import _cell, metric_title

    return pd.DataFrame([{"metric": metric_title(r["metric"]), "A": r["method_a"], "B": r["method_b"],
                          "A - B [95% CI]": _cell(r["metric"], r["difference"], r["ci_low"], r["ci_high"]),
                          "favours": r["better"]} for _, r in paired.iterrows()])


def psnr_lines(table: Any) -> list[str]:
    """``method: PSNR xx.xx dB`` per method, rounded to 0.01 dB (deterministic checked output)."""
    return [f"{r['method']}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}" for _, r in table.iterrows()]


def _note_below(fig: Any, note: str) -> None:
    import textwrap

    from upsampler.study.plots import NOTE_COLOR

    width = max(40, int(fig.get_figwidth() * 13))
    fig.supxlabel("\n".join(textwrap.wrap(note, width)), color=NOTE_COLOR, fontsize=9)


def comparison_figure(test_dir: str | os.PathLike, results: Any, methods: Sequence[str], *, n: int = 6,
                      note: str | None = None):
    """LR | Bicubic | <methods...> | HR for ``n`` test images spread over the sorted test set
    (from evaluate's saved SR images)."""
    from upsampler.data.images import bicubic_upscale, load_rgb
    from upsampler.study.plots import grid_figure

    test_dir = Path(test_dir)
    names = sorted(p.name for p in (test_dir / "hr").glob("*.png"))
    if len(names) > n:  # spread over the (sorted) test set rather than its first few names
        names = [names[int(i)] for i in np.linspace(0, len(names) - 1, n).round()]
    rows = []
    for file in names:
        lr = load_rgb(test_dir / "lr" / file)
        hr = load_rgb(test_dir / "hr" / file)
        scale = hr.shape[0] // lr.shape[0]
        row = [(f"LR {Path(file).stem}", lr), ("Bicubic", bicubic_upscale(lr, scale))]
        for method in methods:
            row.append((method, load_rgb(results.sr_dirs[method] / (Path(file).stem + ".png"))))
        row.append(("HR", hr))
        rows.append(row)
    where = "/".join(test_dir.parts[-3:])  # e.g. data/celeba/test: readable, no machine paths
    return grid_figure(rows, title=f"{where}: LR | Bicubic | models | HR", note=note)

