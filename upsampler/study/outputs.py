"""Where a study's outputs go, how they are labelled and how they are shown (for :mod:`.notebook`).

The study's output root has a Drive-friendly layout (:class:`StudyPaths`)::

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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

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
