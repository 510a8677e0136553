"""The study's instruments checked against known cases and independent computations:
VGG16-HED feature distance (featdist_hed), dlib identity distance, paired bootstrap, KID on resamples,
and the feature-scale calibration."""

from __future__ import annotations

import numpy as np
import pytest

from upsampler.data.images import bicubic_downscale, bicubic_upscale, center_crop, load_rgb
from upsampler.metrics import paired
from upsampler.metrics.kid import mmd2_unbiased


# ---- paired bootstrap ------------------------------------------------------------------------

def test_paired_difference_matches_a_hand_computed_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 40), rng.normal(0.0, 1.0, 40)
    idx = paired.bootstrap_indices(40, 500, seed=7)
    means = []
    for row in idx:  # by hand: resample image numbers, mean of the paired differences
        means.append(sum(a[i] - b[i] for i in row) / len(row))
    expected_low, expected_high = np.quantile(means, 0.025), np.quantile(means, 0.975)
    diff, low, high = paired.paired_difference(a, b, idx)
    assert diff == pytest.approx(np.mean(a - b))
    assert (low, high) == pytest.approx((expected_low, expected_high))
    # pairing matters: a shared per-image offset cancels, so the interval is far narrower than unpaired
    offset = rng.normal(0, 5.0, 40)
    _, plow, phigh = paired.paired_difference(a + offset, b + offset, idx)
    assert (plow, phigh) == pytest.approx((low, high))
    assert paired.better_of("psnr", "A", "B", low, high) == "A"
    assert paired.better_of("featdist_hed", "A", "B", low, high) == "B"
    assert paired.better_of("psnr", "A", "B", -1.0, 1.0).startswith("neither")


def test_kernel_mmd_equals_kid_on_the_full_set_and_leaves_repeated_images_out():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 8)), rng.normal(0.3, 1.0, size=(30, 8))
    mmd = paired.KernelMMD(x, y)
    assert mmd.value() == pytest.approx(mmd2_unbiased(x, y), rel=1e-12)
    distinct = rng.permutation(30)[:20]
    assert mmd.value(distinct) == pytest.approx(mmd2_unbiased(x[distinct], y[distinct]), rel=1e-12)
    repeated = np.concatenate([distinct, distinct[:5]])  # duplicates add no self-pairs k(x, x)
    kxx = paired._poly_kernel(x, x)[np.ix_(repeated, repeated)]
    kyy = paired._poly_kernel(y, y)[np.ix_(repeated, repeated)]
    kxy = paired._poly_kernel(x, y)[np.ix_(repeated, repeated)]
    keep = repeated[:, None] != repeated[None, :]
    by_hand = (kxx[keep].sum() + kyy[keep].sum()) / keep.sum() - 2 * kxy.mean()
    assert mmd.value(repeated) == pytest.approx(by_hand, rel=1e-12)
    naive = mmd2_unbiased(x[repeated], y[repeated])  # counts the repeated images' k(x, x) as pairs
    assert naive > mmd.value(repeated)


def test_set_metric_pairs_use_the_same_resamples():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(25, 4))
    close, far = ref + rng.normal(0, 0.1, ref.shape), ref + 2.0
    metric = paired.SetMetric("kid_x", ref, {"close": close, "far": far}, "kid")
    idx = paired.bootstrap_indices(25, 50, seed=0)
    per_method, per_pair = paired.set_metric_table(metric, idx, [("close", "far")])
    diff, low, high = per_pair[("close", "far")]
    assert diff == pytest.approx(per_method["close"][0] - per_method["far"][0])
    assert high < 0  # "close" is nearer the reference on every resample
    boots = [metric.value("close", i) - metric.value("far", i) for i in idx]
    assert (low, high) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])))


def test_default_pairs_put_the_later_method_first():
    assert paired.default_pairs(["Bicubic", "Model A", "Model B"]) == [
        ("Model B", "Model A"), ("Model B", "Bicubic"), ("Model A", "Bicubic")]


# ---- VGG16-HED feature distance (featdist_hed) ------------------------------------------------

@pytest.fixture(scope="module")
def hed():
    from upsampler.metrics.perceptual import HedFeatures

    return HedFeatures()


def _benchmark_crops(shared_data, size=128):
    files = sorted((shared_data / "sr-benchmarks").glob("*/*.png"))
    crops = []
    for f in files:
        img = load_rgb(f)
        crops.append(center_crop(img, (min(size, img.shape[0] // 4 * 4), min(size, img.shape[1] // 4 * 4))))
    return files, crops


@pytest.mark.shared_data
def test_feature_distance_ranks_a_one_pixel_shift_closer_than_bicubic(shared_data, hed):
    from upsampler.metrics.perceptual import compare_to_reference, shifted

    files, crops = _benchmark_crops(shared_data)
    assert len(files) == 19
    wins = 0
    for crop in crops:  # one image at a time: sizes differ
        hr = crop[None]
        bicubic = bicubic_upscale(bicubic_downscale(crop, 4), 4)[None]
        distances, _ = compare_to_reference(hr, {"same": hr, "shift": shifted(hr), "bicubic": bicubic}, hed)
        assert distances["same"][0] == pytest.approx(0.0, abs=1e-6)
        assert distances["shift"][0] > 0
        wins += distances["shift"][0] < distances["bicubic"][0]
    assert wins == len(crops)  # all 19 Set5 + Set14 images


def test_feature_distance_is_the_documented_formula(hed):
    """Against a NumPy re-computation: unit-normalised channels, squared difference summed over
    channels, spatial mean, then the mean over the five layers."""
    from upsampler.metrics.perceptual import FEATURE_LAYERS, feature_distance

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    fa, fb = [np.asarray(f, np.float64) for f in hed(a)], [np.asarray(f, np.float64) for f in hed(b)]
    expected = np.zeros(2)
    for x, y in zip(fa, fb):
        nx = x / (np.sqrt((x ** 2).sum(-1, keepdims=True)) + 1e-10)
        ny = y / (np.sqrt((y ** 2).sum(-1, keepdims=True)) + 1e-10)
        expected += ((nx - ny) ** 2).sum(-1).mean(axis=(1, 2))
    assert len(fa) == len(FEATURE_LAYERS) == 5
    np.testing.assert_allclose(feature_distance(hed(a), hed(b)), expected / len(fa), rtol=1e-4)


# ---- identity distance ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faces(shared_data):
    """60 shared CelebA faces (20 identities x 3), centre-cropped to 176 as the study does."""
    import csv

    rows = list(csv.DictReader((shared_data / "meta/faces_celeba_identity.csv").open()))
    chosen = sorted({r["celeba_identity"] for r in rows})[:20]
    rows = [r for r in rows if r["celeba_identity"] in chosen]
    assert len(rows) == 60
    hr = np.stack([center_crop(load_rgb(shared_data / "faces" / r["file"]), 176) for r in rows])
    return hr, [r["celeba_identity"] for r in rows]


@pytest.mark.slow
@pytest.mark.shared_data
def test_identity_distance_known_cases(faces):
    from upsampler.metrics.faces import FaceEmbedder, identity_distance, retrieval_accuracy

    hr, ids = faces
    embedder = FaceEmbedder()
    e_hr = embedder.embed(hr)
    assert np.all(identity_distance(e_hr, embedder.embed(hr)) == 0.0)  # the same image
    bicubic = np.stack([bicubic_upscale(bicubic_downscale(h, 4), 4) for h in hr])
    d = identity_distance(e_hr, embedder.embed(bicubic))
    assert 0.33 < d.mean() < 0.47  # 0.40 measured on the 600 faces
    assert retrieval_accuracy(e_hr, ids) > 0.85  # the embedding sees identity on these crops
    # an independent computation of the distance
    np.testing.assert_allclose(d, np.sqrt(((e_hr - embedder.embed(bicubic)) ** 2).sum(1)))


# ---- feature-scale calibration ----------------------------------------------------------------

@pytest.mark.shared_data
def test_study_feature_scale_is_reproduced(shared_data):
    from upsampler.config import HED_BLOCK5_CONV3_SCALE
    from upsampler.losses.srgan import calibrate_feature_scale

    files = sorted((shared_data / "faces").glob("*.jpg"))[:200:5]  # 40 of the 200 calibration faces
    hr = np.stack([center_crop(load_rgb(f), 96) for f in files])
    result = calibrate_feature_scale("vgg16-hed", "block5_conv3", hr)
    assert result["scale"] == pytest.approx(HED_BLOCK5_CONV3_SCALE, rel=0.15)
