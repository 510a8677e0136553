"""The study's evaluation on a tiny synthetic split, with tiny Keras generators."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from upsampler import cli
from upsampler.metrics import UNTRAINED_LABEL
from upsampler.metrics.evaluate import (
    PAIRED_COLUMNS,
    evaluate_study,
    mean_interval,
)
from upsampler.metrics.report import TABLE_COLUMNS, comparison_grid, paired_figure
from upsampler.metrics.perceptual import FEATDIST_LABEL, SHARED_LAYER_NOTE

SIZE = 75  # test-only extractor input size


def make_split(root, n=6, hr=32, scale=4, seed=0):
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    (root / "hr").mkdir(parents=True)
    (root / "lr").mkdir()
    for i in range(n):
        x = gaussian_filter(rng.normal(size=(hr, hr, 3)), sigma=(2.5, 2.5, 0)) * 600 + 128
        img = Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8))
        img.save(root / "hr" / f"{i:03d}.png")
        img.resize((hr // scale, hr // scale), Image.BICUBIC).save(root / "lr" / f"{i:03d}.png")
    return root


def tiny_generator(interpolation):
    """LR [-1, 1] -> SR [-1, 1]: x4 upsampling then an identity 1x1 convolution."""
    import keras

    model = keras.Sequential([
        keras.Input((None, None, 3)),
        keras.layers.UpSampling2D(4, interpolation=interpolation),
        keras.layers.Conv2D(3, 1, use_bias=False),
    ])
    model.layers[-1].set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)])
    return model


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    split = make_split(root / "test")
    path_b = root / "model_b.keras"
    tiny_generator("nearest").save(path_b)
    results = evaluate_study(split, {"Model A": tiny_generator("bilinear"), "Model B": str(path_b)}, root / "out",
                             faces=False, n_boot=200, n_boot_fd=20, grid_images=2, batch_size=6, save_sr=True)
    return split, path_b, results


def test_evaluate_study_writes_files_and_table(study):
    split, _, r = study
    for path in (r.metrics_csv, r.per_image_csv, r.paired_csv, r.markdown, r.figures["paired_differences"],
                 r.figures["comparison_grid"]):
        assert path.is_file() and path.stat().st_size > 0
    assert list(r.table["method"]) == ["Bicubic", "Model A", "Model B"]
    assert list(r.table.columns) == [c for c in TABLE_COLUMNS if c in r.table.columns]
    for column in ("psnr", "ssim", "featdist_hed", "piqe", "kid_hed", "fd_hed", "split"):
        assert column in r.table.columns, column
    assert "identity_distance" not in r.table.columns and "fid" not in r.table.columns
    assert len(r.per_image) == 18 and set(r.per_image["image"]) == {f"{i:03d}.png" for i in range(6)}
    t = r.table.set_index("method")
    assert (t["n"] == 6).all()
    for metric in ("psnr", "ssim", "featdist_hed", "kid_hed", "fd_hed"):
        assert (t[f"{metric}_low"] <= t[metric] + 1e-12).all() and (t[metric] <= t[f"{metric}_high"] + 1e-12).all()
    # nearest-neighbour upscaling is worse than bicubic on smooth images: scores are really per method
    assert t.loc["Bicubic", "psnr"] > t.loc["Model B", "psnr"] + 1.0
    assert t.loc["Bicubic", "featdist_hed"] < t.loc["Model B", "featdist_hed"]
    # CSVs round-trip the same numbers (6 significant digits)
    csv = pd.read_csv(r.metrics_csv)
    np.testing.assert_allclose(csv["psnr"], r.table["psnr"], rtol=1e-5)
    per_image = pd.read_csv(r.per_image_csv)
    means = per_image.groupby("method", sort=False)["psnr"].mean()
    np.testing.assert_allclose(means.loc[list(t.index)], t["psnr"], rtol=1e-5)
    paired = pd.read_csv(r.paired_csv)
    assert list(paired.columns) == PAIRED_COLUMNS
    assert list(dict.fromkeys(zip(paired["method_a"], paired["method_b"]))) == [
        ("Model B", "Model A"), ("Model B", "Bicubic"), ("Model A", "Bicubic")]
    row = paired[(paired["metric"] == "psnr") & (paired["method_a"] == "Model B") & (paired["method_b"] == "Bicubic")]
    assert row["difference"].iloc[0] == pytest.approx(t.loc["Model B", "psnr"] - t.loc["Bicubic", "psnr"], rel=1e-5)
    assert row["better"].iloc[0] == "Bicubic"


def test_evaluate_markdown_names_each_metric(study):
    text = study[2].markdown.read_text()
    assert "VGG16-HED feature distance (unweighted, LPIPS structure; not LPIPS)" in text and "not an FID" in text
    assert text.count(SHARED_LAYER_NOTE) == 1  # the HED metrics share block5_conv3 with the content loss
    assert "bootstrap spread at N=6, not a confidence interval" in text
    rows = [line for line in text.splitlines() if "| Model B | Model A |" in line]
    assert rows, "the paired table lists B - A"


def test_untrained_inception_never_enters_the_table(tmp_path):
    split = make_split(tmp_path / "test", n=4)
    r = evaluate_study(split, {}, tmp_path / "out", faces=False, perceptual=False, no_reference=False,
                       extractor="inception-untrained", input_size=SIZE, n_boot=20, grid_images=0)
    assert "fid" not in r.table.columns and r.untrained_features
    side = pd.read_csv(tmp_path / "out/untrained_features.csv")
    assert side["label"].str.contains("NOT an FID").all() and UNTRAINED_LABEL in side["label"][0]
    assert "untrained_features.csv" in r.markdown.read_text()


def test_bicubic_is_a_real_pillow_bicubic_upscale(study):
    from PIL import Image

    split, _, r = study
    lr = Image.open(split / "lr" / "000.png")
    expected = np.asarray(lr.resize((32, 32), Image.BICUBIC))
    saved = np.asarray(Image.open(r.sr_dirs["Bicubic"] / "000.png"))
    np.testing.assert_array_equal(saved, expected)
    assert set(r.sr_dirs) == {"Bicubic", "Model A", "Model B"}


def test_figures_have_clean_signatures(study):
    r = study[2]
    fig = paired_figure(r.paired)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == r.paired["metric"].nunique() and FEATDIST_LABEL in titles
    lr = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    hr = np.zeros((16, 16, 3), np.uint8)
    grid = comparison_grid([{"LR": lr, "Bicubic": hr, "HR": hr}] * 2, ["LR", "Bicubic", "HR"])
    assert len(grid.axes) == 6
    assert [ax.get_title().splitlines()[0] for ax in grid.axes[:3]] == ["LR", "Bicubic", "HR"]
    shown = grid.axes[0].images[0]
    assert shown.get_interpolation() == "nearest"  # the LR panel is blocky, never smoothed
    np.testing.assert_array_equal(shown.get_array(), lr)
    with pytest.raises(ValueError, match="no image"):
        comparison_grid([{"LR": lr}], ["LR", "HR"])


def test_mean_interval():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 4.302653 / np.sqrt(3), rel=1e-5) and high > mean
    assert np.isnan(mean_interval([1.0])[1])


def test_evaluate_cli_json(study, tmp_path, monkeypatch, capsys):
    split, path_b, _ = study
    mine = {k: v for k, v in cli.COMMANDS.items() if v[0] == "upsampler.metrics.cli"}
    monkeypatch.setattr(cli, "COMMANDS", mine)
    out = tmp_path / "cli_out"
    code = cli.main(["evaluate", str(split), "--model", f"Model B={path_b}", "--out", str(out), "--no-faces",
                     "--no-perceptual", "--n-boot", "20", "--grid-images", "1", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [row["method"] for row in data["table"]] == ["Bicubic", "Model B"]
    assert {row["metric"] for row in data["paired"]} == {"psnr", "ssim", "piqe"}
    assert (out / "metrics.md").is_file() and (out / "comparison_grid.png").is_file() and (out / "paired.csv").is_file()
    assert cli.main(["evaluate", str(split), "--model", "X=missing.keras", "--out", str(out)]) == 2
    assert "missing.keras" in capsys.readouterr().err


def test_evaluate_rejects_mismatched_split(tmp_path):
    split = make_split(tmp_path / "bad", n=2)
    (split / "lr" / "001.png").unlink()
    with pytest.raises(ValueError, match="different files"):
        evaluate_study(split, {}, tmp_path / "out", faces=False)
    with pytest.raises(FileNotFoundError):
        evaluate_study(tmp_path / "nowhere", {}, tmp_path / "out", faces=False)
