"""Running the trainer on several devices with ``tf.distribute``.

Design (what :class:`upsampler.steps.SRGANSteps` does with a strategy):

* **Global-batch semantics.** ``train.batch_size`` is the *global* batch. Each of the N
  replicas gets ``batch_size / N`` images (consecutive slices of the global batch, in
  replica order) and computes every loss as ``sum(per-example loss) / batch_size``
  (:func:`upsampler.losses.global_batch_mean`, i.e. ``tf.nn.compute_average_loss``). The
  optimisers sum the replicas' gradients (an all-reduce), which is then exactly the gradient
  of the mean over the global batch; the logged metrics are the SUM over replicas of those
  partial means, i.e. the global-batch means.
* **Noisy labels** are drawn for the whole global batch from ``(seed, step)`` on every
  replica, and replica ``r`` takes rows ``[r * b, (r + 1) * b)``: the same labels meet the
  same images whatever N is.
* **BatchNormalization** normally uses per-replica batch statistics, which would make N
  replicas differ from one device. With N > 1 the trainer switches every BN layer of G and D
  to ``synchronized=True`` (Keras 3's cross-replica BN: mean and variance all-reduced over
  the global batch), so one step on N replicas equals one step on one device with the same
  global batch (``tests/test_distribute.py`` checks this on two logical CPUs, within 1e-5).
  On one replica the fused single-device BN is used.
* **Mixed precision** (``train.precision``, :mod:`upsampler.precision`): ``mixed_float16``
  with a dynamic ``LossScaleOptimizer``, or ``mixed_bfloat16`` (no loss scaling needed).
  Every replica scales its own partial loss by the same (mirrored) loss scale; a step whose
  gradients are non-finite on *any* replica is skipped on all of them (the trainer makes
  the finiteness check agree across replicas before the optimiser sees the gradients).
* **Checkpoints** hold one copy of every (mirrored) variable, so a run saved on N devices
  resumes on M devices (``train.strategy`` may change between invocations; the global
  batch, and so the maths, stays the same).
* **XLA** (``train.jit_compile``) compiles the whole step on a single replica; with N > 1
  replicas the step runs as a graph without XLA (cross-replica collectives inside an XLA
  cluster are not supported by MirroredStrategy on every platform).

Strategies (``train.strategy`` / ``upsampler train --strategy``):

``default``
    no distribution: one device (the first GPU if there is one, else the CPU).
``mirrored``
    ``tf.distribute.MirroredStrategy`` over all local GPUs (or over all logical CPU devices
    when there is no GPU but several logical CPUs are configured - used by the tests).
``auto``
    ``mirrored`` when more than one GPU is visible, else ``default``.

Beyond one machine (not exercised by the test suite; documented path):

* **Several machines:** ``tf.distribute.MultiWorkerMirroredStrategy()`` with a ``TF_CONFIG``
  environment variable describing the cluster on every worker. The replica step is the same
  (global batch, ``global_batch_mean``, synchronized BN, all-reduced gradients); the input
  pipeline must be sharded per worker (``tf.data.Options().experimental_distribute
  .auto_shard_policy = DATA``, or ``distribute_datasets_from_function`` with
  ``input_context.shard``), and only the chief (``task_id == 0``) should write
  ``loss.csv``/``generator.keras``; every worker must call the checkpoint manager's ``save``
  (non-chief workers into a temporary directory).
* **Colab TPU:** ``resolver = tf.distribute.cluster_resolver.TPUClusterResolver();
  tf.config.experimental_connect_to_cluster(resolver);
  tf.tpu.experimental.initialize_tpu_system(resolver);
  strategy = tf.distribute.TPUStrategy(resolver)``, with ``mixed_bfloat16``, static batch
  shapes (already the case: ``drop_remainder`` batches) and the dataset fed from memory or
  GCS (TPUs cannot read the local disk of the Colab VM). Pass that strategy as
  ``SRGANTrainer(..., strategy=strategy)`` (:mod:`upsampler.train`), which hands it to the steps.
"""

from __future__ import annotations

STRATEGIES = ("default", "mirrored", "auto")


def make_strategy(name: str = "default"):
    """The ``tf.distribute.Strategy`` named by ``train.strategy`` (see the module docstring)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {STRATEGIES}, got {name!r}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default" or (name == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        # Several logical CPU devices (tests): gradients reduced on the first one.
        return tf.distribute.MirroredStrategy(
            [d.name for d in cpus], cross_device_ops=tf.distribute.ReductionToOneDevice(cpus[0].name)
        )
    return tf.distribute.MirroredStrategy()  # one CPU: a 1-replica mirrored strategy


def num_replicas(strategy) -> int:
    return int(strategy.num_replicas_in_sync)


def is_default(strategy) -> bool:
    """True for TensorFlow's default (no-op) strategy."""
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


def describe(strategy) -> str:
    """``MirroredStrategy x2 (/job:localhost/.../CPU:0, ...)`` or ``default (one device)``."""
    if is_default(strategy):
        return "default (one device)"
    devices = getattr(strategy.extended, "worker_devices", ())
    short = ", ".join(d.rsplit("/", 1)[-1] for d in devices)
    return f"{type(strategy).__name__} x{num_replicas(strategy)}" + (f" ({short})" if short else "")


def set_synchronized_batch_norm(model, synchronized: bool) -> int:
    """Switch every BatchNormalization layer of ``model`` to cross-replica statistics.

    Returns the number of layers changed. The flag only affects training-mode calls; weights
    (and so checkpoints) are unchanged.
    """
    import keras

    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(synchronized)
            count += 1
    return count
