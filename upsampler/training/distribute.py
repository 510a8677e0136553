"""Running the trainer on several devices with ``tf.distribute``.

Design (what :class:`upsampler.training.steps_tf.SRGANSteps` does with a strategy):

* **Global-batch semantics.** ``train.batch_size`` is the *global* batch. Each of the N
  replicas gets ``batch_size / N`` images (consecutive slices of the global batch, in
  replica order) and computes every loss as ``sum(per-example loss) / batch_size``
  (:func:`upsampler.losses.srgan.global_batch_mean`, i.e. ``tf.nn.compute_average_loss``). The
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
* **Mixed precision** (``train.precision``, :mod:`upsampler.training.precision`): ``mixed_float16``
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
``multiworker``
    ``tf.distribute.MultiWorkerMirroredStrategy`` over several processes (one per machine),
    each using all of its local GPUs (or its CPU), described by the ``TF_CONFIG``
    environment variable of every process (:func:`check_tf_config`)::

        TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                    "task": {"type": "worker", "index": 0}}'   # index 1 on host1

    Every machine runs the same ``upsampler train`` command; TensorFlow makes the strategy
    only if nothing has run in the process before it (``upsampler train`` makes it first).

Several machines (``multiworker``), what is the same and what changes:

* **The step is the same:** the replicas are numbered worker by worker (worker ``w`` with
  ``L`` local replicas holds replicas ``w L .. w L + L - 1``), and the global batch, noisy
  labels, synchronized BN and all-reduced gradients work across workers as across local
  devices. Variables start from the chief's initial values (TensorFlow broadcasts them).
* **Input:** every worker builds the same global-batch dataset (the order is a pure function
  of seed, epoch and step) and hands each of its replicas that replica's rows of every global
  batch (``experimental_distribute_values_from_function``, :meth:`upsampler.training.feed.TrainingFeed
  .replica_batches`; also used for ``mirrored``). Preparing the other workers' rows and
  dropping them costs little next to a step, and nothing is exchanged per batch. No tf.data
  auto-sharding, whose file- or element-wise split would not give replica ``r`` rows
  ``[r b, (r + 1) b)``.
* **The run directory** (config.json, loss.csv, train.log, samples, generator exports, the
  HR feature cache, the lock) is written by the chief alone (:func:`is_chief`: the task of
  type ``chief``, else worker 0). Saving a checkpoint is collective, so the other workers
  save too, each into a private temporary folder (``upsampler-worker-<index>-*`` in the
  system's temporary directory) removed straight after. On resume every worker restores
  the chief's newest checkpoint, so the run directory must be on storage that all machines
  see (NFS, a shared disk); when the workers resumed from different points (or resolved
  ``train.precision=auto`` differently), every one of them stops with the same error
  (:func:`check_workers_agree`). The other workers read the chief's HR feature cache when
  it is there and otherwise compute the features in memory. Epoch hooks run on the chief.
* ``tests/test_multiworker.py`` runs two worker processes on 127.0.0.1 (CPU) and checks that
  they train exactly as one device with the same global batch, and that their run directory
  resumes on one device.

Beyond that (a documented path, not exercised by the test suite):

* **Colab TPU:** ``resolver = tf.distribute.cluster_resolver.TPUClusterResolver();
  tf.config.experimental_connect_to_cluster(resolver);
  tf.tpu.experimental.initialize_tpu_system(resolver);
  strategy = tf.distribute.TPUStrategy(resolver)``, with ``mixed_bfloat16``, static batch
  shapes (already the case: ``drop_remainder`` batches) and the dataset fed from memory or
  GCS (TPUs cannot read the local disk of the Colab VM). Pass that strategy as
  ``SRGANTrainer(..., strategy=strategy)`` (:mod:`upsampler.training.trainer`), which hands it to the steps.
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("default", "mirrored", "auto", "multiworker")
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


def make_strategy(name: str = "default"):
    """The ``tf.distribute.Strategy`` named by ``train.strategy`` (see the module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))
    import tensorflow as tf

    if name == "multiworker":  # first: nothing may run in TensorFlow before this strategy exists
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as exc:
            if "program startup" not in str(exc):
                raise
            raise RuntimeError("train.strategy=multiworker: TensorFlow has already run something in this process; "
                               "make the strategy first, in a fresh process (upsampler train does)") from None
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


def check_tf_config(text: str | None) -> dict:
    """``TF_CONFIG`` parsed, or a one-line ValueError saying what is missing or malformed.

    Wanted: ``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``
    (a ``"chief"`` list of one beside the workers is accepted too).
    """
    need = f"train.strategy=multiworker needs TF_CONFIG, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'"
    if not text or not text.strip():
        raise ValueError(f"{need}; it is not set")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{need}; it is not valid JSON ({exc})") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"{need}; it has no \"cluster\" or no \"task\" object")
    bad = [k for k, v in cluster.items() if k not in ("worker", "chief") or not isinstance(v, list) or not v
           or not all(isinstance(a, str) and ":" in a for a in v)]
    if bad or "worker" not in cluster:
        raise ValueError(f"{need}; cluster must hold a \"worker\" list of \"host:port\" strings "
                         f"(and optionally \"chief\"), got {json.dumps(cluster)}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster or not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise ValueError(f"{need}; task {json.dumps(task)} is not a place in the cluster "
                         f"({', '.join(f'{k} 0..{len(v) - 1}' for k, v in cluster.items())})")
    return tf_config


def is_chief(strategy) -> bool:
    """Whether this process writes the run directory: every process but the non-chief workers of
    a multi-worker strategy. The chief is the task of type ``chief``, else worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def task_name(strategy) -> str:
    """``worker-1`` (the task of this process in a multi-worker cluster), or ``""``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return ""
    return f"{resolver.task_type}-{resolver.task_id}"


def check_workers_agree(strategy, values: list[int], what: str, fix: str) -> None:
    """Raise the same RuntimeError on every worker of a multi-worker strategy whose workers hold
    different ``values`` (e.g. the step each resumed from), saying ``what`` they are and how to
    ``fix`` it; nothing elsewhere."""
    if not task_name(strategy):
        return
    import tensorflow as tf

    mine = tf.constant([values], tf.int64)
    gathered = strategy.run(tf.function(lambda: tf.distribute.get_replica_context().all_gather(mine, axis=0)))
    seen = sorted({tuple(row) for row in strategy.experimental_local_results(gathered)[0].numpy().tolist()})
    if len(seen) > 1:
        raise RuntimeError(f"the workers disagree on {what}: {seen}; {fix}")


def num_replicas(strategy) -> int:
    return int(strategy.num_replicas_in_sync)


def is_default(strategy) -> bool:
    """True for TensorFlow's default (no-op) strategy."""
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


def describe(strategy) -> str:
    """``MirroredStrategy x2 (device:CPU:0, device:CPU:1)``, ``MultiWorkerMirroredStrategy x4
    (worker-1: device:GPU:0, device:GPU:1)`` (this process's devices) or ``default (one device)``."""
    if is_default(strategy):
        return "default (one device)"
    devices = getattr(strategy.extended, "worker_devices", ())
    short = ", ".join(d.rsplit("/", 1)[-1] for d in devices)
    name = type(strategy).__name__
    if task_name(strategy):
        name, short = "MultiWorkerMirroredStrategy", f"{task_name(strategy)}: {short}"
    return f"{name} x{num_replicas(strategy)}" + (f" ({short})" if short else "")


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
