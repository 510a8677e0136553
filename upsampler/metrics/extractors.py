"""Feature extractors for FID and KID, each named and labelled in every result.

Three extractors, chosen by name with :func:`get_extractor`:

``fid-inception``
    The reference FID network: TF-GAN's Inception (TF-Hub ``tfgan/eval/inception/1``, output
    ``pool_3``, 2048-d), the network behind published FID numbers. Loaded from a local
    SavedModel / TF-Hub module folder named by the environment variable
    ``UPSAMPLER_FID_INCEPTION``, else downloaded once from TF-Hub (its compressed module, cached
    under ``$UPSAMPLER_CACHE`` or ``~/.cache/upsampler``; not through ``tensorflow_hub``, whose
    tf-keras dependency installs a second TensorFlow). The default for real runs; if it cannot be loaded, :class:`ExtractorUnavailableError`
    says so and names the alternatives.
``inception-imagenet``
    Keras ``InceptionV3(include_top=False, pooling="avg", weights="imagenet")``, 2048-d. Its
    weights differ from the TF-GAN graph, so values are **not comparable with published FID**.
    Weights come from Keras' cache/download, or from a local ``.h5``/``.weights.h5`` file named
    by ``UPSAMPLER_INCEPTION_IMAGENET_WEIGHTS``.
``inception-untrained``
    The same Keras InceptionV3 with ``weights=None``, its kernels then filled with Glorot-uniform
    values from NumPy's generator with a fixed seed (the same random weights on every machine). An offline fallback for smoke tests only: its numbers are labelled
    "UNTRAINED features (offline fallback): not an FID" wherever they appear.

Resize policy (one policy, applied identically to every image set): uint8 [0, 255] NHWC
images are cast to float32 and resized to ``input_size`` x ``input_size`` (299 for all three;
smaller only in tests) with ``tf.image.resize(method="bilinear", antialias=True)``, without
re-quantisation; then the extractor's own input scaling maps [0, 255] to [-1, 1]
(``x / 127.5 - 1``, both TF-GAN Inception and Keras' ``inception_v3.preprocess_input``).
Images are NHWC throughout; channels are never reshaped (the original study reshaped
(N, 176, 176, 3) to (N, 3, 176, 176), scrambling the pixels).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "EXTRACTORS",
    "DEFAULT_EXTRACTOR",
    "DEFAULT_INPUT_SIZE",
    "FID_INCEPTION_ENV",
    "IMAGENET_WEIGHTS_ENV",
    "FID_INCEPTION_TFHUB",
    "UNTRAINED_LABEL",
    "ExtractorUnavailableError",
    "FeatureExtractor",
    "get_extractor",
    "extractor_info",
    "resize_for_extractor",
]

FID_INCEPTION_ENV = "UPSAMPLER_FID_INCEPTION"
IMAGENET_WEIGHTS_ENV = "UPSAMPLER_INCEPTION_IMAGENET_WEIGHTS"
FID_INCEPTION_TFHUB = "https://tfhub.dev/tensorflow/tfgan/eval/inception/1"
DEFAULT_EXTRACTOR = "fid-inception"
DEFAULT_INPUT_SIZE = 299
UNTRAINED_SEED = 0

UNTRAINED_LABEL = "UNTRAINED features (offline fallback): not an FID"

# name -> (label, comparable_with_published, feature_dim)
EXTRACTORS: dict[str, tuple[str, bool, int]] = {
    "fid-inception": ("TF-GAN FID Inception pool_3 (comparable with published FID)", True, 2048),
    "inception-imagenet": ("Keras InceptionV3 ImageNet, avg pool (not comparable with published FID)", False, 2048),
    "inception-untrained": (UNTRAINED_LABEL, False, 2048),
}

_ALTERNATIVES = (
    "Alternatives: download the TF-GAN Inception module on a machine with internet "
    f"({FID_INCEPTION_TFHUB}?tf-hub-format=compressed, a .tar.gz: unpack it) and set "
    f"{FID_INCEPTION_ENV}=/path/to/that/folder; or choose "
    "--extractor inception-imagenet (Keras ImageNet weights; not comparable with published FID); "
    "or, offline and for smoke tests only, --extractor inception-untrained (random weights: not an FID)."
)


class ExtractorUnavailableError(RuntimeError):
    """The requested feature extractor cannot be loaded here (no weights, no network)."""


@dataclass
class FeatureExtractor:
    """A named image -> feature-vector function.

    Call it on a uint8 NHWC batch (N, H, W, 3), values 0..255; it returns float64 features of
    shape (N, ``feature_dim``). ``label`` is the human-readable name to print beside every
    number computed from these features.
    """

    name: str
    label: str
    comparable_with_published: bool
    feature_dim: int
    input_size: int = DEFAULT_INPUT_SIZE
    # float32 batch (N, S, S, 3) in [-1, 1] -> array (N, ...) ; the network itself
    forward: Callable[[Any], Any] | None = field(default=None, repr=False)

    @property
    def is_untrained(self) -> bool:
        return self.name == "inception-untrained"

    def info(self) -> dict[str, Any]:
        """Name, label, comparability, feature dimension and input size, for result files."""
        return {
            "extractor": self.name,
            "extractor_label": self.label,
            "comparable_with_published": self.comparable_with_published,
            "feature_dim": self.feature_dim,
            "input_size": self.input_size,
        }

    def preprocess(self, images: np.ndarray):
        """uint8 (N, H, W, 3) -> float32 tensor (N, S, S, 3) in [-1, 1] (see module docstring)."""
        return resize_for_extractor(images, self.input_size) / 127.5 - 1.0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.forward is None:
            raise RuntimeError(f"extractor {self.name!r} has no network attached")
        x = self.preprocess(images)
        feats = np.asarray(self.forward(x), dtype=np.float64)
        feats = feats.reshape(feats.shape[0], -1)
        if feats.shape[1] != self.feature_dim:
            raise RuntimeError(f"extractor {self.name!r} returned {feats.shape[1]}-d features, expected {self.feature_dim}")
        return feats


def _check_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be an NHWC batch (N, H, W, 3), got shape {images.shape}")
    return images


def resize_for_extractor(images: np.ndarray, size: int):
    """The one resize policy: uint8 NHWC -> float32 (N, size, size, 3) in [0, 255].

    ``tf.image.resize(method="bilinear", antialias=True)`` on float32 values (no rounding);
    NHWC is preserved. Returns a ``tf.Tensor``.
    """
    import tensorflow as tf

    images = _check_batch(images)
    x = tf.convert_to_tensor(images, dtype=tf.float32)
    if images.shape[1:3] == (size, size):
        return x
    return tf.image.resize(x, (size, size), method="bilinear", antialias=True)


def extractor_info(name: str) -> tuple[str, bool, int]:
    """(label, comparable_with_published, feature_dim) of a known extractor name."""
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; choose one of {sorted(EXTRACTORS)}") from None


_CACHE: dict[tuple[str, int, str], FeatureExtractor] = {}


def get_extractor(name: str = DEFAULT_EXTRACTOR, *, input_size: int | None = None) -> FeatureExtractor:
    """The named extractor, built once per (name, input_size) and cached.

    ``input_size`` (pixels, default 299) exists for fast tests with the untrained network
    (InceptionV3 accepts >= 75); numbers at any other size are not FIDs. The TF-GAN network
    only accepts 299.
    """
    label, comparable, dim = extractor_info(name)
    size = DEFAULT_INPUT_SIZE if input_size is None else int(input_size)
    if size != DEFAULT_INPUT_SIZE:
        if name == "fid-inception":
            raise ValueError("the fid-inception network only takes 299x299 inputs")
        if size < 75:
            raise ValueError(f"InceptionV3 needs inputs of at least 75x75 px, got {size}")
        comparable = False
        if name != "inception-untrained":
            label = f"{label}; input {size}px (test only)"
    key = (name, size, os.environ.get(FID_INCEPTION_ENV, "") if name == "fid-inception" else "")
    if key not in _CACHE:
        if name == "fid-inception":
            forward = _load_fid_inception()
        elif name == "inception-imagenet":
            forward = _build_keras_inception("imagenet", size)
        else:
            forward = _build_keras_inception(None, size)
        _CACHE[key] = FeatureExtractor(name, label, comparable, dim, size, forward)
    return _CACHE[key]


# ---- loaders ---------------------------------------------------------------------------------

def _keras_forward(model) -> Callable[[Any], np.ndarray]:
    def forward(x):
        return np.asarray(model.predict_on_batch(x))

    return forward


def _build_keras_inception(weights: str | None, size: int) -> Callable[[Any], np.ndarray]:
    import keras

    kwargs = dict(include_top=False, pooling="avg", input_shape=(size, size, 3))
    if weights is None:
        model = keras.applications.InceptionV3(weights=None, **kwargs)
        _deterministic_init(model, UNTRAINED_SEED)
        model.trainable = False
        return _keras_forward(model)
    source = os.environ.get(IMAGENET_WEIGHTS_ENV) or "imagenet"
    if source != "imagenet" and not os.path.exists(source):
        raise ExtractorUnavailableError(
            f"inception-imagenet: {IMAGENET_WEIGHTS_ENV}={source} does not exist. {_ALTERNATIVES}")
    try:
        model = keras.applications.InceptionV3(weights=source, **kwargs)
    except Exception as exc:  # download failure, bad file: both mean "not available here"
        raise ExtractorUnavailableError(
            f"inception-imagenet: could not load Keras InceptionV3 ImageNet weights ({type(exc).__name__}: "
            f"{str(exc)[:200]}). Put the notop .h5 in ~/.keras/models or set {IMAGENET_WEIGHTS_ENV}. "
            f"{_ALTERNATIVES}") from exc
    model.trainable = False
    return _keras_forward(model)


def _deterministic_init(model, seed: int) -> None:
    """Overwrite every convolution/dense kernel with Glorot-uniform values from NumPy's PCG64(seed).

    Independent of Keras' and TensorFlow's random state (not touched) and of their RNG
    implementations, so the "untrained" features are the same on every machine and version.
    Other weights keep their deterministic Keras defaults (BatchNorm: beta 0, mean 0, var 1).
    """
    rng = np.random.default_rng(seed)
    for var in model.weights:
        shape = tuple(var.shape)
        if not var.path.endswith("kernel") or len(shape) < 2:
            continue
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        var.assign(rng.uniform(-limit, limit, size=shape).astype(np.float32))


def tfhub_module_folder(url: str, cache: str | os.PathLike | None = None) -> Path:
    """A TF-Hub module as a local SavedModel folder: its compressed form (``url`` +
    ``?tf-hub-format=compressed``, or ``url`` itself when it names a ``.tar.gz``) downloaded once,
    unpacked into ``cache/tfhub/<sha1 of url>`` (default ``$UPSAMPLER_CACHE`` or
    ``~/.cache/upsampler``) and reused. What ``tensorflow_hub.resolve`` does, without its tf-keras."""
    root = Path(cache or os.environ.get("UPSAMPLER_CACHE") or Path.home() / ".cache" / "upsampler")
    folder = root / "tfhub" / hashlib.sha1(url.encode()).hexdigest()
    if (folder / "saved_model.pb").is_file():
        return folder
    part = folder.with_name(folder.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    source = url if url.endswith((".tar.gz", ".tgz")) else f"{url}?tf-hub-format=compressed"
    with urllib.request.urlopen(source, timeout=120) as response, tarfile.open(fileobj=response, mode="r|gz") as tar:
        tar.extractall(part, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    if not (part / "saved_model.pb").is_file():
        raise OSError(f"{source} holds no saved_model.pb")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(part, folder)
    return folder


def _load_fid_inception() -> Callable[[Any], np.ndarray]:
    """TF-GAN's FID Inception: ``pool_3`` (N, 2048) for a float32 (N, 299, 299, 3) batch in [-1, 1]."""
    import tensorflow as tf

    local = os.environ.get(FID_INCEPTION_ENV)
    if local and not os.path.exists(local):
        raise ExtractorUnavailableError(f"fid-inception: {FID_INCEPTION_ENV}={local} does not exist. {_ALTERNATIVES}")
    handle = local or FID_INCEPTION_TFHUB
    if not local:
        try:
            handle = str(tfhub_module_folder(FID_INCEPTION_TFHUB))
        except Exception as exc:  # no network, a refused or broken download
            raise ExtractorUnavailableError(
                f"fid-inception: the reference FID Inception network is not available here: {FID_INCEPTION_ENV} is "
                f"not set and {FID_INCEPTION_TFHUB} could not be downloaded ({type(exc).__name__}: "
                f"{str(exc)[:160]}). {_ALTERNATIVES}") from exc
    try:
        module = tf.saved_model.load(handle)
    except Exception as exc:
        raise ExtractorUnavailableError(
            f"fid-inception: could not load {handle} ({type(exc).__name__}: {str(exc)[:200]}). {_ALTERNATIVES}") from exc
    return _fid_inception_forward(module)


def _fid_inception_forward(module) -> Callable[[Any], np.ndarray]:
    import tensorflow as tf

    if callable(module):
        call = module
    else:  # a TF1-format module loaded by tf.saved_model.load: use its default signature
        sig = module.signatures["default"]
        input_names = list(sig.structured_input_signature[1])
        if len(input_names) != 1:
            raise ExtractorUnavailableError(f"fid-inception: unexpected module signature inputs {input_names}")

        def call(x):
            return sig(**{input_names[0]: x})

    def forward(x):
        out = call(tf.convert_to_tensor(x, tf.float32))
        if isinstance(out, dict):
            if "pool_3" not in out:
                raise ExtractorUnavailableError(f"fid-inception: module outputs {sorted(out)}, no 'pool_3'")
            out = out["pool_3"]
        out = np.asarray(out)
        return out.reshape(out.shape[0], -1)

    return forward
