"""The study's evaluation: Bicubic vs Model A vs Model B on a test split.

:func:`evaluate_study` reads a processed split folder (``hr/`` and ``lr/`` PNGs with the same
file names, as written by ``upsampler preprocess``), upscales every LR image with each method,
and scores each against the HR images with instruments that are pretrained and work offline:

* per image: PSNR and SSIM on Y (as SR papers), ``featdist_hed`` (unweighted VGG16-HED feature
  distance with the LPIPS structure, not LPIPS, :mod:`.perceptual`; ``lpips_hed`` in tables written
  before the rename), ``identity_distance`` (dlib face embedding, HR vs
  output, :mod:`.faces`), ``identity_top1`` (is the output recognised among the test identities;
  split by identity only) and ``piqe`` (no-reference);
* per set: ``kid_face`` (KID on face embeddings), ``kid_hed`` / ``fd_hed`` (on pooled HED
  features) and, where the reference Inception loads, ``fid`` / ``kid``;
* paired differences between every pair of methods with 95% paired bootstrap intervals
  (:mod:`.paired`): the answer to "is B better than A on these faces?". When the processed set
  records groups (identities) for the test images, every interval resamples identities, then
  faces within them (:func:`.paired.grouped_bootstrap_indices`); otherwise images.

"Bicubic" is Pillow's bicubic upscaling of the LR image, the same resampling that made the
LR images (:func:`upsampler.data.images.bicubic_upscale`).

The readable output (metric labels, notes, ``metrics.md``, figures) is in :mod:`.report`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from upsampler.metrics.paired import PAIRED_COLUMNS
from upsampler.metrics.report import (HED_NOTE, PER_IMAGE_METRICS, SET_METRICS, TABLE_COLUMNS, _cell,
                                      _face_reference_notes, _intervals_note, comparison_grid, metric_title,
                                      metrics_markdown, model_pairs, paired_figure)
from upsampler.metrics.seeds import (POOLED_COLUMNS, POOLED_PAIRED_COLUMNS, expand_runs, pooled_markdown, pooled_rows,
                    run_draws)
from upsampler.metrics.sr import sr_metrics
from upsampler.metrics.srbench import list_images, read_image

__all__ = [
    "StudyResults",
    "evaluate_study",
    "read_split_folder",
    "read_split_groups",
    "run_generator",
    "first_per_group",
    "mean_interval",
]

BICUBIC = "Bicubic"


@dataclass
class StudyResults:
    """What :func:`evaluate_study` computed and wrote.

    ``table``: one row per method (:data:`TABLE_COLUMNS`); ``per_image``: one row per
    (method, image); ``paired``: one row per (metric, pair of methods) (:data:`PAIRED_COLUMNS`).
    """

    table: Any  # pandas.DataFrame
    per_image: Any  # pandas.DataFrame
    out_dir: Path
    metrics_csv: Path
    per_image_csv: Path
    markdown: Path
    paired: Any = None  # pandas.DataFrame
    paired_csv: Path | None = None
    pooled: Any = None  # pandas.DataFrame: per model over its seeds (models given several generators)
    pooled_paired: Any = None  # pandas.DataFrame: model pairs over their seeds
    figures: dict[str, Path] = field(default_factory=dict)
    sr_dirs: dict[str, Path] = field(default_factory=dict)
    extractor: str = ""
    extractor_label: str = ""
    untrained_features: bool = False
    notes: list[str] = field(default_factory=list)




# ---- inputs -------------------------------------------------------------------------------------

def read_split_folder(test_dir: str | Path) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """(file names, HR uint8 (N, H, W, 3), LR uint8 (N, h, w, 3), scale) of a processed split."""
    test_dir = Path(test_dir)
    hr_dir, lr_dir = test_dir / "hr", test_dir / "lr"
    for d in (hr_dir, lr_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such folder (expected a split folder with hr/ and lr/)")
    hr_files = list_images(hr_dir)
    lr_names = {p.name for p in list_images(lr_dir)}
    names = [p.name for p in hr_files]
    missing = [n for n in names if n not in lr_names]
    if missing or len(lr_names) != len(names):
        extra = sorted(lr_names - set(names))
        raise ValueError(f"{test_dir}: hr/ and lr/ hold different files (missing in lr/: {missing[:5]}, "
                         f"only in lr/: {extra[:5]})")
    hr_list = [read_image(hr_dir / n, mode="RGB") for n in names]
    lr_list = [read_image(lr_dir / n, mode="RGB") for n in names]
    for kind, imgs in (("hr", hr_list), ("lr", lr_list)):
        shapes = {im.shape for im in imgs}
        if len(shapes) != 1:
            raise ValueError(f"{test_dir / kind}: images differ in size {sorted(shapes)[:4]}")
    hr, lr = np.stack(hr_list), np.stack(lr_list)
    scale = hr.shape[1] // lr.shape[1]
    if scale < 1 or hr.shape[1] != lr.shape[1] * scale or hr.shape[2] != lr.shape[2] * scale:
        raise ValueError(f"{test_dir}: HR {hr.shape[1:3]} is not an integer multiple of LR {lr.shape[1:3]}")
    return names, hr, lr, scale


def read_split_groups(test_dir: str | Path, names: Sequence[str]) -> list[str] | None:
    """The group (identity) of each image in ``names``, from the processed set's ``manifest.csv``
    beside ``test_dir``; None when there is no manifest or any image has no recorded group."""
    import csv

    from upsampler.data.processed import MANIFEST_FILE

    test_dir = Path(test_dir)
    try:
        with (test_dir.parent / MANIFEST_FILE).open(newline="", encoding="utf-8") as handle:
            found = {f"{r['name']}.png": r.get("group") or "" for r in csv.DictReader(handle)
                     if r.get("split") == test_dir.name}
    except (OSError, KeyError, csv.Error):
        return None
    groups = [found.get(name, "") for name in names]
    return groups if all(groups) else None


def split_description(test_dir: str | Path) -> str:
    """How the processed set holding ``test_dir`` was split, from its ``preprocess.json``."""
    import json

    info = Path(test_dir).parent / "preprocess.json"
    try:
        payload = json.loads(info.read_text())
    except (OSError, ValueError):
        return "split unknown (no preprocess.json)"
    split = payload.get("split")
    if split:
        return split
    return "split by group" if payload.get("parameters", {}).get("groups_sha256") else \
        "split by image (identities may be shared between train and test)"


def run_generator(model: Any, lr: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """SR images uint8 (N, H, W, 3) from a Keras generator mapping [-1, 1] LR to [-1, 1] SR.

    Whole images, ``batch_size`` per call, through :func:`upsampler.inference.tiles.upscale_batch`:
    the compiled call and rounding of ``upsampler upscale`` (whose default tile covers a 44x44
    input), so the pixels scored here are the pixels a user gets, up to float rounding.
    """
    from upsampler.inference.tiles import upscale_batch

    return upscale_batch(model, np.asarray(lr, np.uint8), batch_size=batch_size)


def first_per_group(groups: Sequence[Any], k: int) -> np.ndarray:
    """Indices of the first ``k`` images of every group, in the given (file-name) order."""
    taken: dict[str, int] = {}
    keep = []
    for i, group in enumerate(map(str, groups)):
        if taken.get(group, 0) < k:
            taken[group] = taken.get(group, 0) + 1
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def mean_interval(values: Sequence[float], ci: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean over images (NaN bounds for n < 2)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf(0.5 + ci / 2, v.size - 1)) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "method"


def piqe_scores(images: np.ndarray, progress: bool = False) -> np.ndarray:
    """PIQE of each image (``pypiqe``, a port of MATLAB's ``piqe``; 0 best .. 100 worst)."""
    from pypiqe import piqe
    from tqdm.auto import tqdm

    return np.array([float(piqe(np.ascontiguousarray(im))[0])
                     for im in tqdm(images, desc="PIQE", disable=not progress, leave=False)])


def _optional(what: str, fn):
    """Run ``fn``; on a missing package return (None, note) instead of failing the evaluation."""
    try:
        return fn(), None
    except ImportError as exc:
        return None, f"{what} not computed: {exc}"


# ---- the study ---------------------------------------------------------------------------------

def evaluate_study(
    test_dir: str | Path,
    models: Mapping[str, Any],
    out_dir: str | Path,
    *,
    faces: bool = True,
    extractor: Any = None,
    perceptual: bool = True,
    no_reference: bool = True,
    n_boot: int = 1000,
    n_boot_fd: int = 100,
    seed: int = 0,
    grid_images: int = 4,
    batch_size: int = 16,
    input_size: int | None = None,
    save_sr: bool = False,
    ci: float = 0.95,
    progress: bool = False,
    groups: Sequence[str] | None = None,
    per_identity: int | None = None,
) -> StudyResults:
    """Evaluate Bicubic and each model on ``test_dir`` and write the results into ``out_dir``.

    ``models``: display name -> saved generator path (``.keras``) or a Keras model, or a list of
    them: one per training seed. A model with several runs is scored run by run (``"NAME #k"``)
    and, in ``pooled.csv`` / ``pooled_paired.csv``, over its runs (:mod:`.seeds`: runs, then the
    test units, resampled).
    Per image: PSNR/SSIM (Y), ``featdist_hed`` (``perceptual``), ``identity_distance``
    (``faces``), ``piqe`` (``no_reference``). Per set: ``kid_face`` (``faces``), ``kid_hed``
    and ``fd_hed`` (``perceptual``), and ``fid``/``kid`` only when ``extractor`` names a
    pretrained Inception (``fid-inception``, ``inception-imagenet``). Numbers from untrained
    features never enter the table: ``inception-untrained`` goes to ``untrained_features.csv``,
    labelled. Per-method intervals: 95% bootstrap percentile intervals (for set metrics a
    *bootstrap spread at N*); ``paired.csv``: every pair's paired differences
    (:mod:`upsampler.metrics.paired`). ``n_boot=0``: no intervals (NaN bounds).

    ``groups``: each test image's identity, in file-name order (default: read from the processed
    set's ``manifest.csv``, :func:`read_split_groups`). With at least two identities every
    interval resamples identities, then faces within them, and with ``faces`` the table gains
    ``identity_top1``; without, intervals resample images. ``per_identity``: score only the first
    K faces of every identity (by file name), all identities kept; the notes say how many. Writes ``metrics.csv``,
    ``per_image_metrics.csv``, ``paired.csv``, ``metrics.md`` and figures into ``out_dir``.
    """
    import pandas as pd

    from upsampler.data.images import bicubic_upscale
    from upsampler.metrics import paired as paired_lib

    if n_boot < 0 or n_boot_fd < 0:
        raise ValueError(f"bootstrap resamples must be >= 0, got n_boot={n_boot}, n_boot_fd={n_boot_fd}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, hr, lr, scale = read_split_folder(test_dir)
    n = len(names)
    if groups is None:
        groups = read_split_groups(test_dir, names)
    elif len(groups) != n:
        raise ValueError(f"groups lists {len(groups)} images, the test split holds {n}")
    subset_note = ""
    if per_identity is not None:
        if per_identity < 1:
            raise ValueError(f"per_identity must be >= 1, got {per_identity}")
        if groups is None:
            raise ValueError(f"{test_dir}: per_identity needs the identities of the test images (the processed "
                             "set's manifest.csv records none)")
        keep = first_per_group(groups, per_identity)
        subset_note = (f"Scored: the first {per_identity} faces of each of the {len(set(map(str, groups)))} "
                       f"identities by file name ({len(keep)} of the split's {n} images)")
        names, hr, lr = [names[i] for i in keep], hr[keep], lr[keep]
        groups, n = [groups[i] for i in keep], len(keep)
    if groups is not None and len(set(map(str, groups))) < 2:
        groups = None  # one identity: nothing to resample between, the images are the units

    models, runs = expand_runs(models)
    outputs: dict[str, np.ndarray] = {BICUBIC: bicubic_upscale(lr, scale)}
    for method, model in models.items():
        if method == BICUBIC:
            raise ValueError(f"model name {BICUBIC!r} is reserved for the baseline")
        from upsampler.archs.srgan import load_generator

        net = load_generator(model) if isinstance(model, (str, Path)) else model
        sr = run_generator(net, lr, batch_size=batch_size)
        if sr.shape != hr.shape:
            raise ValueError(f"{method}: generator output {sr.shape[1:]} does not match HR {hr.shape[1:]}")
        outputs[method] = sr
    methods = list(outputs)
    notes: list[str] = []

    per_image: dict[str, dict[str, np.ndarray]] = {"psnr": {}, "ssim": {}}
    for method, sr in outputs.items():
        scores = np.array([sr_metrics(s, h, scale) for s, h in zip(sr, hr)])
        per_image["psnr"][method], per_image["ssim"][method] = scores[:, 0], scores[:, 1]
    set_metrics: list[paired_lib.SetMetric] = []
    if perceptual:
        from upsampler.metrics.perceptual import compare_to_reference

        distances, pooled = compare_to_reference(hr, outputs, batch_size=batch_size, progress=progress)
        per_image["featdist_hed"] = distances
        notes.append(HED_NOTE)
        # KID's cubic kernel expects features of order 1 (Inception's); HED's pooled activations are
        # ~100x larger, so all sets are divided by one constant, the RMS of the HR features.
        rms = float(np.sqrt(np.mean(np.square(pooled["HR"])))) or 1.0
        set_metrics.append(paired_lib.SetMetric("kid_hed", pooled["HR"] / rms, {m: pooled[m] / rms for m in methods}, "kid"))
        set_metrics.append(paired_lib.SetMetric("fd_hed", pooled["HR"], {m: pooled[m] for m in methods}, "fd"))
    face_reference: dict[str, Any] = {}
    if faces:
        from upsampler.metrics.faces import FaceEmbedder, identity_distance

        embedder = FaceEmbedder()
        reference = embedder.embed(hr, progress=progress)
        embeddings = {m: embedder.embed(outputs[m], progress=progress) for m in methods}
        per_image["identity_distance"] = {m: identity_distance(reference, embeddings[m]) for m in methods}
        set_metrics.append(paired_lib.SetMetric("kid_face", reference, embeddings, "kid"))
        if groups is not None:
            face_reference, note = _identity_metrics(per_image, reference, embeddings, groups, seed)
            if note:
                notes.append(note)
    if no_reference:
        scores, note = _optional("PIQE", lambda: {m: piqe_scores(outputs[m], progress) for m in methods})
        if scores is not None:
            per_image["piqe"] = scores
        else:
            notes.append(note)

    untrained_features = False
    extractor_name, extractor_label = "", ""
    if extractor is not None:
        from upsampler.metrics.extractors import get_extractor
        from upsampler.metrics.features import activations

        fe = get_extractor(extractor, input_size=input_size) if isinstance(extractor, str) else extractor
        extractor_name, extractor_label = getattr(fe, "name", str(extractor)), getattr(fe, "label", "")
        hr_feats = activations(hr, fe, batch_size=batch_size, progress=progress)
        feats = {m: activations(outputs[m], fe, batch_size=batch_size, progress=progress) for m in methods}
        if getattr(fe, "is_untrained", False) or input_size not in (None, 299):
            untrained_features = True
            _untrained_table(out_dir, hr_feats, feats, fe, seed)
            notes.append(f"Inception features untrained or resized ({extractor_label}): their 'FID' is not an FID and "
                         "is kept out of this table (untrained_features.csv)")
        else:
            set_metrics.append(paired_lib.SetMetric("fid", hr_feats, feats, "fd"))
            set_metrics.append(paired_lib.SetMetric("kid", hr_feats, feats, "kid"))

    if groups is not None:
        indices = paired_lib.grouped_bootstrap_indices(groups, n_boot, seed)
        unit, n_units = "identity", len(set(map(str, groups)))
    else:
        indices = paired_lib.bootstrap_indices(n, n_boot, seed)
        unit, n_units = "image", n
    pairs = paired_lib.default_pairs(methods)
    fd_indices = indices[:n_boot_fd]
    kid_metrics = [m for m in set_metrics if m.kind == "kid"]
    fd_metrics = [m for m in set_metrics if m.kind == "fd"]
    labels = {"resampling_unit": unit, "n_units": n_units}
    set_boots = {m.name: paired_lib.set_metric_boots(m, indices if m.kind == "kid" else fd_indices) for m in set_metrics}
    image_indices = paired_lib.bootstrap_indices(n, n_boot, seed) if groups is not None else None
    rows_kid, spreads = paired_lib.paired_rows(per_image, kid_metrics, pairs, indices, ci, set_boots=set_boots,
                                               image_indices=image_indices, **labels)
    rows_fd, spreads_fd = paired_lib.paired_rows({}, fd_metrics, pairs, indices, ci, set_indices=fd_indices,
                                                 set_boots=set_boots, **labels)
    spreads.update(spreads_fd)
    paired = pd.DataFrame(rows_kid + rows_fd, columns=PAIRED_COLUMNS)
    if "hr_top1" in face_reference:
        face_reference["hr_top1_interval"] = paired_lib.mean_with_interval(face_reference["hr_top1"], indices, ci)

    split = split_description(test_dir)
    rows = []
    for method in methods:
        row: dict[str, Any] = {"method": method, "n": n}
        for metric in PER_IMAGE_METRICS:
            values = per_image.get(metric, {}).get(method)
            row.update(dict(zip((metric, f"{metric}_low", f"{metric}_high"),
                                paired_lib.mean_with_interval(values, indices, ci) if values is not None
                                else (math.nan,) * 3)))
        for metric in SET_METRICS:
            row.update(dict(zip((metric, f"{metric}_low", f"{metric}_high"), spreads.get(metric, {}).get(method, (math.nan,) * 3))))
        row.update({"split": split, "test_set": "/".join(Path(test_dir).resolve().parts[-3:]), **labels})
        rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    # A metric not computed leaves with its bounds; a metric without intervals (n_boot=0) keeps NaN bounds.
    absent = [m for m in (*PER_IMAGE_METRICS, *SET_METRICS) if table[m].isna().all()]
    table = table.drop(columns=[c for m in absent for c in (m, f"{m}_low", f"{m}_high")])
    long_rows = [{"method": m, "image": name, **{k: float(per_image[k][m][i]) for k in per_image}}
                 for m in methods for i, name in enumerate(names)]
    per_image_frame = pd.DataFrame(long_rows)

    metrics_csv, per_image_csv = out_dir / "metrics.csv", out_dir / "per_image_metrics.csv"
    paired_csv, markdown = out_dir / "paired.csv", out_dir / "metrics.md"
    table.to_csv(metrics_csv, index=False, float_format="%.6g")
    per_image_frame.to_csv(per_image_csv, index=False, float_format="%.6g")
    paired.to_csv(paired_csv, index=False, float_format="%.6g")
    notes = [f"Test set: {table['test_set'][0]} ({n} images, x{scale}: {lr.shape[2]}x{lr.shape[1]} -> "
             f"{hr.shape[2]}x{hr.shape[1]}), {split}." + (f" {subset_note}." if subset_note else "")
             + " Bicubic: Pillow bicubic upscaling of the LR images.",
             _intervals_note(ci, n, n_boot, min(n_boot, n_boot_fd), n_units if groups is not None else None),
             *_face_reference_notes(face_reference), *notes]
    widening = paired_lib.grouping_widening(paired) if groups is not None else None
    if widening is not None:
        notes.append("Resampling identities instead of images widens the paired intervals of the per-image metrics "
                     f"{widening[0]:.2f}x (median; {widening[1]:.2f}-{widening[2]:.2f}x): faces of one person are not "
                     "independent (paired.csv: image_ci_low, image_ci_high)")
    pooled = pooled_paired = None
    if any(len(labels) > 1 for labels in runs.values()):
        all_runs = {BICUBIC: [BICUBIC], **runs}
        rows_pooled, rows_pooled_paired = pooled_rows(
            per_image, set_boots, all_runs, paired_lib.default_pairs(list(all_runs)), indices,
            run_draws(all_runs, len(indices), seed), ci=ci, resampling_unit=unit)
        pooled = pd.DataFrame(rows_pooled, columns=POOLED_COLUMNS)
        pooled_paired = pd.DataFrame(rows_pooled_paired, columns=POOLED_PAIRED_COLUMNS)
        pooled.to_csv(out_dir / "pooled.csv", index=False, float_format="%.6g")
        pooled_paired.to_csv(out_dir / "pooled_paired.csv", index=False, float_format="%.6g")
    markdown.write_text(metrics_markdown(table, paired, notes=notes, grouped=groups is not None)
                        + pooled_markdown(pooled, pooled_paired, _cell, metric_title))

    figures: dict[str, Path] = {}
    if len(paired):
        figures["paired_differences"] = out_dir / "paired_differences.png"
        paired_figure(model_pairs(paired, pooled_paired), figures["paired_differences"])
    sr_dirs: dict[str, Path] = {}
    if save_sr:
        for method in methods:
            sr_dirs[method] = _save_images(out_dir / "sr" / _slug(method), names, outputs[method])
    if grid_images > 0:
        k = min(grid_images, n)
        chosen = [int(i) for i in np.linspace(0, n - 1, k).round()]
        columns = ["LR", *outputs.keys(), "HR"]
        panels = [{"LR": lr[i], **{m: outputs[m][i] for m in outputs}, "HR": hr[i]} for i in chosen]
        figures["comparison_grid"] = out_dir / "comparison_grid.png"
        comparison_grid(panels, columns, figures["comparison_grid"], row_labels=[names[i] for i in chosen])
    return StudyResults(table, per_image_frame, out_dir, metrics_csv, per_image_csv, markdown, paired, paired_csv,
                        pooled, pooled_paired, figures, sr_dirs, extractor_name, extractor_label, untrained_features,
                        notes)


def _identity_metrics(
    per_image: dict[str, dict[str, np.ndarray]],
    reference: np.ndarray,
    embeddings: Mapping[str, np.ndarray],
    groups: Sequence[str],
    seed: int,
) -> tuple[dict[str, Any], str | None]:
    """Add ``identity_top1`` to ``per_image``; return the HR references (HR top-1 per image, KID
    between two halves of the HR faces) or, when some identity has one photo, a note instead."""
    from upsampler.metrics.faces import identity_halves, identity_top1, mean_shift_term, split_half_kid

    ids = np.asarray([str(g) for g in groups])
    _, counts = np.unique(ids, return_counts=True)
    if counts.min() < 2:
        return {}, "identity_top1 not computed: some test identities have a single photo (no other photo to match)"
    per_image["identity_top1"] = {m: identity_top1(e, reference, ids) for m, e in embeddings.items()}
    first = identity_halves(ids, seed)
    # Chance: the nearest other photo drawn at random is of the same person with probability (size - 1) / (n - 1).
    chance = float(np.sum(counts * (counts - 1)) / (len(ids) * (len(ids) - 1)))
    return {"hr_top1": identity_top1(reference, reference, ids), "n_identities": len(counts), "chance": chance,
            "split_kid": split_half_kid(reference, ids, seed),
            "split_shift": mean_shift_term(reference[first], reference[~first])}, None


def _untrained_table(out_dir: Path, hr_feats: np.ndarray, feats: Mapping[str, np.ndarray], fe: Any, seed: int) -> None:
    """'FID'/KID on untrained (or resized) Inception features, labelled on every row, kept apart."""
    import pandas as pd

    from upsampler.metrics.fid import fid_from_features
    from upsampler.metrics.kid import kernel_inception_distance

    rows = []
    for method, f in feats.items():
        kid, kid_std = kernel_inception_distance(f, hr_feats, seed=seed)
        rows.append({"method": method, "fid_untrained": fid_from_features(f, hr_feats), "kid_untrained": kid,
                     "kid_std": kid_std, "n": len(f), "label": f"{getattr(fe, 'label', '')}: NOT an FID"})
    pd.DataFrame(rows).to_csv(out_dir / "untrained_features.csv", index=False, float_format="%.6g")


def _save_images(folder: Path, names: Sequence[str], images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, img in zip(names, images):
        Image.fromarray(img).save(folder / (Path(name).stem + ".png"))
    return folder
