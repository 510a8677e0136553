"""Feature extractors: labels, clear failures, NHWC handling, and the ``upsampler fid`` CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from upsampler import cli
from upsampler.metrics import UNTRAINED_LABEL, ExtractorUnavailableError, activations, get_extractor
from upsampler.metrics import extractors as ext_mod

SIZE = 75  # test-only input size (InceptionV3's minimum); real runs use 299


@pytest.fixture(scope="module")
def untrained():
    return get_extractor("inception-untrained", input_size=SIZE)


def smooth_images(seed, n=5, size=44):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.normal(size=(n, size, size, 3)), sigma=(0, 3, 3, 0)) * 500 + 128
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def run_cli(argv, monkeypatch):
    mine = {k: v for k, v in cli.COMMANDS.items() if v[0] == "upsampler.metrics.cli"}
    monkeypatch.setattr(cli, "COMMANDS", mine)
    return cli.main(argv)


def save_folder(path, images):
    from PIL import Image

    path.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(path / f"{i:03d}.png")
    return path


def test_untrained_extractor_is_labelled_and_deterministic(untrained):
    assert untrained.label == UNTRAINED_LABEL
    assert untrained.comparable_with_published is False and untrained.feature_dim == 2048
    x = smooth_images(0, n=3)
    feats = activations(x, untrained, batch_size=2)
    assert feats.shape == (3, 2048) and feats.dtype == np.float64 and np.all(np.isfinite(feats))
    assert np.std(feats) > 0
    # a second, independently built network has the same seeded weights; another batch size may
    # change the round-off of the CPU kernels (oneDNN picks its algorithm by shape), nothing more
    atol = 1e-4 * np.abs(feats).max()
    fresh = ext_mod._build_keras_inception(None, SIZE)
    np.testing.assert_allclose(fresh(untrained.preprocess(x)).reshape(3, -1), feats, rtol=1e-5, atol=atol)
    # batching does not change features
    np.testing.assert_allclose(activations(x, untrained, batch_size=3), feats, rtol=1e-5, atol=atol)


def test_channel_scrambling_reshape_changes_features_and_nchw_is_rejected(untrained):
    """The original study reshaped (N, H, W, 3) to (N, 3, H, W): that scrambles pixels."""
    x = smooth_images(1, n=4)
    scrambled = np.ascontiguousarray(x.reshape(4, 3, 44, 44).transpose(0, 2, 3, 1))
    assert scrambled.shape == x.shape and not np.array_equal(scrambled, x)
    f, fs = activations(x, untrained), activations(scrambled, untrained)
    assert np.linalg.norm(f - fs) > 0.05 * np.linalg.norm(f)
    with pytest.raises(ValueError, match="NHWC"):
        untrained(x.reshape(4, 3, 44, 44))
    with pytest.raises(ValueError, match="uint8"):
        untrained(x.astype(np.float32))


def test_preprocessing_keeps_each_pixels_colour(untrained):
    img = np.zeros((1, 44, 44, 3), np.uint8)
    img[:, :, :22] = (255, 0, 0)  # left half red
    img[:, :, 22:] = (0, 0, 255)  # right half blue
    x = np.asarray(untrained.preprocess(img))
    assert x.shape == (1, SIZE, SIZE, 3)
    np.testing.assert_allclose(x[0, SIZE // 2, 3], [1, -1, -1], atol=1e-5)
    np.testing.assert_allclose(x[0, SIZE // 2, SIZE - 4], [-1, -1, 1], atol=1e-5)
    solid = np.broadcast_to(np.array([10, 200, 30], np.uint8), (2, 30, 50, 3)).copy()
    np.testing.assert_allclose(np.asarray(untrained.preprocess(solid)),
                               np.broadcast_to(np.array([10, 200, 30]) / 127.5 - 1, (2, SIZE, SIZE, 3)), atol=1e-5)


def test_fid_inception_unavailable_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(ext_mod.FID_INCEPTION_ENV, str(tmp_path / "missing"))
    with pytest.raises(ExtractorUnavailableError, match="does not exist") as info:
        get_extractor("fid-inception")
    assert "inception-untrained" in str(info.value) and "inception-imagenet" in str(info.value)
    monkeypatch.delenv(ext_mod.FID_INCEPTION_ENV)
    monkeypatch.setenv("UPSAMPLER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ext_mod, "FID_INCEPTION_TFHUB", (tmp_path / "nowhere.tar.gz").as_uri())  # as offline
    with pytest.raises(ExtractorUnavailableError, match="could not be downloaded"):
        get_extractor("fid-inception")


def test_tfhub_module_is_downloaded_once_and_unpacked_safely(tmp_path, monkeypatch):
    """The compressed TF-Hub form (a tar.gz of a SavedModel), here from a file URL: unpacked into the
    cache once, then reused without the URL; an archive without a SavedModel is refused."""
    import tarfile

    module = tmp_path / "module"
    (module / "variables").mkdir(parents=True)
    (module / "saved_model.pb").write_bytes(b"graph")
    (module / "variables" / "variables.index").write_bytes(b"index")
    archive = tmp_path / "inception.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(module.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(module)), recursive=False)
    folder = ext_mod.tfhub_module_folder(archive.as_uri(), tmp_path / "cache")
    assert (folder / "saved_model.pb").read_bytes() == b"graph"
    assert (folder / "variables" / "variables.index").read_bytes() == b"index"
    archive.unlink()  # the cached copy is used from now on
    assert ext_mod.tfhub_module_folder(archive.as_uri(), tmp_path / "cache") == folder
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz") as tar:
        tar.add(module / "variables", arcname="variables")
    with pytest.raises(OSError, match="no saved_model.pb"):
        ext_mod.tfhub_module_folder(empty.as_uri(), tmp_path / "cache")


def test_imagenet_extractor_unavailable_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(ext_mod.IMAGENET_WEIGHTS_ENV, str(tmp_path / "missing.h5"))
    with pytest.raises(ExtractorUnavailableError, match="inception-untrained"):
        get_extractor("inception-imagenet")


def test_extractor_argument_errors():
    with pytest.raises(ValueError, match="unknown extractor"):
        get_extractor("vgg")
    with pytest.raises(ValueError, match="299"):
        get_extractor("fid-inception", input_size=128)
    with pytest.raises(ValueError, match="75"):
        get_extractor("inception-untrained", input_size=32)


def test_fid_inception_loads_a_local_savedmodel(monkeypatch, tmp_path):
    """The real loading path with a stand-in network saved as a SavedModel (TF-GAN's output dict)."""
    import tensorflow as tf

    class FakeInception(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)])
        def __call__(self, images):
            means = tf.reduce_mean(images, axis=[1, 2])  # (N, 3), in [-1, 1]
            pool = tf.tile(means, [1, 683])[:, :2048]
            return {"pool_3": tf.reshape(pool, [-1, 1, 1, 2048]), "logits": means}

    path = tmp_path / "fake_inception"
    tf.saved_model.save(FakeInception(), str(path))
    monkeypatch.setenv(ext_mod.FID_INCEPTION_ENV, str(path))
    monkeypatch.setattr(ext_mod, "_CACHE", {})
    ext = get_extractor("fid-inception")
    assert ext.comparable_with_published and ext.input_size == 299
    img = np.broadcast_to(np.array([255, 0, 127], np.uint8), (2, 20, 30, 3)).copy()
    feats = ext(img)
    assert feats.shape == (2, 2048)
    np.testing.assert_allclose(feats[0, :3], [1.0, -1.0, 127 / 127.5 - 1], atol=1e-5)


def test_fid_cli_untrained_text_json_and_cached_stats(tmp_path, monkeypatch, capsys):
    a = save_folder(tmp_path / "a", smooth_images(2, n=6))
    b = save_folder(tmp_path / "b", smooth_images(3, n=6)[:, :, ::-1])
    common = ["--extractor", "inception-untrained", "--input-size", str(SIZE), "--n-boot", "10",
              "--kid-subsets", "5", "--batch-size", "6"]
    assert run_cli(["fid", str(a), str(b), *common, "--save-stats1", str(tmp_path / "a.npz")], monkeypatch) == 0
    text = capsys.readouterr().out
    assert f"WARNING: {UNTRAINED_LABEL}" in text
    assert "KID:" in text and "N: 6 vs 6 images; feature dim 2048" in text
    assert run_cli(["fid", str(tmp_path / "a.npz"), str(b), *common, "--json"], monkeypatch) == 0
    out = capsys.readouterr().out.strip()
    data = json.loads(out)
    assert data["extractor"] == "inception-untrained" and data["extractor_label"] == UNTRAINED_LABEL
    assert data["comparable_with_published"] is False
    assert (data["n_a"], data["n_b"], data["feature_dim"]) == (6, 6, 2048)
    assert data["fid_low"] <= data["fid"] <= data["fid_high"] and data["kid_std"] is not None
    # statistics from another extractor are refused
    assert run_cli(["fid", str(tmp_path / "a.npz"), str(b), "--extractor", "inception-imagenet"], monkeypatch) == 2
    assert "computed with extractor 'inception-untrained'" in capsys.readouterr().err


def test_fid_cli_default_extractor_unavailable_is_one_line_error(tmp_path, monkeypatch, capsys):
    a = save_folder(tmp_path / "a", smooth_images(4, n=2))
    monkeypatch.delenv(ext_mod.FID_INCEPTION_ENV, raising=False)
    monkeypatch.setenv("UPSAMPLER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ext_mod, "FID_INCEPTION_TFHUB", (tmp_path / "nowhere.tar.gz").as_uri())
    assert run_cli(["fid", str(a), str(a)], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("upsampler fid: error: fid-inception") and err.count("\n") == 1
    assert "--extractor inception-untrained" in err
