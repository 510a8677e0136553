"""Results pooled over training seeds: a model is several runs, and its interval covers them.

A model trained with S seeds gives S generators; each is scored as its own method (``"Model B
#1"``, ...). :func:`pooled_rows` then reports each model as the mean over its runs, with the seed
spread (lowest and highest run) and a hierarchical bootstrap interval: each resample draws S runs
with replacement for every model, then uses the row of test-image indices the per-run intervals
use (identities, then faces within them, where the split has identities), and averages the drawn
runs' means. Differences between models are paired on images as in :mod:`.paired`; the runs of the
two models are drawn independently.

With 2-3 seeds the seed stage has few distinct draws, so the interval reflects seed-to-seed
variation only roughly (a bootstrap over few units understates it); the per-run rows and the seed
spread are reported beside it so that a reader can see how far the runs disagree.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from upsampler.metrics.paired import better_of, percentile_interval

# Section headings of metrics.md (what readable_markdown finds them by).
POOLED_HEADING = "Per model over its training seeds"
RUN_PAIRS_HEADING = "Paired differences (A - B"

POOLED_COLUMNS = ["model", "metric", "value", "ci_low", "ci_high", "seed_min", "seed_max", "n_seeds",
                  "resampling_unit"]
POOLED_PAIRED_COLUMNS = ["metric", "model_a", "model_b", "difference", "ci_low", "ci_high", "better", "n_seeds_a",
                         "n_seeds_b", "resampling_unit"]


def run_label(model: str, k: int) -> str:
    """The method name of a model's k-th run (0-based)."""
    return f"{model} #{k + 1}"


def expand_runs(models: Mapping[str, object]) -> tuple[dict[str, object], dict[str, list[str]]]:
    """``{name: path or [paths]}`` -> (``{method: path}``, ``{model: [methods]}``): a model given
    one generator keeps its name; one given several becomes one method per run."""
    methods: dict[str, object] = {}
    runs: dict[str, list[str]] = {}
    for name, value in models.items():
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items:
            raise ValueError(f"model {name!r} has no generator")
        labels = [name] if len(items) == 1 else [run_label(name, k) for k in range(len(items))]
        for label, item in zip(labels, items):
            if label in methods:
                raise ValueError(f"method name {label!r} is given twice")
            methods[label] = item
        runs[name] = labels
    return methods, runs


def run_draws(runs: Mapping[str, Sequence[str]], n_boot: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per model, (n_boot, S) indices of its runs drawn with replacement; one generator per model
    (``np.random.default_rng(seed)``, models in the given order), independent of the image draws."""
    rng = np.random.default_rng([seed, 1])
    return {model: rng.integers(0, len(labels), size=(n_boot, len(labels))) for model, labels in runs.items()}


def _pooled_boots(per_run_boots: Sequence[np.ndarray], draws: np.ndarray) -> np.ndarray:
    """(n_boot,) the mean over each row's drawn runs of those runs' resampled values."""
    stacked = np.stack([np.asarray(b, np.float64) for b in per_run_boots], axis=1)  # (n_boot, S)
    return np.take_along_axis(stacked, draws, axis=1).mean(axis=1)


def pooled_rows(
    per_image: Mapping[str, Mapping[str, np.ndarray]],
    set_boots: Mapping[str, Mapping[str, tuple[float, np.ndarray]]],
    runs: Mapping[str, Sequence[str]],
    pairs: Sequence[tuple[str, str]],
    indices: np.ndarray,
    draws: Mapping[str, np.ndarray],
    *,
    ci: float = 0.95,
    resampling_unit: str = "image",
    set_draws: Mapping[str, np.ndarray] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Rows of ``pooled.csv`` (per model and metric) and ``pooled_paired.csv`` (per model pair).

    ``per_image``: metric -> method -> (N,) values; ``set_boots``: set metric -> method -> (value
    on the full set, (n_boot,) values on the resamples of ``indices``); ``runs``: model -> its
    methods; ``draws``: :func:`run_draws` for ``indices`` (``set_draws`` for the set metrics' own
    number of resamples, default the first rows of ``draws``)."""
    unit = f"seed, {resampling_unit}"
    boots: dict[str, dict[str, tuple[float, np.ndarray, list[float]]]] = {}
    for metric, by_method in per_image.items():
        for model, labels in runs.items():
            if not all(m in by_method for m in labels):
                continue
            values = [np.asarray(by_method[m], np.float64) for m in labels]
            per_run = [v[indices].mean(axis=1) for v in values]
            boots.setdefault(metric, {})[model] = (float(np.mean([v.mean() for v in values])),
                                                   _pooled_boots(per_run, draws[model]), [float(v.mean()) for v in values])
    for metric, by_method in set_boots.items():
        for model, labels in runs.items():
            if not all(m in by_method for m in labels):
                continue
            n_rows = len(by_method[labels[0]][1])
            d = (set_draws or {}).get(model, draws[model][:n_rows])
            run_values = [float(by_method[m][0]) for m in labels]
            boots.setdefault(metric, {})[model] = (float(np.mean(run_values)),
                                                   _pooled_boots([by_method[m][1] for m in labels], d), run_values)
    rows, paired = [], []
    for metric, by_model in boots.items():
        for model, (value, b, run_values) in by_model.items():
            low, high = percentile_interval(b, ci) if len(b) else (float("nan"), float("nan"))
            rows.append({"model": model, "metric": metric, "value": value, "ci_low": low, "ci_high": high,
                         "seed_min": min(run_values), "seed_max": max(run_values), "n_seeds": len(run_values),
                         "resampling_unit": unit})
        for a, b_ in pairs:
            if a not in by_model or b_ not in by_model:
                continue
            diff = by_model[a][0] - by_model[b_][0]
            low, high = (percentile_interval(by_model[a][1] - by_model[b_][1], ci) if len(by_model[a][1])
                         else (float("nan"), float("nan")))
            paired.append({"metric": metric, "model_a": a, "model_b": b_, "difference": diff, "ci_low": low,
                           "ci_high": high, "better": better_of(metric, a, b_, low, high),
                           "n_seeds_a": len(by_model[a][2]), "n_seeds_b": len(by_model[b_][2]),
                           "resampling_unit": unit})
    return rows, paired


def pooled_markdown(pooled, pooled_paired, cell, title) -> str:
    """The readable pooled tables; ``cell(metric, value, low, high)`` and ``title(metric)`` format
    as in the per-method table."""
    if pooled is None or not len(pooled):
        return ""
    metrics = list(dict.fromkeys(pooled["metric"]))
    unit = pooled["resampling_unit"].iloc[0]
    lines = ["", f"## {POOLED_HEADING} (mean of the runs [95% interval resampling {unit}]; "
                 "runs: lowest - highest run)", ""]
    lines.append("| Model | seeds | " + " | ".join(title(m) for m in metrics) + " |")
    lines.append("|---|---|" + "---|" * len(metrics))
    for model in dict.fromkeys(pooled["model"]):
        rows = pooled[pooled["model"] == model].set_index("metric")
        cells = []
        for m in metrics:
            if m not in rows.index:
                cells.append("n/a")
                continue
            r = rows.loc[m]
            text = cell(m, r["value"], r["ci_low"], r["ci_high"])
            if r["n_seeds"] > 1:
                text += f"; runs {cell(m, r['seed_min'], float('nan'), float('nan'))} - " \
                        f"{cell(m, r['seed_max'], float('nan'), float('nan'))}"
            cells.append(text)
        lines.append(f"| {model} | {int(rows['n_seeds'].iloc[0])} | " + " | ".join(cells) + " |")
    if pooled_paired is not None and len(pooled_paired):
        lines += difference_table(
            f"Paired differences between models over their seeds (A - B [95% interval resampling {unit}])",
            [(r["metric"], f"{r['model_a']} ({r['n_seeds_a']})", f"{r['model_b']} ({r['n_seeds_b']})", r["difference"],
              r["ci_low"], r["ci_high"], r["better"]) for _, r in pooled_paired.iterrows()],
            cell, title, columns=("A (seeds)", "B (seeds)"))
    return "\n".join(lines) + "\n"


def difference_table(heading: str, rows, cell, title, *, columns: tuple[str, str] = ("A", "B")) -> list[str]:
    """Markdown lines of a paired-difference table: ``rows`` of (metric, A, B, difference, low,
    high, favours), formatted with ``cell(metric, value, low, high)`` and ``title(metric)``."""
    lines = ["", f"## {heading}", "", f"| Metric | {columns[0]} | {columns[1]} | A - B [95% CI] | favours |",
             "|---|---|---|---|---|"]
    for metric, a, b, diff, low, high, better in rows:
        lines.append(f"| {title(metric)} | {a} | {b} | {cell(metric, diff, low, high)} | {better} |")
    return lines
