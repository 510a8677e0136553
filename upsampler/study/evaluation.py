"""Step 4 of the notebooks: the study's evaluation, with every output labelled.

:func:`evaluate` scores Bicubic and each run's generator (:func:`upsampler.metrics.evaluate.evaluate_study`)
and writes the labelled tables and figures into the study's folders; :func:`evaluation_key` and
:func:`reuse_evaluation` (:data:`EVALUATION_KEY_FILE`) let a rerun show a finished evaluation instead of
recomputing it; :func:`summary_table`, :func:`paired_table`, :func:`psnr_lines` and
:func:`comparison_figure` are the compact views the notebook shows.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from upsampler.study.outputs import (StudyPaths, banner, data_dir_of_run, join_notes, profile_of_run, run_label,
                                     run_notes, show, write_label)
from upsampler.training.rundir import PRETRAINED_SNAPSHOT
from upsampler.utils.hardware import import_tensorflow_quietly, prepare_backend


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
    per_identity: int | None = None,
    name: str = "evaluation",
):
    """Bicubic vs each run's generator on ``test_dir``, with every output labelled.

    ``runs``: display name -> run directory (its ``generator.keras``), or a list of run
    directories: the model trained with several seeds, scored per run and pooled over its runs
    (``tables/<name>_pooled.csv``, ``tables/<name>_pooled_paired.csv``). With
    ``include_pretrained``, a run's ``generator_pretrained.keras`` (the generator after MSE
    pre-training) is evaluated too, as "<name> (MSE pre-trained)". ``per_identity``: score only the
    first K faces of every identity (:func:`~upsampler.metrics.evaluate.evaluate_study`). ``extractor``: an Inception
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
    if prepare_backend() == "tensorflow":
        import_tensorflow_quietly().get_logger().setLevel(logging.ERROR)  # Keras' retracing chatter (one trace per model)
    key = evaluation_key(test_dir, models, faces=faces, extractor=extractor, input_size=input_size, n_boot=n_boot,
                         per_identity=per_identity)
    results = reuse_evaluation(paths.evaluation, key, [*methods])
    if results is None:
        try:
            results = evaluate_study(test_dir, models, paths.evaluation, faces=faces, extractor=extractor,
                                     input_size=input_size, n_boot=n_boot, grid_images=0, save_sr=True,
                                     per_identity=per_identity)
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

    from upsampler.metrics.report import PER_IMAGE_METRICS, SET_METRICS, _cell, metric_title

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

    from upsampler.metrics.report import _cell, metric_title

    return pd.DataFrame([{"metric": metric_title(r["metric"]), "A": r["method_a"], "B": r["method_b"],
                          "A - B [95% CI]": _cell(r["metric"], r["difference"], r["ci_low"], r["ci_high"]),
                          "favours": r["better"]} for _, r in paired.iterrows()])


def readable_markdown(md: str) -> str:
    """``metrics.md`` as a notebook shows it: with several training seeds, without the section of
    every run pair (13 methods make 78 of them; they stay in the file and in ``paired.csv``)."""
    from upsampler.metrics.seeds import POOLED_HEADING, RUN_PAIRS_HEADING

    if f"\n## {POOLED_HEADING}" not in md:
        return md
    head, _, rest = md.partition(f"\n## {RUN_PAIRS_HEADING}")
    if not rest:
        return md
    _, _, tail = rest.partition("\n## ")
    return (head + "\n\n(The paired differences of every pair of runs are in the saved file and in `paired.csv`.)\n"
            + (f"\n## {tail}" if tail else ""))


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
    """LR | Bicubic | <methods...> | HR for ``n`` test images spread over the sorted scored test images
    (from evaluate's saved SR images)."""
    from upsampler.data.images import bicubic_upscale, load_rgb
    from upsampler.study.plots import grid_figure

    test_dir = Path(test_dir)
    scored = set(results.per_image["image"])  # every test image, or the first K per identity (per_identity)
    names = sorted(p.name for p in (test_dir / "hr").glob("*.png") if p.name in scored)
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

