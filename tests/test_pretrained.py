"""The generators shipped inside the package: they load, upscale from the command line, ship in a
plain (non-editable) install, and reproduce the committed study tables."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from upsampler import pretrained

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "study-cpu"
GPU_DOCS = REPO / "docs" / "study-gpu"
SHIPPED_GPU = ("model_a", "model_b", "model_a_mse", "model_b_mse")  # the GPU study's (seed 1)
SHIPPED_CPU = ("model_a_cpu", "model_b_cpu", "model_a_mse_cpu", "model_b_mse_cpu")  # the CPU-scale study's
SHIPPED = SHIPPED_GPU + SHIPPED_CPU


def test_every_shipped_generator_has_a_small_file_and_a_model_card():
    assert set(SHIPPED) <= set(pretrained.names())
    for name in SHIPPED:
        path = pretrained.path_of(name)
        assert path.stat().st_size < 10 * 2**20, name
        card = pretrained.card_of(name)
        for field in ("training data", "held out", "content network", "MSE pre-training", "machine",
                      "compared with the original"):
            assert field in card, (name, field)
    with pytest.raises(FileNotFoundError, match="no shipped generator named 'model_z'"):
        pretrained.path_of("model_z")


@pytest.mark.parametrize("profile, shipped", [("study-cpu", SHIPPED_CPU), ("study-gpu", SHIPPED_GPU)])
def test_each_study_profile_builds_the_generators_it_shipped(profile, shipped):
    """A rerun of the study trains the networks that are shipped (biases in front of BN included)."""
    from upsampler import load_generator
    from upsampler.config import get_profile
    from upsampler.archs.srgan import build_models_from_config, generator_settings

    built, _ = build_models_from_config(get_profile(profile))
    for name in shipped:
        shipped = load_generator(name)
        assert generator_settings(shipped) == generator_settings(built), name
        assert [w.shape for w in shipped.weights if "shuffle" not in w.path] == \
            [w.shape for w in built.weights], name


def test_shipped_generators_load_by_name_and_upscale_x4():
    from upsampler import load_generator, upscale_image

    generator = load_generator("model_b")
    lr = np.random.default_rng(0).integers(0, 256, (44, 44, 3), dtype=np.uint8)
    sr = upscale_image(generator, lr, scale=4)
    assert sr.shape == (176, 176, 3) and sr.dtype == np.uint8


@pytest.mark.slow
@pytest.mark.shared_data
def test_upscale_cli_with_a_shipped_model(shared_data, tmp_path):
    face = sorted((shared_data / "faces").glob("*.jpg"))[0]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "upsampler.cli", "upscale", str(face), "--model", "model_b",
                             "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = list(tmp_path.glob("*.png"))
    assert len(outputs) == 1
    from PIL import Image

    assert Image.open(outputs[0]).size == (4 * 178, 4 * 218)


def test_a_plain_wheel_carries_the_generators_and_cards(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(tmp_path.glob("upsampler-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SHIPPED:
        assert f"upsampler/pretrained/{name}.keras" in names and f"upsampler/pretrained/{name}.md" in names


@pytest.mark.shared_data
@pytest.mark.parametrize("docs, models", [
    (DOCS, {"Model A #1": "model_a_cpu", "Model B (MSE pre-trained) #1": "model_b_mse_cpu"}),  # seed 0's runs
    (GPU_DOCS, {"Model B, SRGAN": "model_b", "Model A, MSE #2": "model_a_mse"}),
], ids=["study-cpu", "study-gpu"])
@pytest.mark.slow
def test_committed_per_image_metrics_are_reproduced_on_a_subset(shared_data, tmp_path, docs, models):
    """Rebuild 8 held-out faces from their sources exactly as `preprocess` did, evaluate the shipped
    generators, and compare every per-image number with the committed table."""
    import pandas as pd

    from upsampler.data.images import bicubic_downscale, center_crop, load_rgb, save_png
    from upsampler.metrics.evaluate import evaluate_study

    committed = pd.read_csv(docs / "evaluation_per_image_metrics.csv")
    scored = set(committed["image"])  # every test face, or the first K of each identity (--per-identity)
    with (DOCS / "test_split.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if f"{r['name']}.png" in scored]
    rows = rows[::max(1, len(rows) // 8)][:8]
    assert len(rows) == 8
    split = tmp_path / "test"
    for row in rows:
        hr = center_crop(load_rgb(shared_data / "faces_2600" / row["source"]), 176)
        save_png(hr, split / "hr" / f"{row['name']}.png")
        save_png(bicubic_downscale(hr, 4), split / "lr" / f"{row['name']}.png")
    result = evaluate_study(split, {m: pretrained.path_of(n) for m, n in models.items()}, tmp_path / "out",
                            n_boot=20, grid_images=0, no_reference=docs == DOCS)
    committed = committed[committed["method"].isin(["Bicubic", *models])]
    mine = result.per_image.copy()
    merged = mine.merge(committed, on=["method", "image"], suffixes=("", "_committed"))
    assert len(merged) == 3 * len(rows)
    # The SR images are 8-bit: CPU kernels with another round-off order (oneDNN's or Eigen's, AVX2 or
    # AVX-512) move a few pixels by one level. PSNR, SSIM, the VGG16-HED feature distance and PIQE barely
    # notice; dlib's face embedding moves by up to ~6e-5 (measured), so its bound is 2e-4 - still
    # 100x below the smallest difference between two methods on one face.
    atol = {"identity_distance": 2e-4}
    for metric in [m for m in ("psnr", "ssim", "featdist_hed", "identity_distance", "piqe") if m in committed]:
        np.testing.assert_allclose(merged[metric], merged[f"{metric}_committed"], rtol=2e-5,
                                   atol=atol.get(metric, 2e-6), err_msg=metric)


@pytest.fixture(scope="module")
def face_split(shared_data, tmp_path_factory) -> Path:
    """faces_2600 split by identity as the studies split it (`upsampler preprocess` defaults)."""
    out = tmp_path_factory.mktemp("faces") / "faces_2600"
    result = subprocess.run([sys.executable, "-m", "upsampler.cli", "preprocess", str(shared_data / "faces_2600"),
                             "--groups", str(shared_data / "meta" / "faces_2600_celeba_identity.csv"),
                             "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def bn_check_inputs(face_split):
    """(training LR crops in [-1, 1], LR and HR of one test face per test identity, scale), read once."""
    import itertools

    from upsampler.data import pipeline
    from upsampler.data.images import to_float
    from upsampler.metrics.evaluate import first_per_group, read_split_folder, read_split_groups

    _, train_hr, train_lr, _ = read_split_folder(face_split / "train")
    batches = pipeline.train_batches(train_lr, train_hr, batch_size=16, seed=12345, epoch=0, flips=True, crop=96)
    crops = [to_float(lr) for lr, _ in itertools.islice(batches, 64)]
    names, hr, lr, scale = read_split_folder(face_split / "test")
    probes = first_per_group(read_split_groups(face_split / "test", names), 1)
    assert len(probes) == 40
    return crops, lr[probes], hr[probes], scale


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.parametrize("name", ["model_b_cpu", "model_b_mse_cpu", "model_b_mse", "model_b"])
def test_shipped_batchnorm_statistics_are_a_population_estimate(bn_check_inputs, name):
    """The BatchNorm statistics a face generator ships with are what a fresh estimate over its
    training crops gives (other crops than the export's: 64 batches of 16 random 96-px crops with
    flips of the training faces): on one test face of each of the 40 test identities, the PSNR of
    the shipped model and of the re-estimated one agree within 0.1 dB. Stale moving averages (the
    defect this guards against) cost the CPU-scale generators 6-7 dB. 1,024 crops, because the
    adversarial-stage ``model_b`` is sensitive to its statistics: two estimates over 256 different
    crops differ by 0.2 dB on it."""
    import keras

    from upsampler.archs.srgan import load_generator
    from upsampler.metrics.evaluate import run_generator
    from upsampler.metrics.sr import sr_metrics
    from upsampler.training.bn import recompute_batchnorm_statistics

    crops, lr, hr, scale = bn_check_inputs
    shipped = load_generator(pretrained.path_of(name))
    fresh = keras.models.clone_model(shipped)
    fresh.set_weights(shipped.get_weights())
    report = recompute_batchnorm_statistics(fresh, crops)
    assert report["layers"] > 10 and report["images"] == 1024

    def psnr(model) -> float:
        sr = run_generator(model, lr)
        return float(np.mean([sr_metrics(s, h, scale)[0] for s, h in zip(sr, hr)]))

    shipped_psnr, fresh_psnr = psnr(shipped), psnr(fresh)
    assert abs(shipped_psnr - fresh_psnr) < 0.1, (name, shipped_psnr, fresh_psnr, report)
