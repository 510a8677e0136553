"""Full-reference perceptual distance and pooled features on the pretrained VGG16-HED trunk.

``featdist_hed`` is an *unweighted VGG16-HED feature distance*, not LPIPS: it has the structure of
LPIPS (Zhang et al., 2018) - unit-normalise each layer's channels at every position, squared
difference, spatial mean - on the five post-ReLU stages :data:`FEATURE_LAYERS` of the VGG16-HED
trunk (:mod:`upsampler.archs.vgg`), with uniform weights (channel sum, then the mean over layers)
instead of LPIPS's learned linear heads, whose weights cannot be downloaded here. 0 for identical
images; larger is more different. Every table names it :data:`FEATDIST_LABEL`. Tables written
before the rename call it ``lpips_hed``, labelled "LPIPS-style (VGG16-HED), not LPIPS": same
definition, same values.

The same pass gives the global-average-pooled ``block5_conv3`` features (512-d) used for the
Fréchet distance and KID on HED features (``fd_hed``, ``kid_hed``).

Not independent of training: :data:`SHARED_LAYER_NOTE`. ``block5_conv3`` is one of
``featdist_hed``'s five layers and the layer ``fd_hed`` / ``kid_hed`` pool, and the study's
``vgg16-hed`` profiles (``study-cpu``, ``study-gpu``) train the generator's content loss on it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

FEATURE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
POOLED_LAYER = "block5_conv3"
FEATDIST_LABEL = "VGG16-HED feature distance (unweighted, LPIPS structure; not LPIPS)"
SHARED_LAYER_NOTE = ("block5_conv3 is also the content-loss layer of the vgg16-hed profiles: the models were "
                     "trained to match it")
POOLED_LABEL = "VGG16-HED block5_conv3, global average pool (512-d)"
_EPS = 1e-10


class HedFeatures:
    """Callable: uint8 RGB images (N, H, W, 3) -> list of the :data:`FEATURE_LAYERS` feature maps
    (NumPy float32). Keras on any backend: the network runs through ``predict_on_batch``."""

    def __init__(self, network: str = "vgg16-hed"):
        from upsampler.archs import vgg as backbones

        self.network = network
        self.model = backbones.multi_layer_model(network, FEATURE_LAYERS)
        self._preprocess = backbones.preprocess

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(images, np.uint8).astype(np.float32) / np.float32(127.5) - np.float32(1.0)  # as the trainer
        x = np.asarray(self._preprocess(x, self.network))
        return [np.asarray(f, np.float32) for f in self.model.predict_on_batch(x)]


def feature_distance(features_a, features_b) -> np.ndarray:
    """Per-image unweighted feature distance (``featdist_hed``) from two lists of (N, H, W, C)
    feature maps: per layer, channels unit-normalised at every position, squared difference summed
    over channels, mean over positions; then the mean over layers."""
    total = 0.0
    for fa, fb in zip(features_a, features_b):
        fa, fb = np.asarray(fa, np.float32), np.asarray(fb, np.float32)
        na = fa / (np.linalg.norm(fa, axis=-1, keepdims=True) + np.float32(_EPS))
        nb = fb / (np.linalg.norm(fb, axis=-1, keepdims=True) + np.float32(_EPS))
        total = total + np.square(na - nb).sum(axis=-1, dtype=np.float64).mean(axis=(1, 2))
    return np.asarray(total, np.float64) / len(features_a)


def pooled(features) -> np.ndarray:
    """Global average pool of the last layer (:data:`POOLED_LAYER`): (N, 512) float64."""
    return np.asarray(features[-1], np.float64).mean(axis=(1, 2))


def compare_to_reference(
    reference: np.ndarray,
    candidates: dict[str, np.ndarray],
    extractor: Callable[[np.ndarray], list] | None = None,
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Feature distance (``featdist_hed``) of every candidate image to its reference, and pooled features.

    ``reference``: (N, H, W, 3) uint8; ``candidates``: name -> images of the same shape.
    Streams in batches (the reference's features are computed once per batch), so memory does
    not grow with N. Returns ``(distances, pooled)``: name -> (N,) and name -> (N, 512), with
    ``pooled`` also holding the reference under the key ``"HR"``.
    """
    from tqdm.auto import tqdm

    extractor = extractor or HedFeatures()
    n = len(reference)
    for name, images in candidates.items():
        if images.shape != reference.shape:
            raise ValueError(f"{name}: images {images.shape} do not match the reference {reference.shape}")
    distances = {name: np.empty(n) for name in candidates}
    pools = {name: [] for name in ["HR", *candidates]}
    for first in tqdm(range(0, n, batch_size), desc="VGG16-HED features", disable=not progress, leave=False):
        window = slice(first, first + batch_size)
        ref = extractor(reference[window])
        pools["HR"].append(pooled(ref))
        for name, images in candidates.items():
            feats = extractor(images[window])
            distances[name][window] = feature_distance(ref, feats)
            pools[name].append(pooled(feats))
    return distances, {name: np.concatenate(parts) for name, parts in pools.items()}


def shifted(images: np.ndarray, pixels: int = 1) -> np.ndarray:
    """Images moved right by ``pixels`` (edge column repeated): a tiny perceptual change."""
    out = np.empty_like(images)
    out[:, :, pixels:] = images[:, :, :-pixels]
    out[:, :, :pixels] = images[:, :, :1]
    return out

