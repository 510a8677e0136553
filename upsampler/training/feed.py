"""What the training steps eat: the training arrays, the sample batch and one epoch of batches.

:class:`TrainingFeed` wraps :func:`upsampler.data.pipeline.make_train_dataset` (the order, flips and
crops of every batch are pure functions of seed, epoch and step) and, with fixed crops, the HR
VGG feature cache: the content loss's features of every training HR image computed once per
dataset (``train.cache_hr_features``), stored under ``run_dir/cache/`` and fed with the
batches in the same permutation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from upsampler.config import Config
from upsampler.utils.files import replaced_atomically

# The HR VGG feature cache is used in "auto" mode only below this size (bytes, in host memory).
HR_FEATURE_CACHE_LIMIT = 4 * 2**30


def load_training_arrays(config: Config, data_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_lr, train_hr, sample_lr, sample_hr)`` of a processed data folder, sizes checked:
    what a run trains on.

    The training images are restricted to ``data.train_images`` when it is set
    (:func:`upsampler.data.processed.load_train_split`: a subset chosen with ``data.split_seed``,
    the same for every ``train.seed``; only those are read). The sample batch
    (``train.num_samples`` images rendered every few epochs) comes from the test split when
    there is one, else from the start of the (restricted) training split.
    """
    from upsampler.data import processed

    train_lr, train_hr, _ = processed.load_train_split(data_dir, config.data)
    check_sizes(config, train_lr, train_hr, data_dir)
    n = config.train.num_samples
    try:
        sample_lr, sample_hr, _ = processed.load_split(data_dir, "test")
    except (FileNotFoundError, ValueError):
        sample_lr, sample_hr = train_lr, train_hr
    if len(sample_hr) == 0:
        sample_lr, sample_hr = train_lr, train_hr
    return train_lr, train_hr, sample_lr[:n], sample_hr[:n]


def check_sizes(config: Config, lr: np.ndarray, hr: np.ndarray, source) -> None:
    expected = (config.data.lr_size, config.data.hr_size)
    if hr.shape[1] != expected[1] or lr.shape[1] != expected[0]:
        raise ValueError(
            f"{source}: images are {lr.shape[1]}->{hr.shape[1]} px but the config expects {expected[0]}->"
            f"{expected[1]}; preprocess with --hr-size {config.data.hr_size} --scale {config.data.scale} "
            "or change data.hr_size"
        )


class TrainingFeed:
    """Batches for :class:`upsampler.training.steps_tf.SRGANSteps`.

    Args:
        config: the run's config (``data`` and the batch fields of ``train``).
        steps: the steps the batches are for (content loss, strategy, precision, XLA).
        train_lr, train_hr: uint8 training arrays (:func:`load_training_arrays`).
        cache_dir: where the HR feature cache file goes (``run_dir/cache``); None keeps it in memory.
        write_cache: False to only read the cache file (a worker that does not write the run).
    """

    def __init__(self, config: Config, steps, train_lr: np.ndarray, train_hr: np.ndarray,
                 cache_dir: str | Path | None = None, write_cache: bool = True):
        from upsampler.data import pipeline

        self.config, self.steps = config, steps
        self.train_lr, self.train_hr = np.asarray(train_lr), np.asarray(train_hr)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.write_cache = write_cache
        t = config.train
        self.steps_per_epoch = t.steps_per_epoch or pipeline.steps_per_epoch(len(self.train_hr), t.batch_size)
        self.hr_features: np.ndarray | None = None  # (N, h, w, c) float32 once computed
        self.hr_feature_cache_reason = ""
        self.use_hr_feature_cache = self._decide_hr_feature_cache()

    def describe(self) -> str:
        cache = "on" if self.use_hr_feature_cache else "off"
        return f"HR feature cache {cache}" + (f" ({self.hr_feature_cache_reason})" if self.hr_feature_cache_reason else "")

    def _decide_hr_feature_cache(self) -> bool:
        """Whether the HR VGG features are precomputed once (fixed crops: flips and random crops off)."""
        mode = self.config.train.cache_hr_features
        content_loss = self.steps.content_loss
        if getattr(self.steps, "backend", "tensorflow") != "tensorflow":
            if mode == "on":
                raise ValueError("train.cache_hr_features=on is implemented for the TensorFlow step only")
            self.hr_feature_cache_reason = "TensorFlow step only"
            return False
        if content_loss.kind != "vgg":
            self.hr_feature_cache_reason = "pixel content loss"
            return False
        if mode == "off":
            return False
        if self.config.data.flips or self.config.data.train_crop:
            if mode == "on":
                raise ValueError("train.cache_hr_features=on needs fixed crops; data.flips or data.train_crop is on")
            self.hr_feature_cache_reason = "random flips or crops change the HR images every epoch"
            return False
        shape = content_loss.feature_shape(self.config.data.hr_size)
        nbytes = len(self.train_hr) * int(np.prod(shape)) * 4
        if mode == "auto" and nbytes > HR_FEATURE_CACHE_LIMIT:
            self.hr_feature_cache_reason = f"{nbytes / 2**30:.1f} GiB > {HR_FEATURE_CACHE_LIMIT / 2**30:.0f} GiB limit"
            return False
        self.hr_feature_cache_reason = f"{nbytes / 2**20:.0f} MiB"
        return True

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        l = self.config.loss
        key = hashlib.sha256()
        key.update(np.ascontiguousarray(self.train_hr).tobytes())
        key.update(json.dumps([l.content_layer, l.content_network, l.vgg_preprocessing, l.feature_scale,
                               self.config.train.seed, self.steps.precision, list(self.train_hr.shape)]).encode())
        return self.cache_dir / f"hr_features_{key.hexdigest()[:16]}.npy"

    def prepare_hr_features(self, batch_size: int | None = None) -> np.ndarray | None:
        """Compute (or load from the cache folder) the VGG features of every training HR image.

        A pure function of the HR images and the frozen VGG, so a resumed run gets the same
        values (bit for bit when loaded from the cache file). Returns None when the cache is off.
        """
        if not self.use_hr_feature_cache:
            return None
        if self.hr_features is not None:
            return self.hr_features
        import tensorflow as tf

        path = self._cache_path()
        if path is not None and path.exists():
            try:
                features = np.load(path)
                if features.shape[0] == len(self.train_hr):
                    self.hr_features = features
                    return features
            except (OSError, ValueError):
                pass  # a truncated cache file is recomputed
        batch_size = batch_size or max(1, self.config.train.batch_size // self.steps.num_replicas)
        content_loss = self.steps.content_loss
        extract = tf.function(lambda x: content_loss.features(tf.cast(x, tf.float32) / 127.5 - 1.0),
                              jit_compile=self.steps.jit_compile)
        shape = content_loss.feature_shape(self.config.data.hr_size)
        features = np.empty((len(self.train_hr), *shape), np.float32)
        for first in range(0, len(self.train_hr), batch_size):
            chunk = self.train_hr[first: first + batch_size]
            if len(chunk) < batch_size:  # keep one traced shape
                padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
                features[first:] = extract(tf.constant(padded)).numpy()[: len(chunk)]
            else:
                features[first: first + batch_size] = extract(tf.constant(chunk)).numpy()
        if path is not None and self.write_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replaced_atomically(path) as tmp:
                np.save(tmp, features)
        self.hr_features = features
        return features

    def dataset(self, epoch: int, skip_batches: int = 0, *, phase: str = "adversarial"):
        """One epoch of ``(lr, hr)`` batches, or ``(lr, (hr, hr_features))`` with the feature cache.

        The cached features follow the same ``epoch_order`` permutation as the images, so batch
        k carries the features of its own HR images. With several replicas the batches are
        per-replica values: replica r gets rows ``[r b, (r + 1) b)`` of every global batch
        (``b`` = the per-replica batch), on one machine or several (:meth:`replica_batches`).
        """
        if getattr(self.steps, "backend", "tensorflow") != "tensorflow":
            return self.array_batches(epoch, skip_batches)
        import tensorflow as tf

        ds = self.global_batches(epoch, skip_batches, phase=phase)
        if self.steps.num_replicas > 1:
            return self.replica_batches(ds)
        if tf.config.list_logical_devices("GPU"):
            ds = ds.apply(tf.data.experimental.prefetch_to_device(tf.config.list_logical_devices("GPU")[0].name))
        return ds

    def array_batches(self, epoch: int, skip_batches: int = 0):
        """The epoch's uint8 NumPy batches (:func:`upsampler.data.pipeline.train_batches`), repeated to
        ``train.steps_per_epoch`` when that is set: what the JAX step eats."""
        from upsampler.data import pipeline

        d, t = self.config.data, self.config.train

        def one_pass(skip):
            return pipeline.train_batches(self.train_lr, self.train_hr, batch_size=t.batch_size, seed=t.seed,
                                          epoch=epoch, flips=d.flips, crop=d.train_crop, skip_batches=skip)

        if not t.steps_per_epoch:
            yield from one_pass(skip_batches)
            return
        per_pass = pipeline.steps_per_epoch(len(self.train_hr), t.batch_size)
        position = skip_batches
        while position < t.steps_per_epoch:
            for batch in one_pass(position % per_pass):
                yield batch
                position += 1
                if position >= t.steps_per_epoch:
                    return

    def replica_batches(self, ds):
        """The global batches of ``ds`` as per-replica values, one replica's rows each.

        Every process (every worker of a multi-worker run) reads the same global batches and
        gives each of its replicas its own rows (``experimental_distribute_values_from_function``;
        the replicas of worker ``w`` with ``L`` of them are ``w L .. w L + L - 1``). Exact by
        construction, and unlike a distributed dataset it needs no cross-worker exchange per
        batch (a distributed dataset all-reduces "has data" before every batch of a multi-worker
        run). tf.data's autotuning is off here: under MultiWorkerMirroredStrategy its model
        thread held up the end of an epoch's iterator by 2-40 s, one worker at a time.
        """
        import tensorflow as tf

        strategy = self.steps.strategy
        devices = strategy.extended.worker_devices  # this process's replicas, in order
        b = self.config.train.batch_size // self.steps.num_replicas
        options = tf.data.Options()
        options.autotune.enabled = False
        for batch in ds.with_options(options):
            def rows(context, batch=batch):
                replica = context.replica_id_in_sync_group
                part = tf.nest.map_structure(lambda v: v[replica * b: (replica + 1) * b], batch)
                with tf.device(devices[replica % len(devices)]):  # copy only the rows to the device
                    return tf.nest.map_structure(tf.identity, part)

            yield strategy.experimental_distribute_values_from_function(rows)

    def global_batches(self, epoch: int, skip_batches: int = 0, *, phase: str = "adversarial"):
        """The epoch's global batches as a plain ``tf.data.Dataset`` (see :meth:`dataset`)."""
        import tensorflow as tf

        from upsampler.data import pipeline

        d, t = self.config.data, self.config.train
        ds = pipeline.make_train_dataset(
            self.train_lr, self.train_hr, batch_size=t.batch_size, seed=t.seed, epoch=epoch, flips=d.flips,
            crop=d.train_crop, shuffle_buffer=d.shuffle_buffer, skip_batches=skip_batches,
        )
        features = self.prepare_hr_features() if phase == "adversarial" else None
        if features is not None:
            indices, _ = pipeline.epoch_order(len(self.train_hr), seed=t.seed, epoch=epoch, flips=False)
            n_batches = len(indices) // t.batch_size
            b = t.batch_size

            def feature_batches():
                for k in range(skip_batches, n_batches):
                    yield features[indices[k * b:(k + 1) * b]]

            fds = tf.data.Dataset.from_generator(
                feature_batches, output_signature=tf.TensorSpec((b, *features.shape[1:]), tf.float32))
            ds = tf.data.Dataset.zip((ds, fds)).map(lambda pair, f: (pair[0], (pair[1], f)))
            ds = ds.prefetch(tf.data.AUTOTUNE)
        if t.steps_per_epoch:
            ds = ds.repeat().take(t.steps_per_epoch - skip_batches)
        return ds
