"""A model trained with several seeds: per-run rows, and a pooled row whose interval resamples runs
as well as test units (upsampler.metrics.seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_metrics_grouped import FakeEmbedder, make_grouped_split  # noqa: F401  (fixtures' helpers)

from upsampler.metrics import faces, paired
from upsampler.metrics.evaluate import evaluate_study
from upsampler.metrics.seeds import POOLED_COLUMNS, expand_runs, pooled_rows, run_draws


def test_expand_runs_names_each_run_and_keeps_single_models():
    methods, runs = expand_runs({"A": "a.keras", "B": ["b0.keras", "b1.keras"]})
    assert methods == {"A": "a.keras", "B #1": "b0.keras", "B #2": "b1.keras"}
    assert runs == {"A": ["A"], "B": ["B #1", "B #2"]}
    with pytest.raises(ValueError, match="no generator"):
        expand_runs({"A": []})


def _rows(per_image, runs, n_boot=2000, seed=0, groups=None):
    n = len(next(iter(next(iter(per_image.values())).values())))
    indices = (paired.grouped_bootstrap_indices(groups, n_boot, seed) if groups is not None
               else paired.bootstrap_indices(n, n_boot, seed))
    pairs = paired.default_pairs(list(runs))
    rows, pair_rows = pooled_rows(per_image, {}, runs, pairs, indices, run_draws(runs, n_boot, seed),
                                  resampling_unit="image" if groups is None else "identity")
    return pd.DataFrame(rows, columns=POOLED_COLUMNS).set_index(["model", "metric"]), pd.DataFrame(pair_rows), indices


def test_identical_runs_pool_to_the_single_run_interval():
    """When every run scores the same on every image, drawing runs changes nothing: the pooled
    interval is the per-image bootstrap interval of one run, exactly."""
    x = np.random.default_rng(3).normal(25, 2, 30)
    table, _, indices = _rows({"psnr": {"B #1": x, "B #2": x.copy(), "B #3": x.copy()}}, {"B": ["B #1", "B #2", "B #3"]})
    row = table.loc[("B", "psnr")]
    assert (row["value"], row["ci_low"], row["ci_high"]) == pytest.approx(paired.mean_with_interval(x, indices))
    assert row["seed_min"] == row["seed_max"] == pytest.approx(x.mean()) and row["n_seeds"] == 3


def test_the_seed_stage_alone_gives_the_analytic_interval():
    """Images that all score the same and two runs 2d apart: the pooled mean over two runs drawn
    with replacement is 0, d or 2d with probabilities 1/4, 1/2, 1/4, so the 95% interval is [0, 2d]
    and the seed spread is the two runs."""
    d = 0.7
    table, _, _ = _rows({"psnr": {"B #1": np.full(20, 30.0), "B #2": np.full(20, 30.0 + 2 * d)}}, {"B": ["B #1", "B #2"]})
    row = table.loc[("B", "psnr")]
    assert row["value"] == pytest.approx(30.0 + d)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((30.0, 30.0 + 2 * d))
    assert (row["seed_min"], row["seed_max"]) == pytest.approx((30.0, 30.0 + 2 * d))


def test_pooled_difference_pairs_images_and_draws_runs_independently():
    rng = np.random.default_rng(0)
    base = rng.normal(28, 3, 40)  # image difficulty, shared by every method: cancels in the pairs
    runs = {"Bicubic": ["Bicubic"], "A": ["A #1", "A #2"]}
    per_image = {"psnr": {"Bicubic": base, "A #1": base + 1.0, "A #2": base + 1.2}}
    _, pairs, _ = _rows(per_image, runs, groups=[f"id{i // 4}" for i in range(40)])
    row = pairs.iloc[0]
    assert (row["model_a"], row["model_b"]) == ("A", "Bicubic")
    assert row["difference"] == pytest.approx(1.1)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((1.0, 1.2))  # only the seeds vary
    assert row["better"] == "A" and row["resampling_unit"] == "seed, identity"
    assert (row["n_seeds_a"], row["n_seeds_b"]) == (2, 1)


def test_evaluate_pools_a_model_given_several_runs(tmp_path, monkeypatch):
    from PIL import Image

    from upsampler.metrics import evaluate

    monkeypatch.setattr(faces, "FaceEmbedder", FakeEmbedder)

    def run(model, lr, batch_size=16):  # "model" is a brightness offset: each run differs
        up = np.stack([np.asarray(Image.fromarray(im).resize((im.shape[1] * 4, im.shape[0] * 4), Image.BILINEAR))
                       for im in lr]).astype(np.int16)
        return np.clip(up + model, 0, 255).astype(np.uint8)

    monkeypatch.setattr(evaluate, "run_generator", run)
    test = make_grouped_split(tmp_path / "set")
    r = evaluate_study(test, {"Model A": 0, "Model B": [2, 6, 10]}, tmp_path / "out", perceptual=False,
                       no_reference=False, n_boot=200, grid_images=0)
    assert list(r.table["method"]) == ["Bicubic", "Model A", "Model B #1", "Model B #2", "Model B #3"]
    pooled = r.pooled.set_index(["model", "metric"])
    psnr = r.table.set_index("method")["psnr"]
    row = pooled.loc[("Model B", "psnr")]
    assert row["n_seeds"] == 3 and row["resampling_unit"] == "seed, identity"
    assert row["value"] == pytest.approx(psnr[["Model B #1", "Model B #2", "Model B #3"]].mean())
    assert (row["seed_min"], row["seed_max"]) == pytest.approx((psnr["Model B #3"], psnr["Model B #1"]))
    assert pooled.loc[("Model A", "psnr"), "n_seeds"] == 1
    kid = pooled.loc[("Model B", "kid_face")]
    assert kid["value"] == pytest.approx(r.table.set_index("method").loc[["Model B #1", "Model B #2", "Model B #3"],
                                                                         "kid_face"].mean())
    pair = r.pooled_paired.set_index(["metric", "model_a", "model_b"]).loc[("psnr", "Model B", "Model A")]
    assert pair["difference"] == pytest.approx(row["value"] - psnr["Model A"]) and pair["ci_low"] <= pair["ci_high"]
    assert (tmp_path / "out" / "pooled.csv").is_file() and (tmp_path / "out" / "pooled_paired.csv").is_file()
    text = r.markdown.read_text()
    assert "## Per model over its training seeds" in text and "| Model B | 3 |" in text
    # What a reader is shown: the pairs between models (3 models: 3 pairs per metric, not the 10 run
    # pairs), and the Markdown without its section of run pairs - both still in the files.
    from upsampler.metrics.report import model_pairs
    from upsampler.study.evaluation import readable_markdown

    shown = model_pairs(r.paired, r.pooled_paired)
    assert {"method_a", "method_b"} <= set(shown.columns)
    assert len(shown[shown["metric"] == "psnr"]) == 3 and len(r.paired[r.paired["metric"] == "psnr"]) == 10
    assert model_pairs(r.paired, None) is r.paired
    short = readable_markdown(text)
    assert "## Paired differences (" in text and "## Paired differences (" not in short
    assert "## Per model over its training seeds" in short
    assert "## Paired differences between models" in short and "## Per method" in short
    assert readable_markdown("# one run\n\n## Paired differences (A - B)\n| x |\n").endswith("| x |\n")
